"""The contrastive-divergence statistic of an RBM and its fused SGD update (ppgen.models.energy.cd_update): the
update equals ``.grad`` + torch.optim.SGD (momentum, weight decay, unequal numbers of data and chain rows),
refuses the optimizers it does not reproduce, lands within a rounding-error bound of the update in
float64 whatever the BLAS, and reuses its work buffers only where asked and only for the same shapes."""

from __future__ import annotations

import pytest
import torch

from ppgen.models.energy.cd_update import cd_gradient, cd_work, sgd_update
from ppgen.models.energy.rbm_core import RBMCore

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("gaussian", [False, True])
def test_fused_sgd_update_equals_torch_sgd(gaussian: bool) -> None:
    """The in-place CD update gives the numbers of .grad + torch.optim.SGD (momentum, weight decay
    prior, unequal numbers of data and chain rows), with momentum buffers where torch keeps them."""
    torch.manual_seed(0)
    a = RBMCore(6, 4, weight_std=0.5, gaussian=gaussian, weight_decay=0.01)
    b = RBMCore(6, 4, gaussian=gaussian, weight_decay=0.01)
    b.load_state_dict(a.state_dict())
    opt_a = torch.optim.SGD(a.parameters(), lr=0.1, momentum=0.0)
    opt_b = torch.optim.SGD(b.parameters(), lr=0.1, momentum=0.0)
    for step in range(4):
        for group in (*opt_a.param_groups, *opt_b.param_groups):
            group["momentum"] = 0.0 if step < 2 else 0.9
        v = torch.rand(5, 6) if gaussian else torch.bernoulli(torch.full((5, 6), 0.4))
        pos = a.positive_phase(v)
        neg, _ = a.negative_phase({"h": torch.bernoulli(torch.full((3, 4), 0.5))}, 1)
        assert sgd_update(a, pos, neg, opt_a)
        b.set_gradients(pos, neg)
        opt_b.step()
        for pa, pb in zip(a.parameters(), b.parameters()):
            assert torch.allclose(pa, pb, atol=1e-6)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.allclose(opt_a.state[pa]["momentum_buffer"], opt_b.state[pb]["momentum_buffer"], atol=1e-6)
    assert not sgd_update(RBMCore(3, 2, gaussian=True, learn_sigma=True), pos, neg, opt_a)


#: Unit roundoff of float32.
U32 = 2.0**-24


@pytest.mark.parametrize("gaussian", [False, True])
@pytest.mark.parametrize("batch", [1, 10, 1000, 100_000])
def test_cd_update_is_the_statistic_applied_on_any_blas(batch: int, gaussian: bool) -> None:
    """One fused CD update (``sgd_update``, the path training takes) and one update by the plain autograd
    path (the surrogate loss, whose gradient is the CD statistic, and ``torch.optim.SGD``) both land
    within a rounding-error bound of the same update computed in float64, for batches of 1 to 10^5 rows
    and weights near 5. The bound holds for any order of summation (any BLAS): a sum of n products
    computed in float32 is off by at most about (n + 2) u times the sum of the terms' magnitudes (Higham
    2002, §3.1), and writing W - lr g adds u |W| and u |lr g|. Adding the terms one at a time into
    float32 weights instead loses the update (all of it at 10^5 rows, ~2% of it at 10^3)."""
    import copy

    D, H, lr, lam = 12, 7, 1e-3, 0.01
    torch.manual_seed(batch)
    core = RBMCore(D, H, weight_std=4.0, gaussian=gaussian, sigma=0.7, weight_decay=lam)
    with torch.no_grad():
        core.b.normal_(0, 1)
        core.c.normal_(0, 1)
    twin = copy.deepcopy(core)
    # data and model sides far apart, so that every entry of the statistic is well away from zero
    if gaussian:
        vp, vn = torch.randn(batch, D) + 1.5, torch.randn(batch, D) - 1.5
    else:
        vp, vn = torch.bernoulli(torch.full((batch, D), 0.9)), torch.bernoulli(torch.full((batch, D), 0.1))
    pos = core.positive_phase(vp)
    with torch.no_grad():
        neg = {"v": vn, "ph": torch.sigmoid(core.hidden_logits(vn))}

    # the reference in float64, from the same float32 inputs
    W0, s = core.W.detach().double(), core.sigma.double() if gaussian else 1.0
    sp, sn = vp.double() / s, vn.double() / s
    hp, hn = pos["ph"].double(), neg["ph"].detach().double()
    stat = sn.t() @ hn / batch - sp.t() @ hp / batch + lam * W0
    terms = sn.abs().t() @ hn / batch + sp.abs().t() @ hp / batch + lam * W0.abs()
    grads = [stat, (vn.double().mean(0) - vp.double().mean(0)) / s**2, hn.mean(0) - hp.mean(0)]
    bounds = [terms, (vn.double().abs().mean(0) + vp.double().abs().mean(0)) / s**2, hn.mean(0) + hp.mean(0)]
    n = 2 * batch + 8  # rows summed, with room for the scalings by 1/B, 1/sigma and lr
    start = [p.detach().double() for p in (core.W, core.b, core.c)]
    expected = [p - lr * g for p, g in zip(start, grads)]
    tolerances = [lr * (n * U32 * t + 4 * U32 * g.abs()) + 2 * U32 * e.abs() for t, g, e in zip(bounds, grads, expected)]
    assert float((lr * stat).abs().median()) > 20 * float(tolerances[0].median())  # a lost update cannot hide

    assert sgd_update(core, pos, neg, torch.optim.SGD(core.parameters(), lr=lr))
    opt = torch.optim.SGD(twin.parameters(), lr=lr)
    with torch.enable_grad():
        twin.surrogate_loss(vp, vn).backward()
    opt.step()
    for name, fused, plain, e, tol in zip("Wbc", (core.W, core.b, core.c), (twin.W, twin.b, twin.c), expected, tolerances):
        for path, got in (("fused", fused), ("autograd", plain)):
            err = (got.detach().double() - e).abs()
            worst = int((err / tol).argmax())
            assert bool((err <= tol).all()), f"{path} {name}: error {float(err.flatten()[worst]):.3g}, bound {float(tol.flatten()[worst]):.3g}"


def test_work_buffers_are_reused_only_when_asked_and_only_for_the_same_shapes() -> None:
    core = RBMCore(4, 3)
    fresh = cd_work(core, 2, 5, reuse=False)
    assert cd_work(core, 2, 5, reuse=False)["gw"] is not fresh["gw"]
    kept = cd_work(core, 2, 5, reuse=True)
    assert cd_work(core, 2, 5, reuse=True) is kept
    assert cd_work(core, 3, 5, reuse=True) is not kept  # another shape: new buffers
    assert torch.equal(kept["a_flat"], torch.tensor([0.5, 0.5, -0.2, -0.2, -0.2, -0.2, -0.2]))
    assert "vs" not in kept and "vs" in cd_work(core, 1, 1, reuse=False)  # stacked rows only when few
    assert "_cd_work_set" not in core.state_dict()  # never checkpointed


def test_the_statistic_is_the_difference_of_the_model_and_data_averages() -> None:
    torch.manual_seed(0)
    core = RBMCore(4, 3, weight_std=0.5, weight_decay=0.1).double()
    vp, vn = torch.bernoulli(torch.full((5, 4), 0.3)).double(), torch.bernoulli(torch.full((2, 4), 0.6)).double()
    hp, hn = torch.rand(5, 3).double(), torch.rand(2, 3).double()
    for reuse in (False, True, True):
        gw, gb, gc = cd_gradient(core, {"v": vp, "ph": hp}, {"v": vn, "ph": hn}, reuse=reuse)
        assert torch.allclose(gw, vn.t() @ hn / 2 - vp.t() @ hp / 5 + 0.1 * core.W.detach(), atol=1e-12)
        assert torch.allclose(gb, vn.mean(0) - vp.mean(0), atol=1e-12)
        assert torch.allclose(gc, hn.mean(0) - hp.mean(0), atol=1e-12)
