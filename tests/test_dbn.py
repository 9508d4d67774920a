"""Deep belief nets and greedy layer-wise training: the variational bound against enumeration, the Pyro
model/guide against the family's own densities, the Gibbs kernel against the exact p(v), and the
layer-wise routine's schedule, layer order and exact resume."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pyro
import pytest
import torch

import ppgen
from ppgen.data.core import DataInfo
from ppgen.models.energy.partition import all_binary_states
from ppgen.inference.gibbs import GibbsKernel
from ppgen.inference.layerwise import layer_plan, split_epochs
from ppgen.spec import SpecError
from ppgen.plots import families


def tiny_dbn(D: int, hidden: list[int], seed: int = 0, scale: float = 1.2) -> object:
    model = ppgen.build(ppgen.load_spec({"family": "dbn", "hidden": hidden, "data": {"name": "digits"}}),
                        DataInfo((D,), "binary")).double()
    torch.manual_seed(seed)
    with torch.no_grad():
        for layer in model.layers:
            layer.W.normal_(0, scale)
            layer.b.normal_()
            layer.c.normal_()
    return model


@torch.no_grad()
def exact_quantities(model: object, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact log p(v) and the exact ELBO, enumerating every hidden layer below the top."""
    L = model.depth
    log_z = model.top.log_z_exact()
    sizes = [layer.n_hidden for layer in model.layers[:-1]]
    grids = [all_binary_states(n, dtype=torch.float64) for n in sizes]
    combos = torch.cartesian_prod(*[torch.arange(len(g)) for g in grids]) if len(grids) > 1 else torch.arange(len(grids[0])).unsqueeze(1)
    log_p, elbo = [], []
    for row in v:
        joint, q = [], []
        for combo in combos:
            hs = [row.unsqueeze(0)] + [grids[i][int(c)].unsqueeze(0) for i, c in enumerate(combo)]
            joint.append(float(model.log_joint(hs)))
            lq = 0.0
            for i in range(1, L):
                logits = model.layers[i - 1].hidden_logits(hs[i - 1])
                lq += float(torch.distributions.Bernoulli(logits=logits).log_prob(hs[i]).sum())
            q.append(lq)
        joint_t, q_t = torch.tensor(joint, dtype=torch.float64), torch.tensor(q, dtype=torch.float64)
        log_p.append(float(torch.logsumexp(joint_t, 0)) - log_z)
        elbo.append(float((q_t.exp() * (joint_t - q_t)).sum()) - log_z)
    return torch.tensor(log_p, dtype=torch.float64), torch.tensor(elbo, dtype=torch.float64)


def test_split_epochs() -> None:
    assert split_epochs(10, 3) == [4, 3, 3]
    assert split_epochs(3, 3) == [1, 1, 1]
    assert split_epochs(10, 2, [1, 3]) == [3, 7]
    assert sum(split_epochs(17, 4, [1, 2, 3, 5])) == 17
    with pytest.raises(SpecError, match="at least 3 epochs"):
        split_epochs(2, 3)
    with pytest.raises(SpecError, match="one share per layer"):
        split_epochs(5, 2, [1, 1, 1])


@pytest.mark.parametrize("hidden", [[3, 2], [3, 2, 2]])
def test_bound_against_enumeration(hidden: list[int]) -> None:
    """The Monte Carlo bound matches the exact ELBO, lies below the exact log p(v), and the importance-
    weighted estimate from the same draws lies between them."""
    model = tiny_dbn(4, hidden)
    v = all_binary_states(4, dtype=torch.float64)[[1, 6, 11, 15]]
    log_p, elbo = exact_quantities(model, v)
    assert torch.all(elbo < log_p)
    model._stash = []
    torch.manual_seed(0)
    est, se = model.log_likelihood(v, bound_samples=20_000)
    assert torch.all((est - elbo).abs() < 4 * se + 1e-6)
    iw = model._stash[-1][0]
    assert torch.all(iw > est.cpu()) and torch.all(iw < log_p + 0.05)
    extra = model.evaluate_extra(v, None)
    assert extra["test_nll_iw_nats"] == pytest.approx(float(-iw.mean()))


def test_one_layer_dbn_is_an_rbm() -> None:
    model = tiny_dbn(5, [3])
    v = all_binary_states(5, dtype=torch.float64)
    ll, se = model.log_likelihood(v)
    assert float(torch.logsumexp(ll, 0)) == pytest.approx(0.0, abs=1e-9) and torch.all(se == 0)


def test_pyro_model_and_guide_define_the_same_densities() -> None:
    model = tiny_dbn(4, [3, 3, 2], seed=1)
    x = all_binary_states(4, dtype=torch.float64)[[2, 9, 13]]
    torch.manual_seed(0)
    with torch.no_grad():
        guide_tr = pyro.poutine.trace(model.guide).get_trace(x)
        model_tr = pyro.poutine.trace(pyro.poutine.replay(model.model, trace=guide_tr)).get_trace(x)
        guide_tr.compute_log_prob()
        model_tr.compute_log_prob()
        hs = [x, guide_tr.nodes["h1"]["value"], guide_tr.nodes["h2"]["value"]]
        pyro_joint = sum(site["log_prob"] for site in model_tr.nodes.values() if site["type"] == "sample" and "log_prob" in site)
        pyro_q = sum(site["log_prob"] for site in guide_tr.nodes.values() if site["type"] == "sample" and "log_prob" in site)
        ours_q = sum(
            torch.distributions.Bernoulli(logits=model.layers[i - 1].hidden_logits(hs[i - 1])).log_prob(hs[i]).sum(-1)
            for i in (1, 2)
        )
        assert torch.allclose(pyro_joint, model.log_joint(hs), atol=1e-9)
        assert torch.allclose(pyro_q, ours_q, atol=1e-9)


def test_gibbs_kernel_samples_the_dbn_marginal() -> None:
    model = tiny_dbn(3, [2, 2], seed=2).float()
    with torch.no_grad():
        log_z = model.top.log_z_exact()
        V = all_binary_states(3)
        H1 = all_binary_states(2)
        p_v_h = torch.stack([model._visible_dist(0, h.expand(len(V), -1)).log_prob(V) for h in H1], 1)  # (V, H1)
        log_top = -model.top.free_energy(H1) - log_z
        p_v = torch.logsumexp(p_v_h + log_top, 1).exp().double()
    assert float(p_v.sum()) == pytest.approx(1.0, abs=1e-5)
    torch.manual_seed(0)
    mcmc = pyro.infer.MCMC(GibbsKernel(model, parallel=400), num_samples=100, warmup_steps=20, disable_progbar=True)
    mcmc.run()
    v = mcmc.get_samples()["v"].reshape(-1, 3)
    freq = torch.bincount((v.long() * torch.tensor([4, 2, 1])).sum(-1), minlength=8).double() / len(v)
    assert 0.5 * float((freq - p_v).abs().sum()) < 0.02
    assert set(mcmc.get_samples()) == {"v", "h1", "h2"}


def _spec(hidden: list[int], **extra: object) -> dict:
    spec = {"family": "dbn", "hidden": hidden, "data": {"name": "digits", "batch_size": 20, "limit": 100},
            "sampling": {"steps": 10, "chains": 2, "warmup": 5, "draws": 10}, "ais": {"runs": 20, "steps": 100},
            "bound": {"samples": 10}}
    spec.update(extra)
    return spec


def test_layerwise_trains_one_layer_at_a_time(tmp_path: object) -> None:
    from ppgen.training.rng import seed_all

    spec = _spec([6, 5, 4])
    seed_all(0)
    init = ppgen.build(spec)
    recipe = {"routine": "layerwise", "k": 1, "snapshots": [1, 2, 3]}
    run = ppgen.fit(spec, recipe, epochs=3, out=tmp_path / "d", progress=False)
    layers = [m["layer"] for m in run.metrics if m["kind"] == "epoch"]
    assert layers == [0.0, 1.0, 2.0]
    snaps = [run.model_at(e) for e in (1, 2, 3)]
    W = lambda m, i: m.layers[i].W  # noqa: E731
    assert not torch.equal(W(snaps[0], 0), W(init, 0)) and torch.equal(W(snaps[0], 1), W(init, 1))
    assert torch.equal(W(snaps[1], 0), W(snaps[0], 0)) and not torch.equal(W(snaps[1], 1), W(init, 1))
    assert torch.equal(W(snaps[1], 2), W(init, 2)) and not torch.equal(W(snaps[2], 2), W(init, 2))
    # layer 1's visible biases were set from the base rate of the data passed up to it
    assert not torch.equal(snaps[1].layers[1].b, init.layers[1].b)
    with pytest.raises(SpecError, match=r"that fit rbm \(--inference NAME\): cd, pcd"):
        ppgen.fit({"family": "rbm", "hidden": 4, "data": {"name": "digits", "limit": 40}}, recipe, epochs=1,
                  out=tmp_path / "x", progress=False)


def test_layerwise_pcd_resume_is_exact(tmp_path: object) -> None:
    spec = _spec([6, 5])
    recipe = {"routine": "layerwise", "k": 1, "persistent": True, "chains": 9, "momentum_epochs": 1}
    a = ppgen.fit(spec, recipe, epochs=4, out=tmp_path / "a", progress=False)
    ppgen.fit(spec, recipe, epochs=3, out=tmp_path / "b", progress=False)
    b = ppgen.fit(spec, recipe, epochs=4, out=tmp_path / "b", resume=True, progress=False)
    for key, value in a.checkpoint["model"].items():
        assert torch.equal(value, b.checkpoint["model"][key]), key
    ea, eb = a.checkpoint["routine"]["extra"], b.checkpoint["routine"]["extra"]
    assert ea["layer"] == eb["layer"] == 1
    assert torch.equal(ea["chains"]["h"], eb["chains"]["h"]) and ea["chains"]["h"].shape == (9, 5)


def test_extending_a_layerwise_run_with_declared_layer_epochs_is_exact(tmp_path: Path) -> None:
    """With ``layer_epochs`` the plan does not depend on the run's epochs: 4 epochs straight (layer 0 for
    1 epoch, layer 1 for its 2 and one more past the plan) = 1 epoch, then ``--resume --epochs 4``, bit
    for bit, with persistent chains and a linear decay over each layer's epochs."""
    from test_rbm import assert_same_run

    spec = _spec([6, 5])
    recipe = {"routine": "layerwise", "k": 1, "persistent": True, "chains": 9, "layer_epochs": [1, 2],
              "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.5},
              "lr_schedule": {"kind": "linear", "final_factor": 0.3}, "log_every": 2}
    straight = ppgen.fit(spec, recipe, epochs=4, out=tmp_path / "a", progress=False)
    ppgen.fit(spec, recipe, epochs=1, out=tmp_path / "b", progress=False)
    extended = ppgen.fit(tmp_path / "b", None, epochs=4, resume=True, progress=False)
    assert_same_run(straight, extended)
    layers = [m["layer"] for m in straight.metrics if m["kind"] == "epoch"]
    assert layers == [0.0, 1.0, 1.0, 1.0]
    assert straight.checkpoint["routine"]["extra"]["plan"] == {"epochs": 4, "layers": [1, 2]}
    # one number is every layer's epochs; a list must have one per layer
    assert layer_plan(ppgen.load_recipe({"routine": "layerwise", "layer_epochs": 3}), 30, 3) == [3, 3, 3]
    with pytest.raises(SpecError, match="layer_epochs has 2 entries but the model has 3 layers"):
        layer_plan(ppgen.load_recipe(recipe), 4, 3)


def test_extending_a_split_layerwise_run_is_exact_or_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """``epoch_split`` splits the run's epochs: a resume is refused (exit 2, the run folder untouched)
    where the new split would have put an epoch already trained in another layer, or, with a linear
    decay over each layer's epochs, given a layer already trained another length; else it is exact."""
    import yaml

    from ppgen.cli import main
    from ppgen.inference.layerwise import Layerwise

    spec = tmp_path / "dbn.yaml"
    spec.write_text(yaml.safe_dump(_spec([6, 5])))
    for name, schedule, first, then, match in (
        ("moves", {"kind": "constant"}, 2, 4, r"\[1, 1\] for the 2 epochs it was planned for, \[2, 2\] for 4"),
        ("decay", {"kind": "linear", "final_factor": 0.5}, 3, 4, r"other lengths \(\[2, 2\] instead of \[2, 1\]\)"),
    ):
        recipe, run = tmp_path / f"{name}.yaml", tmp_path / name
        recipe.write_text(yaml.safe_dump({"routine": "layerwise", "lr_schedule": schedule}))
        assert main(["fit", str(spec), "--inference", str(recipe), "--epochs", str(first), "--out", str(run)]) == 0
        before = {p: p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file() and p.name != ".lock"}
        capsys.readouterr()
        assert main(["fit", str(run), "--resume", "--epochs", str(then)]) == 2
        err = capsys.readouterr().err
        assert re.search(match, err) and "cannot be extended exactly" in err and "layer_epochs" in err, err
        assert {p: p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file() and p.name != ".lock"} == before
    # the same split under both plans for the epochs done: accepted (test_layerwise_pcd_resume_is_exact
    # shows such a resume is exact)
    cfg = ppgen.load_recipe({"routine": "layerwise", "epochs": 4})
    Layerwise.check_resume(cfg, {"step": 15, "extra": {"plan": {"epochs": 3, "layers": [2, 1]}}}, 5)
    with pytest.raises(SpecError, match="does not record"):
        Layerwise.check_resume(cfg, {"step": 15, "extra": {}}, 5)


def test_dbn_evaluate_sample_figures_diagnostics(tmp_path: object) -> None:
    from ppgen.evaluation.evaluate import evaluate

    run = ppgen.fit(_spec([24, 22]), {"routine": "layerwise", "k": 1}, epochs=2, out=tmp_path / "e", progress=False)
    res = evaluate(run, write=False, limit=30)
    assert res["log_z_method"] == "ais"  # the top RBM is 24 x 22
    assert res["test_nll_iw_nats"] <= res["test_nll_nats"] + 1e-9
    assert res["test_nll_mc_stderr"] >= res["log_z_stderr"]
    model = run.model
    assert model.sample(3).shape == (3, 1, 8, 8)
    idata = model.inference_data(run.data, run.metrics)
    assert "posterior" not in idata.groups() and idata.sample_stats["free_energy"].shape == (2, 10)
    figs = families.figures(model, tmp_path / "figs", run.data)
    assert {"filters", "samples", "gibbs_chains"} <= set(figs)


def test_dbn_spec_errors() -> None:
    with pytest.raises(SpecError, match="hidden"):
        ppgen.load_spec({"family": "dbn", "hidden": []})
    with pytest.raises(SpecError, match="gaussian"):
        ppgen.load_spec({"family": "dbn", "data": {"name": "toy2d"}})
    with pytest.raises(SpecError, match="epoch_split"):
        ppgen.load_recipe({"routine": "layerwise", "epoch_split": [1, 0]})
    with pytest.raises(SpecError, match="not both"):
        ppgen.load_recipe({"routine": "layerwise", "epoch_split": [1, 2], "layer_epochs": [1, 2]})
    for bad in (0, [], [2, 0]):
        with pytest.raises(SpecError, match="layer_epochs must be"):
            ppgen.load_recipe({"routine": "layerwise", "layer_epochs": bad})
    for bad in (True, [1, True], 2.5):
        with pytest.raises(SpecError, match="layer_epochs"):
            ppgen.load_recipe({"routine": "layerwise", "layer_epochs": bad})
    with pytest.raises(SpecError, match="persistent"):
        ppgen.load_recipe({"routine": "layerwise", "chains": 5})
    assert math.isfinite(ppgen.load_recipe({"routine": "layerwise"}).optimizer.lr)


def test_fit_reports_each_layers_final_loss_not_the_top_layers_as_the_runs(tmp_path, capsys) -> None:
    """The last epoch of a layerwise run trains the top layer only: ``ppgen fit`` names each layer's last
    losses rather than printing the top layer's as "the" training loss."""
    import json

    from ppgen.cli import main

    spec = tmp_path / "dbn.json"
    spec.write_text(json.dumps(_spec([6, 5, 4])))
    recipe = tmp_path / "layerwise.json"
    recipe.write_text(json.dumps({"routine": "layerwise", "k": 1, "layer_epochs": [2, 1, 1]}))
    assert main(["fit", str(spec), "--inference", str(recipe), "--epochs", "4", "--out", str(tmp_path / "run"),
                 "--no-figures"]) == 0
    out = capsys.readouterr().out
    epochs = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    epochs = [m for m in epochs if m.get("kind") == "epoch"]
    assert [m["layer"] for m in epochs] == [0.0, 0.0, 1.0, 2.0]
    assert "epoch 4: training loss" not in out
    assert "final losses by layer" in out
    # each named by its kind: the bottom RBM sees binary data, those above it the probabilities below them
    kinds = {1: ("minus pseudo-log-likelihood", " nats per example"), 2: ("squared reconstruction error", " per example"),
             3: ("squared reconstruction error", " per example")}
    for layer, rec, where in ((1, epochs[1], " (bottom)"), (2, epochs[2], ""), (3, epochs[3], " (top)")):
        name, unit = kinds[layer]
        assert (f"layer {layer}{where}: {name} {rec['loss']:.4f}{unit}, {rec['val_loss']:.4f} on the validation data "
                f"(epoch {rec['epoch']})") in out
