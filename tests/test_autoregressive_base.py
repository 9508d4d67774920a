"""The autoregressive image families' shared machinery (ppgen.models.autoregressive.base.PixelFamily) on a
tiny PixelCNN over 2 x 2 images: the likelihood normalizes over all images (Bernoulli and Categorical,
marginal over classes), Bayes' rule, the inverse-CDF draw, the weight prior, the input maps and refusals."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

import ppgen
from ppgen.data.core import DataInfo
from ppgen.models.autoregressive.base import PixelFamily

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NET = {"channels": 4, "first_kernel": 3, "kernel": 3, "blocks": 1, "head": 4}


def _model(kind: str = "binary", conditional: bool = False, **spec: object) -> PixelFamily:
    data = {"name": "digits"} if kind == "binary" else {"name": "digits", "binarize": "none"}
    model = ppgen.build(ppgen.load_spec({"family": "pixelcnn", "conditional": conditional, "net": NET, "data": data, **spec}),
                        DataInfo((1, 2, 2), kind, num_classes=3 if conditional else None, n_train=50))
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.5)
    return model.double()


def _all_images(levels: int) -> torch.Tensor:
    return torch.tensor(list(itertools.product(range(levels), repeat=4)), dtype=torch.float64).reshape(-1, 1, 2, 2)


def test_the_likelihood_sums_to_one_over_every_binary_image() -> None:
    model = _model()
    ll, se = model.log_likelihood(_all_images(2))
    assert float(torch.logsumexp(ll, 0)) == pytest.approx(0.0, abs=1e-9)
    assert not se.any()
    assert isinstance(model, PixelFamily)


def test_categorical_levels_follow_the_data_and_normalize() -> None:
    model = _model("continuous", likelihood={"kind": "categorical", "levels": 3, "scale": 2})
    x = _all_images(3) / 2  # intensities k / scale
    assert (model.kind, model.levels, model.scale) == ("categorical", 3, 2.0)
    assert float(torch.logsumexp(model.log_prob(x).detach(), 0)) == pytest.approx(0.0, abs=1e-9)
    assert torch.equal(model.observed(x[:2]), torch.round(x[:2] * 2).long())
    assert torch.allclose(model.net_input(x[-1:]), torch.ones(1, 1, 2, 2, dtype=torch.float64))  # top level -> 1
    digits = _model("continuous")
    assert (digits.levels, digits.scale) == (17, 16.0)  # digits store count / 16
    with pytest.raises(ValueError, match="with 3 levels and scale 2 needs intensities k / 2"):
        model.observed(torch.full((1, 1, 2, 2), 0.3, dtype=torch.float64))
    with pytest.raises(ValueError, match="needs binary pixels \\(0 or 1\\), got a value 0.5"):
        _model().observed(torch.full((1, 1, 2, 2), 0.5))


def test_a_conditional_model_marginalizes_classes_and_classifies_by_bayes_rule() -> None:
    model = _model(conditional=True)
    x = _all_images(2)
    ll, _ = model.log_likelihood(x)  # marginal over y
    assert float(torch.logsumexp(ll, 0)) == pytest.approx(0.0, abs=1e-9)
    cols = torch.stack([model.log_prob(x, torch.full((16,), k)) for k in range(3)], 1).detach()
    prior = torch.log_softmax(model.class_logits, 0).detach()
    assert torch.allclose(ll, torch.logsumexp(cols + prior, 1))
    assert torch.allclose(model.class_posterior(x), torch.log_softmax(cols + prior, 1))
    y = torch.tensor([0, 1, 2, 0] * 4)
    extra = model.evaluate_extra(x, y)
    assert extra["bayes_accuracy"] == pytest.approx(float(((cols + prior).argmax(1) == y).double().mean()))
    assert extra["marginal_nll_nats"] == pytest.approx(float(-ll.mean()))
    assert extra["marginal_bits_per_dim"] == pytest.approx(float(-ll.mean()) / (4 * math.log(2)))
    # the prefix posterior with every pixel kept is the full one; with none, the prior
    assert torch.allclose(model.prefix_class_posterior(x, 4), model.class_posterior(x))
    assert torch.allclose(model.prefix_class_posterior(x, 0), prior.expand(16, 3))
    with pytest.raises(ValueError, match="needs the labels y"):
        model.model(x)


def test_the_inverse_cdf_draw() -> None:
    model = _model("continuous", likelihood={"kind": "categorical", "levels": 3, "scale": 2})
    logits = torch.log(torch.tensor([[0.2, 0.5, 0.3]], dtype=torch.float64)).expand(5, 3)
    u = torch.tensor([0.0, 0.19, 0.21, 0.69, 0.71], dtype=torch.float64)
    assert model._draw(logits, u).tolist() == [0.0, 0.0, 0.5, 0.5, 1.0]  # level / scale
    binary = _model()
    out = torch.tensor([[0.0]] * 3, dtype=torch.float64)  # p = 0.5
    assert binary._draw(out, torch.tensor([0.1, 0.49, 0.51], dtype=torch.float64)).tolist() == [1.0, 1.0, 0.0]


def test_the_weight_prior_and_the_fused_loss() -> None:
    model = _model(prior={"kind": "normal", "scale": 0.5, "num_data": 20})
    params = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    expect = torch.distributions.Normal(torch.zeros((), dtype=torch.float64), 0.5).log_prob(params).sum()
    x = _all_images(2)[:6]
    with torch.no_grad():
        assert float(model.log_prior()) == pytest.approx(float(expect), rel=1e-12)
        assert float(_model().log_prior()) == 0.0
        assert float(model.fused_loss(x)) == pytest.approx(float(-model.log_prob(x).sum() - expect * 6 / 20), rel=1e-12)
    assert model.num_data() == 20 and _model(prior={"kind": "normal"}).num_data() == 50


def test_completion_keeps_the_rows_and_refuses_out_of_range() -> None:
    model = _model().float()
    x = torch.tensor([[[[1.0, 0.0], [1.0, 1.0]]]] * 4)
    torch.manual_seed(1)
    out = model.complete(x, rows=1)
    assert torch.equal(out[:, :, 0], x[:, :, 0]) and out.shape == (4, 1, 2, 2)
    with pytest.raises(ValueError, match="rows must be in 0..1"):
        model.complete(x, rows=2)
    torch.manual_seed(2)
    fast = model.sample(6)
    torch.manual_seed(2)
    assert torch.equal(model.sample(6, fast=False), fast)
