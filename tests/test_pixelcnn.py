"""PixelCNN and Gated PixelCNN against exact answers: receptive fields from autograd against the masks
(and the blind spot that the gated model removes), probabilities over every 3x3 binary image summing to
one, the one-pass NLL against the chain rule evaluated pixel by pixel, the fused loss against Pyro's
Trace_ELBO with the empty guide, the cached sampler against the plain one, the sampler's frequencies
against enumerated probabilities, and Bayes' rule for the class-conditional model.

The shared checks run on the PixelRNN too (``FAMILIES``); tests/test_pixelrnn.py adds its own."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import ppgen
from ppgen.data.core import DataInfo
from ppgen.evaluation.evaluate import evaluate
from ppgen.inference.svi import SVIConfig, pyro_elbo, pyro_loss
from ppgen.models.autoregressive.masked import MaskedConv2d, raster_mask, vertical_mask
from ppgen.models.autoregressive.gated_pixelcnn import GatedPixelCNN, GatedPixelCNNSpec
from ppgen.models.autoregressive.pixelcnn import PixelCNN, PixelCNNSpec
from ppgen.models.autoregressive.pixelrnn import PixelRNN, PixelRNNSpec
from ppgen.spec import SpecError
from ppgen.plots import families

SMALL_NETS = {
    "pixelcnn": (PixelCNN, PixelCNNSpec, {"channels": 8, "first_kernel": 3, "kernel": 3, "blocks": 2, "head": 8}),
    "gated_pixelcnn": (GatedPixelCNN, GatedPixelCNNSpec, {"channels": 4, "first_kernel": 3, "kernel": 3, "layers": 3, "head": 8}),
    "pixelrnn": (PixelRNN, PixelRNNSpec, {"channels": 6, "hidden": 3, "first_kernel": 3, "kernel": 3, "layers": 2, "head": 8}),
}
FAMILIES = list(SMALL_NETS)


def make(family: str, shape: tuple[int, int] = (3, 3), kind: str = "binary", conditional: bool = False,
         num_classes: int = 3, std: float | None = 0.7, seed: int = 0, **spec_kw) -> PixelCNN:
    """A small model with random weights of standard deviation ``std`` (large enough that its
    conditionals are far from uniform, so that sums and frequencies are informative)."""
    cls, spec_cls, net = SMALL_NETS[family]
    spec_kw.setdefault("net", net)
    if kind == "continuous":
        spec_kw.setdefault("likelihood", {"kind": "categorical", "levels": 3, "scale": 2})
    spec = spec_cls(data={"name": "digits"}, conditional=conditional, **spec_kw)
    torch.manual_seed(seed)
    model = cls(spec, DataInfo((1, *shape), kind, num_classes))
    if std is not None:
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0.0, std)
    return model


def all_images(shape: tuple[int, int], levels: int = 2, scale: float = 1.0) -> torch.Tensor:
    h, w = shape
    grid = torch.tensor(list(itertools.product(range(levels), repeat=h * w)), dtype=torch.float32)
    return (grid / scale).reshape(-1, 1, h, w)


def dependencies(net: torch.nn.Module, shape: tuple[int, int], y: torch.Tensor | None = None) -> torch.Tensor:
    """dep[i, j] = True where some output logit of pixel i has a non-zero gradient with respect to
    input pixel j (raster indices), over a batch of random inputs."""
    h, w = shape
    torch.manual_seed(1)
    x = torch.randn(8, 1, h, w, requires_grad=True)
    out = net(x, y if y is None else y[:1].expand(8))
    proj = torch.randn(out.shape[1])
    dep = torch.zeros(h * w, h * w, dtype=torch.bool)
    for i in range(h * w):
        r, c = divmod(i, w)
        (g,) = torch.autograd.grad((out[:, :, r, c] * proj).sum(), x, retain_graph=True)
        dep[i] = g.abs().sum(0).reshape(-1) > 0
    return dep


def conv_reach(points: set[tuple[int, int]], mask: torch.Tensor, shape: tuple[int, int]) -> set[tuple[int, int]]:
    """Input positions that a masked convolution reads for outputs at ``points``."""
    kh, kw = mask.shape
    h, w = shape
    out = set()
    for r, c in points:
        for i, j in zip(*torch.nonzero(mask, as_tuple=True)):
            rr, cc = r + int(i) - kh // 2, c + int(j) - kw // 2
            if 0 <= rr < h and 0 <= cc < w:
                out.add((rr, cc))
    return out


def pixelcnn_expected(shape: tuple[int, int], first_kernel: int, kernel: int, blocks: int) -> torch.Tensor:
    """The receptive field of every output pixel, propagated through the masks (residual blocks keep
    their input's field and add the masked convolution's)."""
    h, w = shape
    dep = torch.zeros(h * w, h * w, dtype=torch.bool)
    for i in range(h * w):
        field = {divmod(i, w)}
        for _ in range(blocks):
            field = field | conv_reach(field, raster_mask(kernel, kernel, True), shape)
        for r, c in conv_reach(field, raster_mask(first_kernel, first_kernel, False), shape):
            dep[i, r * w + c] = True
    return dep


# --------------------------------------------------------------------------- masks


def test_masks_are_exact() -> None:
    torch.testing.assert_close(raster_mask(3, 3, False), torch.tensor([[1.0, 1, 1], [1, 0, 0], [0, 0, 0]]))
    torch.testing.assert_close(raster_mask(3, 3, True), torch.tensor([[1.0, 1, 1], [1, 1, 0], [0, 0, 0]]))
    torch.testing.assert_close(vertical_mask(3, 3), torch.tensor([[1.0, 1, 1], [1, 1, 1], [0, 0, 0]]))
    torch.testing.assert_close(raster_mask(1, 5, False), torch.tensor([[1.0, 1, 0, 0, 0]]))
    assert raster_mask(7, 7, False).sum() == 24  # 3 full rows of 7 and 3 taps left of the centre
    with pytest.raises(ValueError, match="odd"):
        raster_mask(4, 4, True)
    with pytest.raises(ValueError, match="below its centre"):
        MaskedConv2d(1, 1, torch.ones(3, 3))


def test_masked_taps_get_no_gradient() -> None:
    conv = MaskedConv2d(2, 3, raster_mask(3, 3, False))
    conv(torch.randn(4, 2, 5, 5)).sum().backward()
    assert torch.all(conv.weight.grad[:, :, 1, 1:] == 0) and torch.all(conv.weight.grad[:, :, 2] == 0)
    assert torch.all(conv.weight.grad[:, :, 0] != 0)


# --------------------------------------------------------------------------- receptive fields


def test_pixelcnn_field_is_exactly_the_masks_and_has_a_blind_spot() -> None:
    shape = (5, 5)
    model = make("pixelcnn", shape, net={"channels": 8, "first_kernel": 3, "kernel": 3, "blocks": 3, "head": 8})
    dep = dependencies(model.net, shape)
    assert not torch.triu(dep).any(), "output i depends on pixel i or a later one"
    assert torch.equal(dep, pixelcnn_expected(shape, 3, 3, 3))
    before = torch.tril(torch.ones(25, 25, dtype=torch.bool), -1)
    blind = before & ~dep
    assert blind.any()
    # The classic blind spot: pixel (4, 0) never sees (3, 2), two columns to the right on the row above.
    assert not dep[4 * 5 + 0, 3 * 5 + 2] and dep[4 * 5 + 0, 3 * 5 + 1]


def test_gated_pixelcnn_sees_every_earlier_pixel() -> None:
    shape = (5, 5)
    model = make("gated_pixelcnn", shape, net={"channels": 4, "first_kernel": 3, "kernel": 3, "layers": 4, "head": 8})
    dep = dependencies(model.net, shape)
    before = torch.tril(torch.ones(25, 25, dtype=torch.bool), -1)
    assert torch.equal(dep, before), f"missing: {(before & ~dep).nonzero().tolist()}, leaks: {(dep & ~before).nonzero().tolist()}"


def test_conditional_field_has_no_leak() -> None:
    model = make("gated_pixelcnn", (4, 4), conditional=True)
    dep = dependencies(model.net, (4, 4), y=torch.tensor([2]))
    assert not torch.triu(dep).any()


def test_a_leaking_mask_is_caught() -> None:
    """The checks can fail: with mask B in the first layer each pixel sees itself, the field test
    flags it and the probabilities over all images no longer sum to one."""
    model = make("pixelcnn", (3, 3))
    with torch.no_grad():
        model.net.first.mask.copy_(raster_mask(3, 3, True).reshape(1, 1, 3, 3))
    dep = dependencies(model.net, (3, 3))
    assert torch.diagonal(dep).all()
    total = model.log_likelihood(all_images((3, 3)))[0].exp().sum()
    assert abs(float(total) - 1.0) > 0.05


# --------------------------------------------------------------------------- exact probabilities


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("conditional", [False, True])
def test_probabilities_of_all_3x3_binary_images_sum_to_one(family: str, conditional: bool) -> None:
    model = make(family, (3, 3), conditional=conditional)
    x = all_images((3, 3))
    assert x.shape[0] == 512
    if conditional:
        for k in range(3):
            ll, se = model.log_likelihood(x, y=torch.full((512,), k))
            torch.testing.assert_close(ll.double().exp().sum(), torch.tensor(1.0, dtype=torch.float64), atol=1e-5, rtol=0)
        # and the marginal over classes
        ll, _ = model.log_likelihood(x)
    else:
        ll, se = model.log_likelihood(x)
        assert torch.all(se == 0)
    p = ll.double().exp()
    torch.testing.assert_close(p.sum(), torch.tensor(1.0, dtype=torch.float64), atol=1e-5, rtol=0)
    assert p.max() > 20 * p.min()  # far from uniform: the sum is informative


@pytest.mark.parametrize("family", FAMILIES)
def test_categorical_probabilities_sum_to_one(family: str) -> None:
    model = make(family, (2, 2), kind="continuous")
    x = all_images((2, 2), levels=3, scale=2.0)
    assert x.shape[0] == 81
    p = model.log_likelihood(x)[0].double().exp()
    torch.testing.assert_close(p.sum(), torch.tensor(1.0, dtype=torch.float64), atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("kind", ["binary", "continuous"])
def test_nll_equals_the_chain_rule_pixel_by_pixel(family: str, kind: str) -> None:
    """log p(x) from one pass equals sum_i log p(x_i | x_<i), each conditional computed from a canvas
    whose pixels i, i+1, ... are overwritten with noise."""
    shape = (4, 5)
    model = make(family, shape, kind=kind)
    gen = torch.Generator().manual_seed(5)
    if kind == "binary":
        x = torch.bernoulli(torch.full((3, 1, *shape), 0.4), generator=gen)
    else:
        x = torch.randint(0, 3, (3, 1, *shape), generator=gen).float() / 2
    one_pass, se = model.log_likelihood(x)
    assert torch.all(se == 0)
    total = torch.zeros(3, dtype=torch.float64)
    with torch.no_grad():
        for i in range(20):
            r, c = divmod(i, shape[1])
            canvas = x.clone().reshape(3, -1)
            canvas[:, i:] = torch.rand(3, 20 - i, generator=gen)
            out = model.net(model.net_input(canvas.reshape(3, 1, *shape)))[:, :, r, c]
            if kind == "binary":
                lp = -torch.nn.functional.binary_cross_entropy_with_logits(out[:, 0], x[:, 0, r, c], reduction="none")
            else:
                lp = torch.log_softmax(out, 1).gather(1, (x[:, 0, r, c] * 2).round().long()[:, None])[:, 0]
            total += lp.double()
    torch.testing.assert_close(one_pass.double(), total, atol=1e-4, rtol=0)


# --------------------------------------------------------------------------- the loss


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("kind", ["binary", "continuous"])
@pytest.mark.parametrize("prior", ["none", "normal"])
def test_fused_loss_equals_pyro_trace_elbo(family: str, kind: str, prior: str) -> None:
    """With the empty guide Pyro's Trace_ELBO is -log p(x) (- log p(theta) / N for MAP): the fused
    loss gives the same value and the same gradients."""
    pri = {"kind": prior, "scale": 0.5, "num_data": 40} if prior == "normal" else {"kind": "none"}
    model = make(family, (4, 4), kind=kind, prior=pri, std=None)
    gen = torch.Generator().manual_seed(2)
    x = torch.bernoulli(torch.full((6, 1, 4, 4), 0.3), generator=gen)
    if kind == "continuous":
        x = torch.randint(0, 3, (6, 1, 4, 4), generator=gen).float() / 2
    fused = model.fused_loss(x, "trace", 1) / 6
    g_fused = torch.autograd.grad(fused, list(model.parameters()))
    through_pyro = pyro_loss(model, pyro_elbo(SVIConfig(elbo="trace"), 1), x, None, differentiate=True)
    g_pyro = torch.autograd.grad(through_pyro, list(model.parameters()))
    torch.testing.assert_close(fused, through_pyro)
    for a, b in zip(g_fused, g_pyro):
        torch.testing.assert_close(a, b)
    expected = -model.log_prob(x).mean()
    if prior == "normal":
        log_prior = sum(torch.distributions.Normal(0.0, 0.5).log_prob(p).sum() for p in model.parameters())
        expected = expected - log_prior / 40
    torch.testing.assert_close(fused, expected)


def test_conditional_fused_loss_equals_pyro_with_its_labels() -> None:
    model = make("pixelcnn", (3, 3), conditional=True, std=None)
    with torch.no_grad():
        model.class_logits.copy_(torch.tensor([0.5, -1.0, 0.2]))
    x = torch.bernoulli(torch.full((5, 1, 3, 3), 0.5), generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2, 1, 0])
    loss = pyro_loss(model, pyro_elbo(SVIConfig(elbo="trace"), 1), x, y, differentiate=True)
    expected = -(model.log_prob(x, y) + torch.log_softmax(model.class_logits, 0)[y]).mean()
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(model.fused_loss(x, "trace", 1, y=y) / 5, expected)
    with pytest.raises(ValueError, match="labels y"):
        model.model(x, None)


# --------------------------------------------------------------------------- sampling


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("kind", ["binary", "continuous"])
def test_fast_and_plain_samplers_draw_the_same_images(family: str, kind: str) -> None:
    model = make(family, (5, 4), kind=kind, conditional=True, std=0.5)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    torch.manual_seed(11)
    plain = model.sample(6, y=y, fast=False)
    torch.manual_seed(11)
    fast = model.sample(6, y=y, fast=True)
    assert torch.equal(plain, fast)
    assert len(plain.unique()) > 1
    torch.manual_seed(12)
    other = model.sample(6, y=y)
    assert not torch.equal(other, fast)
    # Completion: the kept rows stay, the rest is drawn the same way by both paths.
    x = fast.flip(0)
    torch.manual_seed(13)
    a = model.complete(x, rows=2, y=y, fast=False)
    torch.manual_seed(13)
    b = model.complete(x, rows=2, y=y, fast=True)
    assert torch.equal(a, b) and torch.equal(a[:, :, :2], x[:, :, :2])


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("start", [0, 7, 13])
def test_stepper_logits_equal_the_full_pass(family: str, start: int) -> None:
    """The cached evaluation, started from a canvas that is noise from ``start`` on and fed the true
    pixels one by one, reproduces the full network's logits at every later pixel."""
    shape = (4, 5)
    model = make(family, shape, kind="continuous", conditional=True, std=0.5)
    y = torch.tensor([2, 0, 1])
    x_in = model.net_input(torch.randint(0, 3, (3, 1, *shape)).float() / 2)
    with torch.no_grad():
        full = model.net(x_in, y)
        canvas = x_in.clone().reshape(3, -1)
        canvas[:, start:] = torch.randn(3, 20 - start)
        stepper = model.net.stepper(canvas.reshape(3, 1, *shape), y, start)
        for i in range(start, 20):
            r, c = divmod(i, shape[1])
            torch.testing.assert_close(stepper.logits_at(r, c), full[:, :, r, c], atol=1e-5, rtol=1e-5)
            stepper.set_pixel(r, c, x_in[:, :, r, c])


@pytest.mark.parametrize("family", FAMILIES)
def test_sample_frequencies_match_enumerated_probabilities(family: str) -> None:
    model = make(family, (2, 2), std=0.8)
    x = all_images((2, 2))
    p = model.log_likelihood(x)[0].double().exp()
    torch.manual_seed(3)
    n = 20_000
    s = model.sample(n)
    index = (s.reshape(n, 4) * torch.tensor([8.0, 4, 2, 1])).sum(1).long()
    freq = torch.bincount(index, minlength=16).double() / n
    se = (p * (1 - p) / n).sqrt()
    assert torch.all((freq - p).abs() < 5 * se + 1e-3), (freq, p)


def test_completion_draws_the_class_from_its_posterior() -> None:
    """Without y, complete() draws y from p(y | kept rows), which is exact: check it against Bayes'
    rule on the prefix computed by enumeration of the hidden pixels."""
    model = make("pixelcnn", (2, 3), conditional=True, std=1.0)
    x = torch.tensor([[[[1.0, 0, 1], [0, 0, 0]]]])
    post = model.prefix_class_posterior(x, 3).exp()[0]
    # p(x_top | y) = sum over the 8 bottom rows of p(x | y)
    tops = all_images((1, 3))
    full = torch.cat([x[:, :, :1].expand(8, 1, 1, 3), tops], dim=2)
    joint = torch.stack([model.log_likelihood(full, y=torch.full((8,), k))[0].exp().sum() for k in range(3)])
    joint = joint * torch.softmax(model.class_logits.detach(), 0)
    torch.testing.assert_close(post, joint / joint.sum(), atol=1e-5, rtol=1e-4)


# --------------------------------------------------------------------------- Bayes' rule


def test_class_posterior_is_bayes_rule() -> None:
    model = make("gated_pixelcnn", (3, 3), conditional=True)
    x = all_images((3, 3))[::37]
    y = torch.arange(len(x)) % 3
    by_class = torch.stack([model.log_prob(x, torch.full((len(x),), k)) for k in range(3)], 1).detach()
    joint = by_class + torch.log_softmax(model.class_logits.detach(), 0)
    torch.testing.assert_close(model.class_posterior(x), joint - joint.logsumexp(1, keepdim=True))
    extra = model.evaluate_extra(x, y)
    assert extra["bayes_accuracy"] == pytest.approx(float((joint.argmax(1) == y).double().mean()))
    assert extra["marginal_nll_nats"] == pytest.approx(float(-joint.logsumexp(1).double().mean()), rel=1e-6)
    assert model.evaluate_extra(x, None) == {}
    assert make("pixelcnn", (3, 3)).evaluate_extra(x, y) == {}


# --------------------------------------------------------------------------- specs and errors


def test_spec_errors_name_the_key_and_the_fix() -> None:
    with pytest.raises(SpecError, match=r"net\.blokcs: unknown key"):
        ppgen.load_spec({"family": "pixelcnn", "net": {"blokcs": 3}})
    with pytest.raises(SpecError, match=r"net\.kernel: must be odd"):
        ppgen.load_spec({"family": "gated_pixelcnn", "net": {"kernel": 4}})
    with pytest.raises(SpecError, match="apply to kind 'categorical'"):
        ppgen.load_spec({"family": "pixelcnn", "likelihood": {"kind": "bernoulli", "levels": 4}})
    with pytest.raises(SpecError, match="models images"):
        ppgen.load_spec({"family": "pixelrnn", "data": {"name": "toy2d"}})
    with pytest.raises(SpecError, match="prior.num_data applies only"):
        ppgen.load_spec({"family": "pixelcnn", "prior": {"num_data": 10}})
    spec = PixelCNNSpec(data={"name": "digits"}, likelihood={"kind": "bernoulli"})
    with pytest.raises(ValueError, match="data.binarize"):
        PixelCNN(spec, DataInfo((1, 8, 8), "continuous", 10))
    with pytest.raises(ValueError, match="one-channel images"):
        PixelCNN(PixelCNNSpec(), DataInfo((3, 8, 8), "binary", 10))
    with pytest.raises(ValueError, match="needs labelled data"):
        PixelCNN(PixelCNNSpec(conditional=True), DataInfo((1, 8, 8), "binary", None))
    with pytest.raises(ValueError, match="binary pixels"):
        make("pixelcnn").log_prob(torch.full((1, 1, 3, 3), 0.5))
    with pytest.raises(ValueError, match="likelihood.levels and likelihood.scale"):
        make("pixelcnn", kind="continuous").log_prob(torch.full((1, 1, 3, 3), 0.3))
    with pytest.raises(ValueError, match="rows must be"):
        make("pixelcnn").complete(torch.zeros(1, 1, 3, 3), rows=3)


def test_categorical_levels_follow_the_data() -> None:
    for name, levels, scale in [("mnist", 256, 256.0), ("digits", 17, 16.0), ("images", 256, 255.0)]:
        spec = PixelCNNSpec(data={"name": name, "path": "x" if name == "images" else None})
        model = PixelCNN(spec, DataInfo((1, 8, 8), "continuous", None))
        assert (model.kind, model.levels, model.scale) == ("categorical", levels, scale)
    model = PixelCNN(PixelCNNSpec(data={"name": "mnist"}), DataInfo((1, 8, 8), "continuous", None))
    x = torch.tensor([0.0, 1 / 256, 255 / 256]).reshape(1, 1, 1, 3).expand(1, 1, 8, 3)
    assert model.observed(x)[0, 0, 0].tolist() == [0, 1, 255]


# --------------------------------------------------------------------------- the whole path


def _npz(tmp_path: Path, n: int = 240, side: int = 4) -> Path:
    """Three classes of 4x4 binary images (a row, a column, a diagonal) with 5% flipped pixels."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, n)
    x = np.zeros((n, side, side), dtype=np.float32)
    for i, k in enumerate(y):
        if k == 0:
            x[i, rng.integers(side), :] = 1
        elif k == 1:
            x[i, :, rng.integers(side)] = 1
        else:
            x[i][np.eye(side, dtype=bool)] = 1
    flip = rng.random(x.shape) < 0.05
    x = np.where(flip, 1 - x, x).astype(np.float32)
    path = tmp_path / "patterns.npz"
    np.savez(path, x=x, y=y)
    return path


def test_fit_evaluate_and_figures(tmp_path: Path) -> None:
    """A class-conditional MAP PixelCNN fitted through ppgen.fit: exact NLL with zero Monte Carlo
    error, bits/dim, a Bayes classifier far above chance, figures, and a checkpoint that reloads."""
    data = {"name": "npz", "path": str(_npz(tmp_path)), "binarize": "static", "batch_size": 16}
    spec = {
        "family": "pixelcnn", "data": data, "conditional": True, "prior": {"kind": "normal", "scale": 3.0},
        "net": {"channels": 16, "first_kernel": 3, "kernel": 3, "blocks": 1, "head": 16},
    }
    recipe = {"routine": "svi", "elbo": "trace", "epochs": 12, "optimizer": {"lr": 0.01}}
    run = ppgen.fit(spec, recipe, out=tmp_path / "run", seed=0, progress=False)
    assert run.model.num_data() == 192  # the training split of 240 examples, resolved from the data
    res = evaluate(run)
    assert res["test_nll_mc_stderr"] == 0.0
    assert res["bits_per_dim"] == pytest.approx(res["test_nll_nats"] / (16 * math.log(2)))
    assert res["test_nll_nats"] < 16 * math.log(2) - 3  # well below the uniform model's 11.09 nats
    assert res["bayes_accuracy"] > 0.8  # chance is about 1/3
    assert res["marginal_nll_nats"] > res["test_nll_nats"]  # knowing the class helps
    assert json.loads((run.path / "evaluation.json").read_text())["bayes_accuracy"] == res["bayes_accuracy"]
    figs = families.figures(run.model, run.path / "figures", run.data)
    assert set(figs) == {"samples", "completions"} and all(p.stat().st_size > 0 for p in figs.values())
    x, y = run.data.split("test")
    again = ppgen.open_run(run.path).model
    torch.testing.assert_close(again.log_likelihood(x, y=y)[0], run.model.log_likelihood(x, y=y)[0])
    # ArviZ: the posterior over each test image's class is p(y | x); its draws follow Bayes' rule.
    from ppgen.diagnostics.diagnose import diagnose

    out = diagnose(run)
    assert out["idata"].exists()
    draws = run.idata.posterior["y"].values[0]  # (draw, obs)
    freq = torch.stack([torch.from_numpy((draws == k).mean(0)) for k in range(3)], 1).float()
    torch.testing.assert_close(freq, run.model.class_posterior(x[:16]).exp(), atol=0.06, rtol=0)


def test_fit_unconditional_categorical_uses_the_fused_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ppgen.inference.svi as svi

    def no_pyro(*args: object, **kw: object) -> None:
        raise AssertionError("SVI went through Pyro although the family has a fused loss")

    monkeypatch.setattr(svi, "pyro_loss", no_pyro)
    rng = np.random.default_rng(1)
    x = (rng.integers(0, 4, (120, 3, 3)) * 85).astype(np.uint8)  # 8-bit integers, scaled by 1/255 on load
    path = tmp_path / "grey.npz"
    np.savez(path, x=x)
    spec = {"family": "gated_pixelcnn", "data": {"name": "npz", "path": str(path), "batch_size": 20},
            "likelihood": {"kind": "categorical"},
            "net": {"channels": 4, "first_kernel": 3, "kernel": 3, "layers": 2, "head": 8}}
    run = ppgen.fit(spec, {"routine": "svi", "elbo": "trace", "epochs": 15, "optimizer": {"lr": 0.03}},
                    out=tmp_path / "run", progress=False)
    assert run.model.levels == 256 and run.model.scale == 255.0
    res = evaluate(run)
    # Pixels uniform over 4 of the 256 levels, independently: the best model has 9 * log(4) = 12.48 nats,
    # the uniform one over 256 levels 49.9 nats.
    assert res["test_nll_nats"] < 9 * math.log(4) + 1.0
    assert "bayes_accuracy" not in res
    assert run.model.sample(2).mul(255).round().remainder(1).eq(0).all()


def test_example_script_runs(tmp_path: Path) -> None:
    """examples/pixelcnn_digits.py with one epoch: every number it prints is produced, and the two
    samplers agree."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "examples" / "pixelcnn_digits.py"
    spec = importlib.util.spec_from_file_location("pixelcnn_digits", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = module.main(["--family", "pixelcnn", "--epochs", "1", "--out", str(tmp_path / "run")])
    assert out["same"] and out["plain_s"] > out["fast_s"]
    assert 0.0 <= out["evaluation"]["bayes_accuracy"] <= 1.0 and out["evaluation"]["test_nll_mc_stderr"] == 0.0
    assert all(p.exists() for p in out["figures"].values())


@pytest.mark.parametrize("family", FAMILIES)
def test_a_subclass_with_its_own_likelihood_is_fitted_through_pyro(family: str) -> None:
    """The fused loss restates the base class's Bernoulli likelihood: a subclass that tempers it (and
    keeps the base fused_loss) must be trained on its own likelihood, through Pyro."""
    from ppgen.inference.svi import SVI
    from ppgen.models.base import fused_loss_applies

    base_cls = SMALL_NETS[family][0]

    class Tempered(base_cls):  # type: ignore[misc, valid-type]
        def _pixel_dist(self, out: torch.Tensor) -> torch.distributions.Distribution:
            return super()._pixel_dist(0.5 * out)

    plain = make(family, (3, 3))
    model = make(family, (3, 3))
    model.__class__ = Tempered
    assert fused_loss_applies(plain) and not fused_loss_applies(model)
    routine = SVI(SVIConfig(elbo="trace"))
    routine.init(model)
    assert not routine.use_fused
    x = torch.bernoulli(torch.full((4, 1, 3, 3), 0.4), generator=torch.Generator().manual_seed(3))
    loss = routine._loss(model, x, None)
    torch.testing.assert_close(loss, -model.likelihood(x).log_prob(x).mean())
    assert not torch.allclose(loss, model.fused_loss(x, "trace", 1) / 4)  # what the fused path would have fitted
