"""ppgen.training.distributed on one CPU process: the accelerator a fit asks for, gradient averaging's
flat all-reduce (against a stand-in for the other ranks), how a worker's outcome is handed back and
raised, and the collective helpers with Fabric on one device. Fits with two processes are in
tests/test_train.py."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch import nn

from ppgen.spec import SpecError
from ppgen.training import distributed
from ppgen.training.distributed import (FabricRuntime, _raise_outcome, _train_spawned, any_rank, broadcast_parameters,
                                        choose_accelerator, fabric_for, mean_across, param_digest)
from ppgen.training.errors import Interrupted, TrainingError
from ppgen.training.plan import Job

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = {"family": "vae", "data": {"name": "toy2d", "distribution": "ring8", "n": 20}, "latent": {"dim": 1},
        "likelihood": {"kind": "gaussian"}}


def _job(**kw: Any) -> Job:
    return Job(spec=TINY, recipe={"routine": "svi"}, out="", seed=0, epochs=1, resume=False, progress=False, **kw)


# --------------------------------------------------------------------------- the accelerator


@pytest.fixture
def no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


@pytest.fixture
def two_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


def test_auto_is_cuda_where_there_is_one_and_the_cpu_otherwise(no_gpu: None, monkeypatch: pytest.MonkeyPatch) -> None:
    assert choose_accelerator("auto", 1) == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert choose_accelerator("auto", 1) == "cuda"


def test_gpu_is_another_name_for_cuda(two_gpus: None) -> None:
    assert choose_accelerator("gpu", 2) == "cuda" and choose_accelerator("cuda", 1) == "cuda"


@pytest.mark.parametrize("name", ["cuda", "gpu"])
def test_cuda_where_there_is_none_is_refused(no_gpu: None, name: str) -> None:
    with pytest.raises(SpecError) as err:
        choose_accelerator(name, 1)
    assert str(err.value) == "--device cuda: no CUDA device is available here; use --device cpu"


def test_mps_where_there_is_none_is_refused(no_gpu: None, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SpecError) as err:
        choose_accelerator("mps", 1)
    assert str(err.value) == "--device mps: no Apple MPS device is available here; use --device cpu"
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert choose_accelerator("mps", 1) == "mps"
    with pytest.raises(SpecError, match=r"^--devices 2: at most 1 processes here \(one per device\)$"):
        choose_accelerator("mps", 2)


@pytest.mark.parametrize("name", ["tpu", "CPU", "", "cuda:0"])
def test_an_unknown_device_is_refused_with_those_accepted(name: str) -> None:
    with pytest.raises(SpecError) as err:
        choose_accelerator(name, 1)
    assert str(err.value) == f"--device: expected cpu, cuda, mps or auto, got {name!r}"


@pytest.mark.parametrize("devices", [0, -1])
def test_fewer_than_one_process_is_refused(devices: int) -> None:
    with pytest.raises(SpecError) as err:
        choose_accelerator("cpu", devices)
    assert str(err.value) == f"--devices: must be at least 1, got {devices}"


def test_at_most_one_process_per_core_or_gpu(two_gpus: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(distributed.os, "cpu_count", lambda: 4)
    assert choose_accelerator("cpu", 4) == "cpu"
    with pytest.raises(SpecError, match=r"^--devices 5: at most 4 processes here \(one per CPU core\)$"):
        choose_accelerator("cpu", 5)
    monkeypatch.setattr(distributed.os, "cpu_count", lambda: None)  # unknown: two processes are still allowed
    assert choose_accelerator("cpu", 2) == "cpu"
    with pytest.raises(SpecError, match=r"^--devices 3: at most 2 processes here \(one per CPU core\)$"):
        choose_accelerator("cpu", 3)
    with pytest.raises(SpecError, match=r"^--devices 3: at most 2 processes here \(one per GPU\)$"):
        choose_accelerator("cuda", 3)


# --------------------------------------------------------------------------- gradient averaging


class OtherRanks:
    """Fabric as seen from rank 0 of ``world_size`` whose other ranks hold zero gradients: the mean is the
    local gradient over the world size. Records what it was asked."""

    def __init__(self, world_size: int) -> None:
        self.world_size, self.global_rank, self.device = world_size, 0, torch.device("cpu")
        self.calls: list[tuple[torch.Tensor, str]] = []

    def all_reduce(self, t: torch.Tensor, reduce_op: str) -> torch.Tensor:
        self.calls.append((t.clone(), reduce_op))
        return t / self.world_size if reduce_op == "mean" else t


def _net_with_grads() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 1), nn.Linear(1, 1))
    net[1](net[0](torch.randn(4, 3))).sum().backward()  # the last layer gets no gradient
    return net


def test_one_process_leaves_gradients_alone_and_calls_nothing() -> None:
    net = _net_with_grads()
    before = [None if p.grad is None else p.grad.clone() for p in net.parameters()]
    fabric = OtherRanks(1)
    FabricRuntime(fabric).reduce_gradients(net.parameters())
    assert fabric.calls == []
    assert all((a is None and p.grad is None) or torch.equal(a, p.grad) for a, p in zip(before, net.parameters()))


def test_gradients_are_averaged_in_one_flat_call_and_put_back_in_place() -> None:
    net = _net_with_grads()
    grads = [p.grad for p in net.parameters()]
    expected = [None if g is None else g / 4 for g in grads]
    fabric = OtherRanks(4)
    runtime = FabricRuntime(fabric)
    assert (runtime.rank, runtime.world_size, runtime.device) == (0, 4, torch.device("cpu"))
    runtime.reduce_gradients(net.parameters())
    (flat, op), = fabric.calls
    assert op == "mean" and flat.shape == (3 * 2 + 2 + 2 * 1 + 1,)  # the two layers with gradients, in order
    assert torch.equal(flat, torch.cat([g.reshape(-1) for g in grads if g is not None]) * 4)
    for p, g, e in zip(net.parameters(), grads, expected):
        assert p.grad is g  # the same tensors, written in place
        assert (e is None and p.grad is None) or torch.equal(p.grad, e)


def test_no_gradient_at_all_calls_nothing() -> None:
    fabric = OtherRanks(2)
    FabricRuntime(fabric).reduce_gradients(nn.Linear(2, 2).parameters())
    assert fabric.calls == []


def test_backward_fills_the_gradients() -> None:
    w = nn.Parameter(torch.tensor([2.0, 3.0]))
    FabricRuntime(OtherRanks(1)).backward((w ** 2).sum())
    assert torch.equal(w.grad, torch.tensor([4.0, 6.0]))


# --------------------------------------------------------------------------- a worker's outcome


def test_a_worker_hands_back_how_it_stopped_as_plain_data() -> None:
    fabric = OtherRanks(1)
    seen: list[Any] = []

    def outcome(error: BaseException | None) -> Any:
        def train(f: Any, job: Job, data: Any) -> None:
            seen.append((f, data.train_x.shape))
            if error is not None:
                raise error
        return _train_spawned(fabric, _job(), train)

    assert outcome(None) is None
    assert seen[0][0] is fabric and seen[0][1][1:] == (2,)  # the job's data, loaded in the worker
    assert outcome(Interrupted(Path("run/checkpoints/last.pt"))) == ("interrupted", "run/checkpoints/last.pt")
    assert outcome(KeyboardInterrupt()) == ("interrupted_unsaved", "")
    assert outcome(SpecError("data.n: bad")) == ("spec", "data.n: bad")
    assert outcome(TrainingError("the loss is nan")) == ("training", "the loss is nan")
    with pytest.raises(ZeroDivisionError):  # a bug is not bad input: it stays an exception
        outcome(ZeroDivisionError("x"))


def test_the_parent_raises_what_the_worker_stopped_with() -> None:
    _raise_outcome(None)
    with pytest.raises(Interrupted) as err:
        _raise_outcome(("interrupted", "run/checkpoints/last.pt"))
    assert err.value.path == Path("run/checkpoints/last.pt") and "continue with --resume" in str(err.value)
    with pytest.raises(KeyboardInterrupt):
        _raise_outcome(("interrupted_unsaved", ""))
    with pytest.raises(SpecError) as spec_err:
        _raise_outcome(("spec", "data.n: bad"))
    assert str(spec_err.value) == "data.n: bad"
    with pytest.raises(TrainingError) as train_err:
        _raise_outcome(("training", "the loss is nan"))
    assert str(train_err.value) == "the loss is nan"


# --------------------------------------------------------------------------- across ranks, on one


@pytest.fixture(scope="module")
def fabric() -> Any:
    return fabric_for(_job())


def test_one_device_is_fabric_on_the_cpu_as_rank_0_of_1(fabric: Any) -> None:
    assert (fabric.world_size, fabric.global_rank, fabric.device) == (1, 0, torch.device("cpu"))


def test_any_rank_and_the_mean_on_one_process(fabric: Any) -> None:
    assert any_rank(fabric, True, False, True) == [True, False, True]
    assert any_rank(fabric) == []
    assert mean_across(fabric, 3.0, 2) == 1.5
    assert math.isnan(mean_across(fabric, 0.0, 0))


def test_the_mean_across_ranks_weighs_each_by_its_count() -> None:
    class Summing(OtherRanks):
        def all_reduce(self, t: torch.Tensor, reduce_op: str) -> torch.Tensor:
            assert reduce_op == "sum" and t.dtype == torch.float64
            return t + torch.tensor([9.0, 1.0], dtype=torch.float64)  # another rank: one batch, loss 9

    assert mean_across(Summing(2), 3.0, 2) == 4.0  # (3 + 9) / (2 + 1), not the mean of the two means (5.25)


def test_any_rank_sees_a_flag_raised_on_another_rank() -> None:
    class OneOtherRaised(OtherRanks):
        def all_reduce(self, t: torch.Tensor, reduce_op: str) -> torch.Tensor:
            return t + torch.tensor([0.0, 1.0])

    assert any_rank(OneOtherRaised(2), False, False) == [False, True]


def test_broadcast_on_one_process_changes_nothing(fabric: Any) -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    broadcast_parameters(fabric, net)
    assert all(torch.equal(net.state_dict()[k], v) for k, v in before.items())


def test_param_digest_is_the_sha256_of_names_and_bytes_in_name_order() -> None:
    net = nn.Linear(2, 1)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[1.0, 2.0]]))
        net.bias.fill_(0.5)
    h = hashlib.sha256()
    h.update(b"bias" + torch.tensor([0.5]).numpy().tobytes() + b"weight" + torch.tensor([1.0, 2.0]).numpy().tobytes())
    assert param_digest(net) == h.hexdigest()[:16]
    other = nn.Linear(2, 1)
    other.load_state_dict(net.state_dict())
    assert param_digest(other) == param_digest(net)
    with torch.no_grad():
        other.bias.add_(1e-7)
    assert param_digest(other) != param_digest(net)
