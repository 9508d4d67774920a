"""Subnormal floats are flushed to zero while a model trains and the caller's mode is put back after; and
flushing them leaves an M2 step's loss as it was and moves no gradient by more than 1e-30."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import ppgen
from ppgen.training import loop
from ppgen.training.subnormals import flushing, flushing_subnormals

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROOT = Path(__file__).resolve().parent.parent
TINY = torch.finfo(torch.float32).tiny  # the smallest normal float32, 2**-126


def _cpu_can_flush() -> bool:
    if flushing():
        return True
    on = torch.set_flush_denormal(True)
    torch.set_flush_denormal(False)
    return on


@pytest.fixture(autouse=True)
def ieee_mode_around_each_test():
    """Each test starts in the IEEE mode (no flushing), and a failing one cannot leave it changed."""
    before = flushing()
    torch.set_flush_denormal(False)
    yield
    torch.set_flush_denormal(before)


def test_the_block_flushes_and_puts_back_the_mode_it_found() -> None:
    sub = torch.tensor(2e-30) * 1e-10
    assert 0.0 < float(sub) < TINY and not flushing()  # IEEE: a subnormal result
    with flushing_subnormals() as on:
        assert on == _cpu_can_flush() == flushing()
        if on:
            assert float(torch.tensor(2e-30) * 1e-10) == 0.0
            with flushing_subnormals() as inner:  # nested: still on, and the outer block's mode survives it
                assert inner
            assert flushing()
    assert not flushing() and float(torch.tensor(2e-30) * 1e-10) > 0.0
    if _cpu_can_flush():
        torch.set_flush_denormal(True)  # a caller who flushes already keeps flushing after the block
        with flushing_subnormals():
            pass
        assert flushing()


@pytest.mark.parametrize("caller_flushes", [False, True])
def test_fit_flushes_during_its_epochs_and_leaves_the_callers_mode(caller_flushes: bool, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    if caller_flushes and not _cpu_can_flush():
        pytest.skip("this CPU has no flush-to-zero mode")
    torch.set_flush_denormal(caller_flushes)
    seen: list[bool] = []
    run_epoch = loop._run_epoch

    def spy(*args, **kwargs):
        seen.append(flushing())
        return run_epoch(*args, **kwargs)

    monkeypatch.setattr(loop, "_run_epoch", spy)
    ppgen.fit(ROOT / "models" / "cvae_classifier.yaml", overrides=["data.name=digits", "data.limit=200"], epochs=2,
              out=tmp_path / "run", progress=False)
    assert seen == [_cpu_can_flush()] * 2
    assert flushing() == caller_flushes


def _confident_m2() -> tuple[object, torch.Tensor, torch.Tensor]:
    """A small M2 with a decoder per class whose q(y | x) is so sure that many classes get a weight below
    2**-126 (its last layer scaled up), on a batch of mixed hidden and given labels."""
    spec = {
        "family": "program", "data": {"name": "digits"},
        "networks": {"dec": {"inputs": ["z"], "per": "y", "hidden": [16]}, "enc": {"inputs": ["x", "y"], "hidden": [16]},
                     "cls": {"inputs": ["x"], "hidden": [16]}},
        "model": {"y": {"dist": "Categorical", "logits": 0.0, "observed": "y"},
                  "z": {"dist": "Normal", "loc": 0.0, "scale": 1.0, "shape": [3]},
                  "x": {"dist": "Bernoulli", "logits": "dec", "observed": "x"}},
        "guide": {"y": {"dist": "Categorical", "logits": "cls"},
                  "z": {"dist": "Normal", "loc": "enc.loc", "scale": "softplus(enc.scale) + 1e-4"}},
    }
    torch.manual_seed(0)
    model = ppgen.build(spec, ppgen.data.core.DataInfo((1, 8, 8), "binary", 10))
    last = [m for m in model._mods()[0]["cls"].modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight.mul_(400.0)
        last.bias.mul_(400.0)
    x = torch.bernoulli(torch.full((24, 1, 8, 8), 0.3), generator=torch.Generator().manual_seed(1))
    y = torch.tensor([-1] * 20 + [0, 3, 5, 9])
    return model, x, y


def _loss_and_grads(model, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    torch.manual_seed(5)
    loss = model.fused_loss(x, "meanfield", 1, y=y)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_flushing_changes_an_m2_step_by_nothing_float32_shows() -> None:
    if not _cpu_can_flush():
        pytest.skip("this CPU has no flush-to-zero mode")
    model, x, y = _confident_m2()
    with torch.no_grad():
        logq = torch.log_softmax(model._mods()[0]["cls"]([x])["out"], -1)
    weights = logq[:20].exp()
    assert int(((weights > 0) & (weights < TINY)).sum()) >= 20  # hidden-label weights q(y | x) below 2**-126
    ieee_loss, ieee = _loss_and_grads(model, x, y)
    subnormal = sum(int(((g != 0) & (g.abs() < TINY)).sum()) for g in ieee.values())
    assert subnormal > 0  # the case this is about: IEEE arithmetic makes subnormal gradients here
    with flushing_subnormals():
        flushed_loss, flushed = _loss_and_grads(model, x, y)
    assert torch.isfinite(ieee_loss) and torch.equal(flushed_loss, ieee_loss)
    assert flushed.keys() == ieee.keys()
    for name, g in flushed.items():
        assert not ((g != 0) & (g.abs() < TINY)).any(), name
        assert (g - ieee[name]).abs().max() < 1e-30, name
