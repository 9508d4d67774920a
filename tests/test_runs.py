"""ppgen.store.folder: whole-file writes, the run folder's lock (kill -9, spawned workers), checkpoint digests and
checks, and the readers of metrics.jsonl and JSON files."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ppgen.cli import main
from ppgen.store.atomic import atomic_save, atomic_write, atomic_write_text
from ppgen.store.checkpoint import CHECKPOINT_FORMAT, load_checkpoint, seal, tensor_digest
from ppgen.store.lock import InheritedLock, check_unlocked, run_lock
from ppgen.store.records import read_json_object, read_metrics
from ppgen.spec import SpecError

ROOT = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------- whole-file writes


def test_a_write_cut_short_leaves_the_old_file_whole(tmp_path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text("family: vae\n")

    def half_then_crash(f) -> None:
        f.write(b"family: ")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, half_then_crash)
    assert path.read_text() == "family: vae\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.yaml"]


def test_a_link_at_the_path_or_at_the_temporary_name_is_never_written_through(tmp_path) -> None:
    target = tmp_path / "precious"
    target.write_text("keep me\n")
    run = tmp_path / "run"
    run.mkdir()
    (run / "spec.yaml").symlink_to(target)
    (run / "env.json.tmp").symlink_to(target)
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.pt.tmp").symlink_to(target)
    atomic_write_text("family: vae\n", run / "spec.yaml")
    atomic_write_text("{}\n", run / "env.json")
    atomic_save({"a": torch.ones(2)}, run / "checkpoints" / "last.pt")
    assert target.read_text() == "keep me\n"
    assert not (run / "spec.yaml").is_symlink() and (run / "spec.yaml").read_text() == "family: vae\n"
    assert (run / "env.json").read_text() == "{}\n" and not (run / "env.json.tmp").exists()
    assert torch.equal(torch.load(run / "checkpoints" / "last.pt", weights_only=True)["a"], torch.ones(2))


# --------------------------------------------------------------------------- checkpoints


def _good() -> dict:
    state = {"step": 3, "optimizers": {}, "extra": {}}
    rng = [{"torch": torch.zeros(3, dtype=torch.uint8), "numpy": torch.zeros(3, dtype=torch.int64),
            "python": torch.zeros(3, dtype=torch.int64)}]
    return {"model": {"w": torch.arange(6.0).reshape(2, 3), "n": torch.tensor(2)}, "routine": state, "epoch": 1,
            "batches_done": 0, "epoch_loss_sum": 0.0, "epoch_loss_count": 0, "rng": rng, "world_size": 1, "seed": 0,
            "family": "vae", "spec": {"family": "vae"}, "recipe": {"routine": "svi"}}


def test_the_digest_covers_values_dtypes_shapes_keys_and_order_free_mappings() -> None:
    base = tensor_digest(_good())
    assert base == tensor_digest(_good()) and len(base) == 64
    assert tensor_digest({"b": 1, "a": 2}) == tensor_digest({"a": 2, "b": 1})
    variants = [
        {"w": torch.arange(6.0).reshape(3, 2)},
        {"w": torch.arange(6.0, dtype=torch.float64).reshape(2, 3)},
        {"w": torch.arange(6.0).reshape(2, 3) + 1e-7},
        {"v": torch.arange(6.0).reshape(2, 3)},
    ]
    for model in variants:
        assert tensor_digest({**_good(), "model": {**model, "n": torch.tensor(2)}}) != base
    for key, value in (("epoch", 2), ("seed", 1), ("epoch_loss_sum", 1e-300), ("spec", {"family": "gan"})):
        assert tensor_digest({**_good(), key: value}) != base, key
    assert tensor_digest([1]) != tensor_digest([True]) != tensor_digest([1.0]) != tensor_digest(["1"])
    with pytest.raises(TypeError, match="tensors and plain values only"):
        tensor_digest({"x": object()})


def test_a_sealed_checkpoint_loads_and_every_check_names_the_file(tmp_path) -> None:
    path = tmp_path / "last.pt"
    torch.save(seal(_good()), path)
    ckpt = load_checkpoint(path, "vae")
    assert ckpt["format"] == CHECKPOINT_FORMAT and ckpt["digest"] == tensor_digest(
        {k: v for k, v in ckpt.items() if k != "digest"})
    with pytest.raises(SpecError, match=rf"{path}: a checkpoint of the 'vae' family, not of 'gan'"):
        load_checkpoint(path, "gan")
    cases = [
        (lambda c: c.update(epoch=True), r"'epoch' must be a whole number"),
        (lambda c: c.update(world_size=0), r"'world_size' must be the number of processes"),
        (lambda c: c.update(world_size=2), r"holds 1 random-number states for 2 processes"),
        (lambda c: c.update(epoch_loss_sum=float("nan")), r"'epoch_loss_sum' must be a finite number"),
        (lambda c: c["model"].update(w="text"), r"'model' must be a mapping of tensor names to tensors"),
        (lambda c: c.update(spec={"family": "gan"}), r"records family 'vae' but a spec of family 'gan'"),
        (lambda c: c["routine"]["extra"].update(chains=torch.tensor([float("inf")])),
         r"the tensor routine\.extra\.chains holds NaN or infinite"),
        (lambda c: c.pop("recipe"), r"it has no 'recipe'"),
    ]
    for edit, message in cases:
        bad = _good()
        edit(bad)
        torch.save(seal(bad), path)
        with pytest.raises(SpecError, match=rf"{path}: .*{message}"):
            load_checkpoint(path)
    edited = seal(_good())
    edited["model"]["w"][0, 0] = 7.0
    torch.save(edited, path)
    with pytest.raises(SpecError, match="do not match the digest"):
        load_checkpoint(path)


def test_a_malicious_pickle_is_refused_without_running(tmp_path) -> None:
    import pickle

    class Boom:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'ran'}",))

    path = tmp_path / "last.pt"
    path.write_bytes(pickle.dumps({"model": Boom()}))
    with pytest.raises(SpecError, match="not a readable ppgen checkpoint"):
        load_checkpoint(path)
    assert not (tmp_path / "ran").exists()


# --------------------------------------------------------------------------- metrics and JSON files


def test_metrics_reader(tmp_path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b'{"kind": "train", "step": 1, "loss": 2.0}\n{"kind": "epoch", "epoch": 1, "step": 1, "loss": null}\n{"kind": "tra')
    assert [m["kind"] for m in read_metrics(path)] == ["train", "epoch"]  # a last line cut short is skipped
    for line, message in ((b"\xff\xfe", "line 1 is not a JSON record"), (b'"text"', "line 1 is a JSON str"),
                          (b'{"kind": 3}', "line 1 has a kind that is not a name"),
                          (b'{"kind": "train", "step": -1}', "line 1 has step -1"),
                          (b'{"kind": "epoch", "step": 2, "epoch": 1, "loss": "low"}', "line 1 has loss 'low'"),
                          (b'{"kind": "train"}', "line 1 is a train record without a step")):
        path.write_bytes(line + b'\n{"kind": "train", "step": 1}\n')
        with pytest.raises(SpecError, match=rf"{path}: {message}"):
            read_metrics(path)


def test_json_object_reader(tmp_path) -> None:
    path = tmp_path / "evaluation.json"
    assert read_json_object(path) is None
    path.write_text('{"a": 1}')
    assert read_json_object(path) == {"a": 1}
    for raw, message in ((b"{\x00", "not a readable JSON file"), (b"\xff", "not a readable JSON file"),
                         (b"[]", "holds a JSON list, not an object")):
        path.write_bytes(raw)
        with pytest.raises(SpecError, match=rf"{path}: {message}"):
            read_json_object(path)


# --------------------------------------------------------------------------- the lock

HOLD = """
import sys, time
from ppgen.store.lock import run_lock
with run_lock(sys.argv[1], "a test holder"):
    print("locked", flush=True)
    time.sleep(600)
"""


def _holder(folder: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_the_lock_refuses_a_second_writer_naming_it_and_dies_with_kill_9(tmp_path, capsys) -> None:
    run = tmp_path / "run"
    spec = tmp_path / "spec.yaml"
    spec.write_text("family: vae\ndata: {name: digits, batch_size: 64}\nlatent: {dim: 2}\n"
                    "encoder: {hidden: [16]}\ndecoder: {hidden: [16]}\n")
    proc = _holder(run)
    try:
        argv = ["fit", str(spec), "--epochs", "1", "--out", str(run), "--no-figures"]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert f"{run}: another process is writing this run folder (pid {proc.pid}: a test holder" in err, err
        assert sorted(p.name for p in run.iterdir()) == [".lock"]  # nothing written
        with pytest.raises(SpecError, match=f"pid {proc.pid}"):
            with run_lock(run, "second"):
                pass
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    assert main(argv) == 0, capsys.readouterr().err  # kill -9 left no stale lock
    proc = _holder(run)
    try:
        assert main(["evaluate", str(run), "--k", "2", "--limit", "4"]) == 2
        assert f"pid {proc.pid}" in capsys.readouterr().err
        for argv in (["fit", str(run), "--resume", "--epochs", "2", "--no-figures"], ["diagnose", str(run)],
                     ["sample", str(run), "-n", "2"]):
            assert main(argv) == 2, argv
            assert f"pid {proc.pid}" in capsys.readouterr().err
        assert not (run / "evaluation.json").exists() and not (run / "idata.nc").exists()
        assert not (run / "figures" / "samples-2.png").exists()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()


def test_the_lock_is_reentrant_within_a_process_and_refuses_a_link(tmp_path) -> None:
    with run_lock(tmp_path / "r", "outer") as fd:
        with run_lock(tmp_path / "r", "inner") as again:
            assert again == fd
        check_unlocked(tmp_path / "r")  # held by this process: not a second writer
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / ".lock").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(SpecError, match=r"\.lock: cannot open the run folder's lock file"):
        with run_lock(tmp_path / "s", "x"):
            pass
    assert not (tmp_path / "elsewhere").exists()
    (tmp_path / "file").write_text("")
    with pytest.raises(SpecError, match="cannot make the run folder there"):
        with run_lock(tmp_path / "file" / "run", "x"):
            pass


def test_spawned_workers_hold_the_lock_while_they_live(tmp_path) -> None:
    """The descriptor travels to spawned processes (as for ``--devices 2``): if the parent dies first,
    its workers still hold the lock until they end."""
    ctx = multiprocessing.get_context("spawn")
    with run_lock(tmp_path, "fit") as fd:
        worker = ctx.Process(target=time.sleep, args=(600,), daemon=True)
        worker.lock = InheritedLock(fd)  # pickled with the process object
        worker.start()
    try:
        deadline = time.time() + 60
        while time.time() < deadline:  # wait until the worker has taken its descriptor
            try:
                check_unlocked(tmp_path)
            except SpecError:
                break
            time.sleep(0.1)
        with pytest.raises(SpecError, match="another process is writing this run folder"):
            check_unlocked(tmp_path)
    finally:
        worker.kill()
        worker.join()
    check_unlocked(tmp_path)
    with run_lock(tmp_path, "after"):
        pass


def test_the_lock_file_says_who_holds_it(tmp_path) -> None:
    with run_lock(tmp_path, "ppgen evaluate"):
        info = json.loads((tmp_path / ".lock").read_text())
    assert info["pid"] == os.getpid() and info["action"] == "ppgen evaluate"


@pytest.mark.slow
def test_kill_9_of_a_two_process_fit_keeps_the_lock_while_its_workers_live(tmp_path, capsys) -> None:
    """``--devices 2``: kill -9 of the process the user started leaves its workers writing; they hold the
    lock until they end, after which the folder is free and its checkpoint whole."""
    exe = Path(sys.executable).parent / "ppgen"
    run = tmp_path / "run"
    spec = tmp_path / "spec.yaml"
    spec.write_text("family: vae\ndata: {name: digits, batch_size: 64}\nlatent: {dim: 2}\n"
                    "encoder: {hidden: [16]}\ndecoder: {hidden: [16]}\n")
    proc = subprocess.Popen([str(exe), "fit", str(spec), "--epochs", "1000", "--out", str(run), "--no-figures",
                             "--devices", "2"], start_new_session=True, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and not (run / "checkpoints" / "last.pt").exists():
            time.sleep(0.2)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert main(["evaluate", str(run)]) == 2
        assert f"pid {proc.pid}: ppgen fit" in capsys.readouterr().err
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
    deadline = time.time() + 60
    while True:
        try:
            check_unlocked(run)
            break
        except SpecError:
            assert time.time() < deadline, "the lock outlived the processes"
            time.sleep(0.2)
    assert load_checkpoint(run / "checkpoints" / "last.pt", "vae")["world_size"] == 2
