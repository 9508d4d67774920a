"""Labels in the model language: few labels (data.labels), the semi-supervised M2 against explicit sums and
against the conditional model, the classification term, Bayes' rule against the exact Bayes-optimal
classifier, and ``ppgen sample --given``."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

import ppgen
from ppgen import data as pdata
from ppgen.cli import main
from ppgen.data.core import DataInfo
from ppgen.data.labels import HIDDEN, LabelledDataset, choose_labelled
from ppgen.program import objective, passes, sites
from ppgen.spec import SpecError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DIGITS = DataInfo((1, 8, 8), "binary", 10)


def m2(hidden: int = 8, classify: bool = True, per_class: bool = False) -> dict:
    """A tiny M2; ``per_class`` gives it one decoder per class (``per: y``) instead of one reading [z, y]."""
    dec = {"inputs": ["z"], "per": "y"} if per_class else {"inputs": ["z", "y"]}
    nets = {"dec": {**dec, "hidden": [hidden]}, "enc": {"inputs": ["x", "y"], "hidden": [hidden]}}
    guide = {"z": {"dist": "Normal", "loc": "enc.loc", "scale": "softplus(enc.scale) + 1e-4"}}
    if classify:
        nets["cls"] = {"inputs": ["x"], "hidden": [hidden]}
        guide = {"y": {"dist": "Categorical", "logits": "cls"}, **guide}
    return {
        "family": "program", "data": {"name": "digits"}, "networks": nets,
        "model": {"y": {"dist": "Categorical", "logits": 0.0, "observed": "y"},
                  "z": {"dist": "Normal", "loc": 0.0, "scale": 1.0, "shape": [3]},
                  "x": {"dist": "Bernoulli", "logits": "dec", "observed": "x"}},
        "guide": guide,
    }


def _x(n: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.bernoulli(torch.full((n, 1, 8, 8), 0.3), generator=g)


def _build(spec: dict, info: DataInfo = DIGITS):
    torch.manual_seed(0)
    return ppgen.build(spec, info)


# --------------------------------------------------------------------------- M2


@pytest.mark.parametrize("per_class", [False, True])
def test_enumerated_labels_equal_the_explicit_sum_over_classes(per_class: bool) -> None:
    """For a hidden label the bound is sum_c q(c|x) [log p(x, c, z_c) - log q(z_c|x, c) - log q(c|x)], for a
    given one (in the same batch) log p(x, y, z_y) - log q(z_y|x, y): written out class by class with the
    same draws z_c = loc_c + eps_c scale_c; with one decoder per class as with one shared."""
    model = _build(m2(per_class=per_class))
    prog, mods = model.program, model._mods()
    x = _x(5)
    y = torch.tensor([-1, 4, -1, -1, 7])
    torch.manual_seed(11)
    fused = -model.fused_loss(x, "trace", 1, y=y)
    torch.manual_seed(11)
    eps = torch.empty(10, 5, 3).normal_()  # the enumerated pass draws z for every class at once
    with torch.no_grad():
        logq_y = torch.log_softmax(mods[0]["cls"]([x])["out"], -1)  # (5, 10)
        terms = []
        for c in range(10):
            yc = torch.full((5,), c)
            heads = mods[0]["enc"]([x, yc])
            loc, scale = heads["loc"], torch.nn.functional.softplus(heads["scale"]) + 1e-4
            z = loc + eps[c] * scale
            logits = mods[0]["dec"]([z, yc])["out"]
            lp = (torch.distributions.Bernoulli(logits=logits).log_prob(x).sum((1, 2, 3))
                  + torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1) + math.log(0.1)
                  - torch.distributions.Normal(loc, scale).log_prob(z).sum(-1))
            terms.append(lp)
        terms = torch.stack(terms, 1)  # (5, 10)
        hidden = (logq_y.exp() * (terms - logq_y)).sum(1)
        given = terms.gather(1, y.clamp_min(0)[:, None])[:, 0]
        explicit = torch.where(y >= 0, given, hidden).sum()
    torch.testing.assert_close(fused.detach(), explicit, rtol=1e-5, atol=1e-4)


TINY = DataInfo((1, 3, 3), "binary", 4)


def _explicit_m2_loss(model, x: torch.Tensor, y: torch.Tensor, eps: torch.Tensor, alpha: float,
                      analytic_kl: bool = False) -> torch.Tensor:
    """What M2 minimises (Kingma et al. 2014, eq. 7-9), class by class, divided by the batch size: for a hidden
    label -(sum_c q(c|x) [log p(x|c,z_c) + log p(c) + log p(z_c) - log q(z_c|x,c)] + H(q(.|x))), for a given one
    -(log p(x|y,z_y) + log p(y) + log p(z_y) - log q(z_y|x,y)) + alpha * -log q(y|x), with z_c = loc_c + eps_c scale_c;
    with ``analytic_kl`` log p(z_c) - log q(z_c|x,c) is -KL(q(z|x,c) || p(z)) in closed form."""
    nets = model.nets
    classes = eps.shape[0]
    logq_y = torch.log_softmax(nets["cls"]([x])["out"], -1)
    bound = []
    for c in range(classes):
        yc = torch.full((x.shape[0],), c)
        heads = nets["enc"]([x, yc])
        loc, scale = heads["loc"], torch.nn.functional.softplus(heads["scale"]) + 1e-4
        z = loc + eps[c] * scale
        logits = nets["dec"]([z, yc])["out"]
        q, p = torch.distributions.Normal(loc, scale), torch.distributions.Normal(0.0, 1.0)
        kl = torch.distributions.kl_divergence(q, p) if analytic_kl else q.log_prob(z) - p.log_prob(z)
        bound.append(torch.distributions.Bernoulli(logits=logits).log_prob(x).sum((1, 2, 3)) - math.log(classes)
                     - kl.sum(-1))
    bound = torch.stack(bound, 1)  # (B, classes)
    hidden = (logq_y.exp() * bound).sum(1) - (logq_y.exp() * logq_y).sum(1)
    given = bound.gather(1, y.clamp_min(0)[:, None])[:, 0] + alpha * logq_y.gather(1, y.clamp_min(0)[:, None])[:, 0]
    return -torch.where(y >= 0, given, hidden).sum() / x.shape[0]


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("labels", ["hidden", "mixed"])
@pytest.mark.parametrize("elbo", ["meanfield", "trace"])
@pytest.mark.parametrize("particles", [1, 2])
@pytest.mark.parametrize("per_class", [False, True])
def test_m2_loss_and_its_gradient_equal_the_explicit_sum_over_classes(fused: bool, labels: str, elbo: str,
                                                                       particles: int, per_class: bool) -> None:
    """The loss the svi routine minimises for M2 (the recipe's bound and classification term), on a
    tiny M2 with 4 classes: its value and its gradient in every parameter, the classifier q(y|x) first, equal
    the explicit formula of the paper with the same draws, through the fused path and through Pyro. The fused
    meanfield bound takes KL(q(z|x,y) || p(z)) in closed form for every class; Pyro's TraceEnum_ELBO has no
    closed-form KL, so through Pyro it is Monte Carlo."""
    from ppgen.inference.svi import SVI, SVIConfig

    spec = m2(hidden=5, per_class=per_class)
    spec["model"]["z"]["shape"] = [2]
    model = _build(spec, TINY)
    g = torch.Generator().manual_seed(4)
    x = torch.bernoulli(torch.full((6, 1, 3, 3), 0.4), generator=g)
    y = torch.full((6,), -1) if labels == "hidden" else torch.tensor([-1, 2, -1, 0, -1, -1])
    routine = SVI(SVIConfig(elbo=elbo, num_particles=particles, classify_weight=3.0, fused=fused))
    routine.init(model)
    assert routine.use_fused == fused
    params = dict(model.nets.named_parameters())
    assert any(k.startswith("cls.") for k in params)
    torch.manual_seed(11)
    loss = routine._loss(model, x, y)
    grads = torch.autograd.grad(loss, list(params.values()))
    torch.manual_seed(11)
    eps = torch.empty(4, particles, 6, 2).normal_()  # the enumerated pass draws z for every class at once
    explicit = sum(_explicit_m2_loss(model, x, y, eps[:, p], 3.0, analytic_kl=fused and elbo == "meanfield")
                   for p in range(particles)) / particles
    want = torch.autograd.grad(explicit, list(params.values()))
    torch.testing.assert_close(loss.detach(), explicit.detach(), rtol=1e-5, atol=1e-5)
    for name, a, b in zip(params, grads, want):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=lambda m, name=name: f"{name}: {m}")
    cls_grad = sum(float(a.abs().sum()) for name, a in zip(params, grads) if name.startswith("cls."))
    assert cls_grad > 1e-3  # the unlabelled examples do reach q(y|x)


@pytest.mark.parametrize("kind", ["mlp", "linear"])
def test_network_of_x_and_enumerated_classes_equals_the_joined_inputs(kind: str) -> None:
    """An encoder of (x, y) with y enumerated computes its first layer for x once per example and for y once per
    class: the same values and gradients as joining every (x, y) pair first."""
    from ppgen.program.networks import InputSpec, Network

    torch.manual_seed(2)
    net = Network("enc", kind, [7], "relu", [InputSpec("x", (5,)), InputSpec("y", (), classes=4)],
                  {"loc": (3,), "scale": (3,)})
    x = torch.randn(6, 5)
    y = torch.arange(4).reshape(4, 1)  # enumerated classes, laid out left of the data plate
    split = net([x, y])
    assert split["loc"].shape == (4, 6, 3)
    flat = [net._flat(s, v) for s, v in zip(net.inputs, [x, y])]
    joined = torch.cat([f.expand(4, 6, f.shape[-1]) for f in flat], -1).reshape(24, -1)
    ref = net.core(joined).reshape(4, 6, 6)
    torch.testing.assert_close(torch.cat([split["loc"], split["scale"]], -1), ref, rtol=1e-5, atol=1e-6)
    params = list(net.parameters())
    g_split = torch.autograd.grad((split["loc"].sin().sum() + split["scale"].cos().sum()), params)
    g_ref = torch.autograd.grad((ref[..., :3].sin().sum() + ref[..., 3:].cos().sum()), params)
    for a, b in zip(g_split, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_m2_with_every_label_given_is_the_conditional_model() -> None:
    """With every label given the M2 bound is the conditional VAE's (same networks, same draws), and the
    classification term adds exactly classify_weight * -log q(y|x) per example."""
    full = _build(m2())
    cond = _build(m2(classify=False))
    cond.nets["dec"].load_state_dict(full.nets["dec"].state_dict())
    cond.nets["enc"].load_state_dict(full.nets["enc"].state_dict())
    x, y = _x(6), torch.tensor([0, 1, 2, 3, 8, 9])
    for elbo in ("trace", "meanfield"):
        torch.manual_seed(3)
        a = full.fused_loss(x, elbo, 1, y=y)
        torch.manual_seed(3)
        b = cond.fused_loss(x, elbo, 1, y=y)
        torch.testing.assert_close(a, b)
    # the recipe's classification term on top
    from ppgen.inference.svi import SVI, SVIConfig

    routine = SVI(SVIConfig(classify_weight=2.5))
    routine.init(full)
    torch.manual_seed(3)
    with_term = routine._loss(full, x, y)
    torch.manual_seed(3)
    plain = full.fused_loss(x, "meanfield", 1, y=y) / 6
    with torch.no_grad():
        ce = torch.nn.functional.cross_entropy(full.nets["cls"]([x])["out"], y, reduction="sum")
    torch.testing.assert_close(with_term.detach(), plain.detach() + 2.5 * ce / 6)
    # hidden labels add nothing to the term
    torch.testing.assert_close(full.classification_loss(x, torch.full((6,), -1)), torch.zeros(()))


def test_classify_weight_needs_a_guide_classifier_of_x() -> None:
    from ppgen.inference.svi import SVI, SVIConfig

    with pytest.raises(SpecError, match="classify_weight.*no site y"):
        SVI(SVIConfig(classify_weight=1.0)).init(_build(m2(classify=False)))
    spec = m2()
    spec["networks"]["cls"]["inputs"] = ["x", "z"]
    spec["guide"] = {"z": spec["guide"]["z"], "y": spec["guide"]["y"]}
    spec["networks"]["enc"]["inputs"] = ["x"]
    with pytest.raises(SpecError, match="classify_weight.*must read x alone"):
        SVI(SVIConfig(classify_weight=1.0)).init(_build(spec))


# --------------------------------------------------------------------------- few labels


def _labelled(n: int, seed: int = 0, **extra) -> LabelledDataset:
    d = pdata.load(name="digits", labels=n, labels_seed=seed, **extra)
    assert isinstance(d, LabelledDataset)
    return d


@pytest.mark.parametrize("n", [10, 37, 100])
def test_few_labels_keeps_exactly_n_balanced_and_true(n: int) -> None:
    full = pdata.load(name="digits")
    d = _labelled(n)
    kept = (d.train_y >= 0).nonzero()[:, 0]
    assert kept.numel() == n and torch.equal(kept, d.labelled)
    assert bool((d.train_y[d.train_y < 0] == HIDDEN).all())
    assert torch.equal(d.train_y[kept], full.train_y[kept])  # the kept labels are the true ones
    counts = torch.bincount(d.train_y[kept], minlength=10)
    assert int(counts.max() - counts.min()) <= 1 and int(counts.sum()) == n
    if n % 10 == 0:
        assert bool((counts == n // 10).all())
    # validation and test labels are kept; the images are untouched
    assert torch.equal(d.test_y, full.test_y) and torch.equal(d.train_x, full.train_x)


def test_few_labels_same_seed_same_examples() -> None:
    a, b, c = _labelled(50, 3), _labelled(50, 3), _labelled(50, 4)
    assert torch.equal(a.labelled, b.labelled) and torch.equal(a.train_y, b.train_y)
    assert not torch.equal(a.labelled, c.labelled)


def test_few_labels_bad_input() -> None:
    with pytest.raises(SpecError, match="data.labels.*training split has"):
        pdata.load(name="digits", labels=100_000)
    with pytest.raises(SpecError, match="need .* examples of class"):
        choose_labelled(torch.tensor([0, 0, 0, 1]), 4, 2, 0)
    with pytest.raises(SpecError, match="labelled_batch.*set data.labels"):
        pdata.load(name="digits", labelled_batch=4)
    with pytest.raises(SpecError, match="labels"):
        pdata.load(name="toy2d", labels=10)
    with pytest.raises(SpecError, match="only programs"):
        ppgen.load_spec({"family": "vae", "data": {"name": "digits", "labels": 10}})
    # every training label given: any family may train on the labelled examples alone
    assert ppgen.load_spec({"family": "vae", "data": {"name": "digits", "labels": 10, "labelled_only": True}})


def test_labelled_batches_append_kept_examples_and_resume_exactly() -> None:
    d = _labelled(20, labelled_batch=6, binarize="static")
    kept = set(d.labelled.tolist())
    full = list(d.batches(0, 64, seed=5))
    assert len(full) == d.steps_per_epoch(64)
    train_x, _ = d.split("train")
    for xb, yb in full:
        assert xb.shape[0] == 70 and yb.shape[0] == 70
        assert bool((yb[-6:] >= 0).all())
        for row, label in zip(xb[-6:], yb[-6:]):
            idx = [i for i in kept if torch.equal(train_x[i], row)]
            assert idx and any(int(d.train_y[i]) == int(label) for i in idx)
    # every kept example is appended within an epoch (20 kept, 6 per batch, more than 4 batches)
    seen = {i for xb, _ in full for row in xb[-6:] for i in kept if torch.equal(train_x[i], row)}
    assert seen == kept
    tail = list(d.batches(0, 64, seed=5, skip=2))
    for (xa, ya), (xb, yb) in zip(full[2:], tail):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def _id_data(tmp_path: Path, n: int = 400) -> tuple[Path, np.ndarray]:
    """Continuous 3-d data whose first coordinate is the example's id, labels 0..3."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, n)
    x = np.stack([np.arange(n, dtype=np.float32), rng.normal(size=n), rng.normal(size=n)], 1).astype(np.float32)
    path = tmp_path / "ids.npz"
    np.savez(path, x=x, y=y)
    return path, y


def test_no_hidden_label_reaches_the_loss(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every label that reaches the bound or the classification term during a fit is a kept one, on the
    example it belongs to; every other training example arrives with its label hidden."""
    from ppgen.program import labels as plabels

    path, y_true = _id_data(tmp_path)
    spec = {
        "family": "program", "data": {"name": "npz", "path": str(path), "batch_size": 32, "labels": 12,
                                      "labelled_batch": 4},
        "networks": {"dec": {"inputs": ["z", "y"], "hidden": [4]}, "enc": {"inputs": ["x", "y"], "hidden": [4]},
                     "cls": {"inputs": ["x"], "hidden": [4]}},
        "model": {"y": {"dist": "Categorical", "logits": 0.0, "observed": "y"},
                  "z": {"dist": "Normal", "loc": 0.0, "scale": 1.0, "shape": [1]},
                  "x": {"dist": "Normal", "loc": "dec", "scale": 1.0, "observed": "x"}},
        "guide": {"y": {"dist": "Categorical", "logits": "cls"},
                  "z": {"dist": "Normal", "loc": "enc.loc", "scale": "softplus(enc.scale) + 1e-4"}},
    }
    d = pdata.load(spec["data"])
    kept_ids = {int(d.train_x[i, 0]) for i in d.labelled.tolist()}
    train_ids = {int(v) for v in d.train_x[:, 0].tolist()}
    seen: list[tuple[int, int]] = []

    def record(x, y):
        if y is not None:
            seen.extend((int(round(float(a))), int(b)) for a, b in zip(x[:, 0].tolist(), y.tolist()))

    real_fused, real_cls = objective.fused_loss, plabels.classification_loss

    def spy_fused(prog, mods, x, y, *a, **k):
        record(x, y)
        return real_fused(prog, mods, x, y, *a, **k)

    def spy_cls(prog, mods, x, y):
        record(x, y)
        return real_cls(prog, mods, x, y)

    monkeypatch.setattr(objective, "fused_loss", spy_fused)
    monkeypatch.setattr(plabels, "classification_loss", spy_cls)
    ppgen.fit(spec, {"routine": "svi", "classify_weight": 1.0, "epochs": 2}, out=tmp_path / "run", progress=False)
    train_seen = [(i, lab) for i, lab in seen if i in train_ids]
    assert len(train_seen) > 500
    labelled = [(i, lab) for i, lab in train_seen if lab >= 0]
    assert {i for i, _ in labelled} == kept_ids  # every kept label is used, no other
    assert all(lab == int(y_true[i]) for i, lab in labelled)
    assert all(lab == HIDDEN for i, lab in train_seen if i not in kept_ids)
    import json

    env = json.loads((tmp_path / "run" / "env.json").read_text())
    assert env["labelled_examples"] == d.labelled.tolist() == d.kept.tolist()


# --------------------------------------------------------------------------- Bayes' rule


def _two_gaussians(tmp_path: Path, n: int = 20000) -> Path:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, n)
    x = (np.where(y == 1, 1.0, -1.0) + rng.normal(size=n) * math.sqrt(1.25))[:, None].astype(np.float32)
    path = tmp_path / "two.npz"
    np.savez(path, x=x, y=y)
    return path


def _phi(v: float) -> float:
    return 0.5 * (1 + math.erf(v / math.sqrt(2)))


def test_bayes_accuracy_of_known_class_densities_is_the_bayes_optimal_accuracy(tmp_path: Path) -> None:
    """p(y) = 1/2, p(x | y) = N(+-1, 1.25): Bayes' rule picks y = 1 exactly when x > 0. The program's
    bayes_accuracy (exact: no latent) is that rule's accuracy on the test set, within the sampling error
    of Phi(1 / sqrt(1.25)), the Bayes-optimal accuracy. Written with a latent z instead (x | z, y ~
    N(+-1 + z, 0.5^2), z ~ N(0, 1): the same marginal), log p(x | y) is estimated by importance sampling
    and the decisions agree with the exact rule."""
    from ppgen.evaluation.classify import classifier_metrics

    path = _two_gaussians(tmp_path)
    data = {"name": "npz", "path": str(path), "test_fraction": 0.4}
    exact = {"family": "program", "data": data, "params": {"mus": {"shape": [2, 1], "init": [[-1.0], [1.0]]}},
             "model": {"y": {"dist": "Categorical", "logits": 0.0, "observed": "y"},
                       "x": {"dist": "Normal", "loc": "onehot(y, 2) @ mus", "scale": math.sqrt(1.25),
                             "observed": "x"}}}
    d = pdata.load(data)
    x, y = d.split("test")
    rule = ((x[:, 0] > 0).long() == y).double().mean().item()
    optimal = _phi(1 / math.sqrt(1.25))
    se = math.sqrt(optimal * (1 - optimal) / len(y))
    res = classifier_metrics(ppgen.build(exact), x, y)
    assert res["bayes_accuracy"] == rule and res["bayes_k"] == 1
    assert abs(rule - optimal) < 3 * se
    latent = {**exact, "model": {"y": exact["model"]["y"], "z": {"dist": "Normal", "loc": 0.0, "scale": 1.0, "shape": [1]},
                                 "x": {"dist": "Normal", "loc": "onehot(y, 2) @ mus + z", "scale": 0.5, "observed": "x"}},
              # close to the exact posterior N(0.8 (x - mu_y), 0.2), a little too wide
              "guide": {"z": {"dist": "Normal", "loc": "0.8 * (x - onehot(y, 2) @ mus)", "scale": 0.55}}}
    torch.manual_seed(0)
    model = ppgen.build(latent)
    lj = model.class_log_likelihoods(x[:200], k=2000)
    true = torch.distributions.Normal(torch.tensor([-1.0, 1.0]), math.sqrt(1.25)).log_prob(x[:200]) + math.log(0.5)
    torch.testing.assert_close(lj, true, atol=0.02, rtol=0)
    res = classifier_metrics(model, x, y, k=200)
    assert res["bayes_k"] == 200 and "guide_accuracy" not in res
    assert abs(res["bayes_accuracy"] - rule) <= 0.002


def test_guide_accuracy_is_the_guide_classifier() -> None:
    from ppgen.evaluation.classify import classifier_metrics

    model = _build(m2())
    x, y = _x(30), torch.arange(30) % 10
    res = classifier_metrics(model, x, y, k=3)
    with torch.no_grad():
        pred = model.nets["cls"]([x])["out"].argmax(1)
    assert res["guide_accuracy"] == float((pred == y).double().mean())
    assert 0 <= res["bayes_accuracy"] <= 1


# --------------------------------------------------------------------------- ppgen sample --given


@pytest.fixture(scope="module")
def cvae_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("given") / "run"
    spec = m2()
    spec["data"] = {"name": "digits", "limit": 200, "batch_size": 50, "labels": 40, "labelled_batch": 10}
    ppgen.fit(spec, {"routine": "svi", "classify_weight": 1.0, "epochs": 1}, out=out, progress=False)
    return out


def test_sample_given_fixes_the_label(cvae_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "three.png"
    assert main(["sample", str(cvae_run), "--given", "y=3", "-n", "16", "-o", str(out)]) == 0
    assert out.stat().st_size > 0
    model = ppgen.open_run(cvae_run).model
    sites = model.sample_sites(16, given={"y": 3})
    assert bool((sites["y"] == 3).all())
    npz = tmp_path / "three.npz"
    assert main(["sample", str(cvae_run), "--given", "y=3", "-n", "5", "-o", str(npz)]) == 0
    assert np.load(npz)["x"].shape == (5, 1, 8, 8)


@pytest.mark.parametrize("given, message", [
    ("y=12", "out of range; y has classes 0..9"),
    ("y=1.5", "whole number"),
    ("y=abc", "must be a number"),
    ("y3", "expected SITE=VALUE"),
    ("w=1", "no site 'w'"),
    ("y=nan", "finite"),
])
def test_sample_given_bad_input_is_exit_2(cvae_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                          given: str, message: str) -> None:
    assert main(["sample", str(cvae_run), "--given", given, "-o", str(tmp_path / "s.png")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_sample_given_twice_and_family_without_sites(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from ppgen.given import parse_given, samples_given

    with pytest.raises(SpecError, match="given twice"):
        parse_given(["y=1", "y=2"])
    run = SimpleNamespace(model=SimpleNamespace(sample=lambda n: None), spec=SimpleNamespace(family="rbm"))
    with pytest.raises(SpecError, match="the rbm family cannot fix a site"):
        samples_given(run, 4, ["y=1"])


def test_evaluate_reports_both_accuracies(cvae_run: Path, capsys: pytest.CaptureFixture) -> None:
    import json

    assert main(["evaluate", str(cvae_run), "--json", "--k", "2", "--bayes-k", "2", "--limit", "40"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert 0 <= res["bayes_accuracy"] <= 1 and 0 <= res["guide_accuracy"] <= 1 and res["bayes_k"] == 2
    assert main(["evaluate", str(cvae_run), "--bayes-k", "0"]) == 2


def test_labelled_only_trains_on_the_kept_examples() -> None:
    full = _labelled(30)
    d = _labelled(30, labelled_only=True)
    assert torch.equal(d.kept, full.labelled) and d.train_x.shape[0] == 30
    assert torch.equal(d.train_x, full.train_x[full.labelled]) and torch.equal(d.train_y, full.train_y[full.labelled])
    assert bool((d.train_y >= 0).all())
    with pytest.raises(SpecError, match="labelled_only.*set data.labels"):
        pdata.load(name="digits", labelled_only=True)


# --------------------------------------------------------------------------- the zoo specs

ROOT = Path(__file__).resolve().parent.parent
SMALL = ["data.name=digits", "data.limit=300"]


@pytest.mark.parametrize("name, overrides, recipe, expect", [
    ("ssvae", SMALL + ["data.labels=30", "data.labelled_batch=8", "data.batch_size=64"], "inference/ssvae.yaml",
     {"bayes_accuracy", "guide_accuracy", "test_nll_nats", "elbo"}),
    ("ssvae_per_class", SMALL + ["data.labels=30", "data.labelled_batch=8", "data.batch_size=64"],
     "inference/ssvae.yaml", {"bayes_accuracy", "guide_accuracy", "test_nll_nats", "elbo"}),
    ("cvae_classifier", SMALL, None, {"bayes_accuracy", "test_nll_nats", "elbo"}),
    ("autoencoder", SMALL, None, {"objective", "reconstruction_sq_error"}),
])
def test_zoo_label_programs_fit_evaluate_and_draw(name: str, overrides: list[str], recipe: str | None, expect: set[str],
                                                 tmp_path: Path) -> None:
    from ppgen.diagnostics.diagnose import diagnose
    from ppgen.evaluation.evaluate import evaluate

    run = ppgen.fit(ROOT / f"models/{name}.yaml", ROOT / recipe if recipe else None, overrides=overrides, epochs=1,
                    out=tmp_path / "run", progress=False)
    ae = name == "autoencoder"
    res = evaluate(run, k=None if ae else 5, bayes_k=None if ae else 3, limit=40)
    assert expect <= set(res) and all(math.isfinite(res[k]) for k in expect)
    if name == "autoencoder":
        assert "test_nll_nats" not in res and "bayes_accuracy" not in res  # no proposal, no labels
    figures = run.model.figures(run.path / "figures", run.data)
    want = {"ssvae": {"samples_by_class", "style_transfer", "reconstructions"},
            "ssvae_per_class": {"samples_by_class", "reconstructions"},
            "cvae_classifier": {"samples_by_class"},
            "autoencoder": {"code_space", "code_samples", "reconstructions"}}[name]
    assert want <= set(figures) and all(p.exists() for p in figures.values())
    if name == "ssvae":
        assert diagnose(run)["idata"].exists()
    if name == "ssvae_per_class":
        assert "style_transfer" not in figures  # each class reads z its own way


def test_ssvae_per_class_is_ssvae_with_a_decoder_per_class_and_a_small_z() -> None:
    """The zoo's two M2 specs differ in the decoder and the size of z only (and their names)."""
    per_class = ppgen.load_spec(ROOT / "models/ssvae_per_class.yaml")
    m2 = ppgen.load_spec(ROOT / "models/ssvae.yaml", ["name=ssvae_per_class", "networks.decoder.per=y",
                                                      "networks.decoder.inputs=[z]", "model.z.shape=[10]"])
    assert per_class == m2
    assert ppgen.load_spec(ROOT / "models/ssvae.yaml") != per_class


def test_sample_given_a_class_of_a_one_hot_label_site() -> None:
    from types import SimpleNamespace

    from ppgen.given import samples_given

    spec = m2(classify=False)
    spec["model"]["y"] = {"dist": "OneHotCategorical", "logits": 0.0, "observed": "y"}
    model = _build(spec)
    run = SimpleNamespace(model=model, spec=model.spec)
    x = samples_given(run, 4, ["y=7"])
    assert x.shape == (4, 1, 8, 8)
    sites = model.sample_sites(4, given={"y": torch.nn.functional.one_hot(torch.tensor(7), 10).float()})
    assert bool((sites["y"].argmax(-1) == 7).all())
    with pytest.raises(SpecError, match="0..9"):
        samples_given(run, 4, ["y=10"])


def test_autoencoder_with_squared_error_reconstruction() -> None:
    """The squared-error variant the zoo spec describes: -log p(x | z) = ||x - x_hat||^2 + D/2 log(pi)."""
    import yaml

    spec = yaml.safe_load((ROOT / "models/autoencoder.yaml").read_text())
    spec["data"] = {"name": "digits", "binarize": "none"}
    spec["model"]["x"] = {"dist": "Normal", "loc": "sigmoid(decoder)", "scale": 0.70710678, "observed": "x"}
    model = _build(spec, DataInfo((1, 8, 8), "continuous", 10))
    x = torch.rand(4, 1, 8, 8)
    prog, mods = model.program, model._mods()
    terms, genv, _ = passes.run(prog, mods, x, sites.labels(prog, None, 4), sites.Layout(4))
    with torch.no_grad():
        x_hat = torch.sigmoid(mods[0]["decoder"]([genv.values["z"]])["out"])
    log_px = terms.model_local[-1]
    expected = -((x - x_hat) ** 2).sum((1, 2, 3)) - 64 * 0.5 * math.log(math.pi)
    torch.testing.assert_close(log_px.detach(), expected, rtol=1e-5, atol=1e-3)
