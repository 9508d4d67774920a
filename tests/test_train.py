"""The loop: exact resume (after an epoch and mid-epoch after Ctrl-C), NaN handling, data parallelism,
checkpoints that load with weights_only=True."""

from __future__ import annotations

import functools
import os
import signal
import types
from pathlib import Path

import pyro
import pyro.optim
import pytest
import torch

import ppgen
from ppgen.inference.base import Plan
from ppgen.models.vae import VAE
from ppgen.store.checkpoint import CHECKPOINT
from ppgen.spec import SpecError
from ppgen.training.errors import Interrupted, TrainingError

SPEC = {
    "family": "vae",
    "data": {"name": "digits", "batch_size": 64},
    "latent": {"dim": 3},
    "encoder": {"hidden": [32]},
    "decoder": {"hidden": [32]},
}
RECIPE = {"routine": "svi", "elbo": "meanfield", "optimizer": {"lr": 0.003}}


def _params(run) -> dict[str, torch.Tensor]:
    return run.checkpoint["model"]


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_two_epochs_equal_one_plus_resume(tmp_path) -> None:
    straight = ppgen.fit(SPEC, RECIPE, epochs=2, out=tmp_path / "a", seed=7, progress=False)
    ppgen.fit(SPEC, RECIPE, epochs=1, out=tmp_path / "b", seed=7, progress=False)
    resumed = ppgen.fit(SPEC, RECIPE, epochs=2, out=tmp_path / "b", seed=7, resume=True, progress=False)
    _assert_same(_params(straight), _params(resumed))
    # the optimizer's moments too
    sa, sb = straight.checkpoint["routine"]["optimizers"]["main"], resumed.checkpoint["routine"]["optimizers"]["main"]
    for k in sa["state"]:
        _assert_same(sa["state"][k], sb["state"][k])
    epochs_a = [m["loss"] for m in straight.metrics if m["kind"] == "epoch"]
    epochs_b = [m["loss"] for m in resumed.metrics if m["kind"] == "epoch"]
    assert epochs_a == epochs_b
    # a different seed gives a different fit: the comparison above can fail
    other = ppgen.fit(SPEC, RECIPE, epochs=2, out=tmp_path / "c", seed=8, progress=False)
    assert not torch.equal(_params(other)["decoder.0.0.weight"], _params(straight)["decoder.0.0.weight"])


def _fit_interrupted(out: Path, monkeypatch, seed: int, at_call: int) -> None:
    """A 2-epoch fit into ``out`` that receives SIGINT (Ctrl-C) during the ``at_call``-th loss computation."""
    calls = {"n": 0}
    original = VAE.fused_loss

    def ctrl_c(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == at_call:
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(VAE, "fused_loss", ctrl_c)
    with pytest.raises(Interrupted):
        ppgen.fit(SPEC, RECIPE, epochs=2, out=out, seed=seed, progress=False)
    monkeypatch.setattr(VAE, "fused_loss", original)


def test_interrupt_mid_epoch_saves_and_resumes_exactly(tmp_path, monkeypatch) -> None:
    straight = ppgen.fit(SPEC, RECIPE, epochs=2, out=tmp_path / "a", seed=1, progress=False)
    # 22 batches and one validation call in epoch 1, so call 30 is batch 7 of epoch 2
    _fit_interrupted(tmp_path / "b", monkeypatch, seed=1, at_call=30)
    ckpt = torch.load(tmp_path / "b" / CHECKPOINT, weights_only=True)
    assert (ckpt["epoch"], ckpt["batches_done"]) == (1, 7)
    resumed = ppgen.fit(SPEC, RECIPE, epochs=2, out=tmp_path / "b", seed=1, resume=True, progress=False)
    _assert_same(_params(straight), _params(resumed))


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch) -> None:
    ppgen.fit(SPEC, RECIPE, epochs=1, out=tmp_path / "r", progress=False)
    good = torch.load(tmp_path / "r" / CHECKPOINT, weights_only=True)
    calls = {"n": 0}
    original = VAE.fused_loss

    def nan_at_step_5(self, *args, **kwargs):
        calls["n"] += 1
        out = original(self, *args, **kwargs)
        return out * float("nan") if calls["n"] == 5 else out

    monkeypatch.setattr(VAE, "fused_loss", nan_at_step_5)
    with pytest.raises(TrainingError, match=r"nan at epoch 2, batch 5 \(step 27\).*last good checkpoint"):
        ppgen.fit(SPEC, RECIPE, epochs=3, out=tmp_path / "r", resume=True, progress=False)
    after = torch.load(tmp_path / "r" / CHECKPOINT, weights_only=True)
    _assert_same(good["model"], after["model"])
    assert after["epoch"] == 1
    # resuming from there drops the records of the failed epoch: the metrics read as one run
    monkeypatch.setattr(VAE, "fused_loss", original)
    run = ppgen.fit(SPEC, RECIPE, epochs=2, out=tmp_path / "r", resume=True, progress=False)
    steps = [m["step"] for m in run.metrics if m["kind"] == "train"]
    assert steps == sorted(steps) and len(steps) == len(set(steps))


def test_checkpoint_holds_only_plain_data(tmp_path) -> None:
    run = ppgen.fit(SPEC, RECIPE, epochs=1, out=tmp_path / "r", progress=False)
    ckpt = torch.load(run.path / CHECKPOINT, weights_only=True)  # raises if anything would execute
    assert set(ckpt) >= {"model", "routine", "epoch", "batches_done", "rng"}
    model = run.model
    assert set(model.state_dict()) == set(ckpt["model"])
    assert "log_scale" in ckpt["model"]  # registered buffers are saved too


def test_run_folder_contents_and_refusals(tmp_path) -> None:
    run = ppgen.fit(SPEC, {**RECIPE, "snapshots": [1]}, epochs=2, out=tmp_path / "r", progress=False)
    for name in ("spec.yaml", "inference.yaml", "metrics.jsonl", "env.json", CHECKPOINT, "checkpoints/epoch-0001.pt"):
        assert (run.path / name).exists(), name
    assert run.env["seed"] == 0 and len(run.env["data_checksum"]) == 64
    epoch_records = [m for m in run.metrics if m["kind"] == "epoch"]
    assert [m["epoch"] for m in epoch_records] == [1, 2]
    assert all("val_loss" in m for m in epoch_records)
    assert not torch.equal(run.model_at(1).state_dict()["decoder.0.0.weight"], run.model.state_dict()["decoder.0.0.weight"])
    with pytest.raises(SpecError, match="already there"):
        ppgen.fit(SPEC, RECIPE, epochs=1, out=tmp_path / "r", progress=False)
    with pytest.raises(SpecError, match="spec differs"):
        ppgen.fit({**SPEC, "latent": {"dim": 4}}, RECIPE, epochs=3, out=tmp_path / "r", resume=True, progress=False)
    with pytest.raises(SpecError, match="no checkpoint"):
        ppgen.fit(SPEC, RECIPE, epochs=1, out=tmp_path / "new", resume=True, progress=False)


def test_two_processes_end_with_identical_parameters(tmp_path) -> None:
    """Data parallelism over two CPU processes (gloo): the ranks' parameters agree after every epoch,
    and the run differs from a single-process one (each rank saw half the batches)."""
    run = ppgen.fit(SPEC, RECIPE, epochs=2, out=tmp_path / "ddp", devices=2, accelerator="cpu", progress=False)
    records = [m for m in run.metrics if m["kind"] == "epoch"]
    assert len(records) == 2
    for rec in records:
        digests = rec["rank_param_digests"]
        assert len(digests) == 2 and digests[0] == digests[1]
    assert records[-1]["step"] == 2 * (1437 // 64 // 2)
    assert run.env["devices"] == 2
    single = ppgen.fit(SPEC, RECIPE, epochs=2, out=tmp_path / "one", progress=False)
    assert not torch.equal(_params(single)["decoder.0.0.weight"], _params(run)["decoder.0.0.weight"])


def test_nan_from_the_last_update_of_an_epoch_never_reaches_a_checkpoint(tmp_path, monkeypatch) -> None:
    """The loss of a step is computed before its update; an update that makes the weights NaN on the
    last batch of an epoch is caught before the epoch's checkpoint is written."""
    ppgen.fit(SPEC, RECIPE, epochs=1, out=tmp_path / "r", progress=False)
    good = torch.load(tmp_path / "r" / CHECKPOINT, weights_only=True)
    calls = {"n": 0}
    original = VAE.fused_loss

    def nan_gradient_on_last_batch(self, *args, **kwargs):
        calls["n"] += 1
        out = original(self, *args, **kwargs)
        if calls["n"] == 22:  # the 22nd and last batch of epoch 2: finite value, NaN gradient
            out.register_hook(lambda grad: grad * float("nan"))
        return out

    monkeypatch.setattr(VAE, "fused_loss", nan_gradient_on_last_batch)
    with pytest.raises(TrainingError, match="after epoch 2 .* not finite"):
        ppgen.fit(SPEC, RECIPE, epochs=2, out=tmp_path / "r", resume=True, progress=False)
    after = torch.load(tmp_path / "r" / CHECKPOINT, weights_only=True)
    assert after["epoch"] == 1
    _assert_same(good["model"], after["model"])
    import json

    last = json.loads((tmp_path / "r" / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["kind"] == "epoch" and last["val_loss"] is None  # JSON null, not a bare NaN


def test_interrupt_on_the_last_batch_keeps_the_epoch_loss(tmp_path, monkeypatch) -> None:
    straight = ppgen.fit(SPEC, RECIPE, epochs=2, out=tmp_path / "a", seed=3, progress=False)
    _fit_interrupted(tmp_path / "b", monkeypatch, seed=3, at_call=22)  # the last batch of epoch 1
    resumed = ppgen.fit(tmp_path / "b", None, epochs=2, resume=True, progress=False)  # the run folder itself
    a = [(m["epoch"], m["loss"], m["val_loss"]) for m in straight.metrics if m["kind"] == "epoch"]
    b = [(m["epoch"], m["loss"], m["val_loss"]) for m in resumed.metrics if m["kind"] == "epoch"]
    assert len(a) == len(b) == 2
    for ra, rb in zip(a, b):
        assert ra == pytest.approx(rb, rel=1e-12)
    _assert_same(_params(straight), _params(resumed))


def test_resume_names_what_differs_and_keeps_its_own_recipe(tmp_path) -> None:
    iwae = {"routine": "svi", "elbo": "iwae", "num_particles": 3}
    ppgen.fit(SPEC, iwae, epochs=1, out=tmp_path / "r", progress=False)
    with pytest.raises(SpecError, match=r"latent.dim \(3 then, 4 now\)"):
        ppgen.fit({**SPEC, "latent": {"dim": 4}}, None, epochs=2, out=tmp_path / "r", resume=True, progress=False)
    with pytest.raises(SpecError, match=r"elbo \('iwae' then, 'meanfield' now\)"):
        ppgen.fit(SPEC, RECIPE, epochs=2, out=tmp_path / "r", resume=True, progress=False)
    with pytest.raises(SpecError, match="fitted with --devices 1; resume it with --devices 1"):
        ppgen.fit(tmp_path / "r", None, epochs=2, resume=True, devices=2, progress=False)
    run = ppgen.fit(tmp_path / "r", None, epochs=2, resume=True, progress=False)
    assert run.recipe.elbo == "iwae" and run.recipe.epochs == 2
    assert [m["epoch"] for m in run.metrics if m["kind"] == "epoch"] == [1, 2]


def test_bad_data_writes_no_run_folder(tmp_path) -> None:
    with pytest.raises(SpecError):
        ppgen.fit({**SPEC, "data": {"name": "npz", "path": str(tmp_path / "missing.npz")}}, RECIPE,
                  out=tmp_path / "r", progress=False)
    assert not (tmp_path / "r").exists()


def test_two_processes_stop_together_on_a_nan(tmp_path) -> None:
    """A divergence seen by the processes stops all of them with the training error, not a deadlock or
    a child's traceback."""
    with pytest.raises(TrainingError, match="the loss is nan at epoch 1"):
        ppgen.fit(SPEC, {"routine": "svi", "optimizer": {"lr": 1e9}}, epochs=3, out=tmp_path / "r", devices=2,
                  accelerator="cpu", progress=False)


# --------------------------------------------------------------------------- a fit that trains nothing is an error


class _OldRenyi:
    """``elbo: iwae`` with ``fused: false`` as it was: Pyro's RenyiELBO on a model and guide whose
    parameters Pyro could not see, so it returned a number and computed no gradient."""

    def __init__(self, config, plates) -> None:
        self.elbo = pyro.infer.RenyiELBO(alpha=0.0, num_particles=config.num_particles, vectorize_particles=True,
                                         max_plate_nesting=plates)

    def loss(self, model, x, y):
        m = pyro.poutine.scale(functools.partial(VAE.model.__wrapped__, model), scale=1.0 / len(x))
        g = pyro.poutine.scale(functools.partial(VAE.guide.__wrapped__, model), scale=1.0 / len(x))
        return torch.tensor(self.elbo.loss_and_grads(m, g, x, y), requires_grad=True)


def test_a_first_step_that_changes_no_parameter_stops_the_fit(tmp_path, monkeypatch) -> None:
    from ppgen.inference import svi

    monkeypatch.setitem(svi.ELBOS, "iwae", _OldRenyi)
    recipe = {**RECIPE, "elbo": "iwae", "num_particles": 3, "fused": False}
    with pytest.raises(TrainingError, match=r"routine 'svi': step 1 changed none of the parameters it trains "
                                            r"\(encoder\.1\.0\.weight, .*decoder"):
        ppgen.fit(SPEC, recipe, epochs=1, out=tmp_path / "r", progress=False)


@pytest.mark.parametrize("exposed", [True, False])
def test_plain_pyro_svi_on_parameters_pyro_cannot_see_is_caught(tmp_path, monkeypatch, exposed: bool) -> None:
    """A routine that steps with ``pyro.infer.SVI(model.model, model.guide, ...)``: it trains when the
    family exposes its parameters to Pyro, and before they were exposed it changed nothing, which the
    loop now stops at the first step."""
    from ppgen.inference import svi

    def pyro_step(self, state, batch):
        if not hasattr(self, "_pyro_svi"):
            m = state.model
            model = m.model if exposed else functools.partial(VAE.model.__wrapped__, m)
            guide = m.guide if exposed else functools.partial(VAE.guide.__wrapped__, m)
            self._pyro_svi = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": 0.01}), pyro.infer.Trace_ELBO())
        loss = self._pyro_svi.step(batch[0])
        state.step += 1
        return state, {"loss": loss / len(batch[0])}

    monkeypatch.setattr(svi.SVI, "step", pyro_step)
    with pyro.settings.context(module_local_params=False), pyro.get_param_store().scope():
        if exposed:
            ppgen.fit(SPEC, RECIPE, epochs=1, out=tmp_path / "r", progress=False)
        else:
            with pytest.raises(TrainingError, match="routine 'svi': step 1 changed none of the parameters"):
                ppgen.fit(SPEC, RECIPE, epochs=1, out=tmp_path / "r", progress=False)


def test_a_parameter_that_no_step_of_an_epoch_changes_stops_the_fit(tmp_path, monkeypatch) -> None:
    def encoder_only(self, x, elbo, num_particles=1, y=None):
        return self.encoder(x).pow(2).sum()  # the decoder gets no gradient

    monkeypatch.setattr(VAE, "fused_loss", encoder_only)
    with pytest.raises(TrainingError, match=r"no step of epoch 1 \(steps 1 to 22\) changed decoder\.0\.0\.weight, "
                                            r"decoder\.0\.0\.bias, decoder\.0\.2\.weight, decoder\.0\.2\.bias;") as err:
        ppgen.fit(SPEC, RECIPE, epochs=2, out=tmp_path / "r", progress=False)
    assert "encoder" not in str(err.value)


class _Groups:
    """A routine stand-in whose steps train each parameter of the model as a group of its own."""

    def trained_parameters(self, state, since):
        return {n: [n] for n, _ in state.model.named_parameters()}


def test_the_guard_tells_a_converged_parameter_from_one_cut_off() -> None:
    """A full-batch fit at its optimum takes steps below float resolution: a parameter that an optimizer
    steps with a gradient, and that moved before or has a non-zero gradient, is converged, not an error.
    One that no gradient reaches (grad None), that no optimizer steps, or whose gradient is zero and that
    never moved, stops the fit."""
    from ppgen.training.guard import UpdateGuard

    model = torch.nn.Module()
    model.a, model.b, model.c, model.d = (torch.nn.Parameter(torch.ones(2)) for _ in range(4))
    state = types.SimpleNamespace(model=model, step=0,
                                  optimizers={"o": torch.optim.SGD([model.a, model.b, model.c], lr=0.1)})
    guard = UpdateGuard(model, _Groups(), "svi")
    guard.start(0)
    with torch.no_grad():
        model.a.add_(1.0)
        model.b.add_(1.0)
    model.a.grad, model.b.grad, model.c.grad, model.d.grad = torch.ones(2), None, torch.zeros(2), torch.ones(2)
    with pytest.raises(TrainingError, match=r"no step of epoch 1 \(steps 1 to 0\) changed c, d;"):
        guard.check_epoch(state, 1)
    guard.start(10)  # the next epoch: nothing moves
    model.a.grad = torch.full((2,), 1e-30)  # a converged parameter: its step rounds to nothing
    model.b.grad = None  # moved in the first epoch, and since then no gradient reaches it
    with pytest.raises(TrainingError, match=r"changed b, c, d;"):
        guard.check_epoch(state, 2)
    model.b.grad, model.c.grad = torch.zeros(2), torch.ones(2)  # b moved before; c now has a gradient
    with pytest.raises(TrainingError, match=r"changed d;"):  # d has a gradient but no optimizer steps it
        guard.check_epoch(state, 2)
    state.optimizers["o"].add_param_group({"params": [model.d]})
    guard.check_epoch(state, 2)


def test_a_learning_rate_too_small_to_change_the_weights_is_named_as_such(tmp_path) -> None:
    """Updates below float32's precision change nothing; the error says so rather than blaming the objective."""
    recipe = {**RECIPE, "optimizer": {**RECIPE.get("optimizer", {}), "lr": 1e-12}}
    with pytest.raises(TrainingError, match=r"step 1 changed none .* non-zero gradients .*\(learning rate 1e-12\) is "
                                            r"below the precision of the weights.*raise optimizer\.lr") as err:
        ppgen.fit(SPEC, recipe, epochs=1, out=tmp_path / "r", progress=False)
    assert "Check that the objective uses them" not in str(err.value)


def test_routines_say_which_parameters_their_steps_train(tmp_path) -> None:
    from ppgen.inference.adversarial import Adversarial, AdversarialConfig
    from ppgen.inference.layerwise import Layerwise, LayerwiseConfig
    from ppgen.inference.nuts import NUTSConfig, NUTSRoutine
    from ppgen.inference.svi import SVI, SVIConfig

    vae = ppgen.build(SPEC)
    routine = SVI(SVIConfig())
    state = routine.init(vae)
    assert routine.trained_parameters(state, 0) == {}
    state.step = 1
    assert routine.trained_parameters(state, 0) == {n: [n] for n, _ in vae.named_parameters()}

    gan = ppgen.build({"family": "gan", "data": {"name": "toy2d", "distribution": "ring8", "n": 100, "batch_size": 20},
                       "latent": {"dim": 2}, "generator": {"hidden": [8]}, "discriminator": {"hidden": [8]}})
    routine = Adversarial(AdversarialConfig(n_critic=3))
    state = routine.init(gan)
    state.step = 2  # steps 1 and 2 update the critic only; step 3 the generator too
    assert set(routine.trained_parameters(state, 0)) == {"discriminator"}
    state.step = 3
    groups = routine.trained_parameters(state, 2)
    assert set(groups) == {"discriminator", "generator"}
    assert all(n.startswith("generator.") for n in groups["generator"]) and groups["generator"]

    dbn = ppgen.build({"family": "dbn", "hidden": [6, 5], "data": {"name": "digits", "batch_size": 20, "limit": 100}})
    routine = Layerwise(LayerwiseConfig(epochs=4))
    x = ppgen.data.load(dbn.spec.data).split("train")[0]
    state = routine.init(dbn, Plan(x, None, len(x), 20, 10, 4))  # 10 steps per epoch; epochs per layer: 2, 2
    state.step = 20
    assert {n.split(".")[1] for n in routine.trained_parameters(state, 0)} == {"0"}
    state.step = 25
    assert {n.split(".")[1] for n in routine.trained_parameters(state, 15)} == {"0", "1"}

    gmm = ppgen.build({"family": "gmm", "components": 2,
                       "data": {"name": "toymix", "distribution": "duo1d", "n": 40, "batch_size": 100}})
    routine = NUTSRoutine(NUTSConfig())
    state = routine.init(gmm, Plan.of(ppgen.data.load(gmm.spec.data), 100, 4))
    state.step = 3
    assert routine.trained_parameters(state, 0) == {}  # a sampler changes no weights
