"""The command line: the whole path on tiny data, and bad input that exits 2 with a message that says
what to change (never a traceback)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ppgen.cli import main

ROOT = Path(__file__).resolve().parent.parent


def _spec(tmp_path: Path, text: str) -> str:
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    return str(path)


GOOD = """\
family: vae
data: {name: digits, batch_size: 64}
latent: {dim: 2}
encoder: {hidden: [32]}
decoder: {hidden: [32]}
"""


def test_fit_sample_evaluate_diagnose_compare(tmp_path, capsys) -> None:
    spec = _spec(tmp_path, GOOD)
    run = tmp_path / "run"
    assert main(["fit", spec, "--inference", str(ROOT / "inference/svi.yaml"), "--epochs", "2", "--out", str(run),
                 "--set", "inference.optimizer.lr=0.003"]) == 0
    out = capsys.readouterr().out
    for fig in ("samples", "reconstructions", "traversals", "manifold", "training_curves"):
        assert (run / "figures" / f"{fig}.png").exists(), fig
        assert fig in out
    assert "lr: 0.003" in (run / "inference.yaml").read_text()

    assert main(["evaluate", str(run), "--json", "--k", "50"]) == 0
    res = json.loads(capsys.readouterr().out)
    for key in ("test_nll_nats", "test_nll_stderr", "bits_per_dim", "elbo"):
        assert isinstance(res[key], float), key
    assert res["test_nll_nats"] <= -res["elbo"] + 1e-6 + 3 * res["test_nll_mc_stderr"] * 10
    assert res["bits_per_dim"] == pytest.approx(res["test_nll_nats"] / (64 * 0.6931471805599453))
    assert json.loads((run / "evaluation.json").read_text())["test_nll_nats"] == res["test_nll_nats"]

    assert main(["sample", str(run), "-n", "9", "-o", str(tmp_path / "s.npz")]) == 0
    import numpy as np

    assert np.load(tmp_path / "s.npz")["x"].shape == (9, 1, 8, 8)
    assert main(["sample", str(run), "-n", "9"]) == 0
    assert (run / "figures" / "samples-9.png").exists()

    assert main(["diagnose", str(run)]) == 0
    out = capsys.readouterr().out
    assert "z[obs: 0, latent: 0]" in out and (run / "idata.nc").exists()

    assert main(["compare", str(run), str(run), "-o", str(tmp_path / "cmp.png"), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 2 and rows[0]["test_nll_nats"] == res["test_nll_nats"]
    assert (tmp_path / "cmp.png").exists()


@pytest.mark.parametrize(
    "text,sets,expect",
    [
        (GOOD + "laten: {dim: 2}\n", [], "laten: unknown key; accepted keys here: family, name"),
        (GOOD, ["latent.dim=two"], "latent.dim: Input should be a valid integer"),
        (GOOD, ["latent.dim=0"], "latent.dim: Input should be greater than or equal to 1 (got 0)"),
        (GOOD, ["latent.dmi=3"], "latent.dmi: unknown key; accepted keys here: dim, prior"),
        (GOOD, ["latent=3"], "latent: Input should be a valid dictionary"),
        (GOOD, ["latent.dim"], "expected KEY=VALUE"),
        (GOOD, ["data.name=cifar"], "data.name: Input should be 'mnist', 'digits'"),
        (GOOD, ["inference.elbo=iwea"], "elbo: Input should be 'trace', 'meanfield' or 'iwae'"),
        (GOOD, ["inference.elbo=iwae"], "needs num_particles >= 2"),
        ("family: vae\nlatent: {dim: 2\n", [], "YAML syntax error at line 3"),
        ("family: gaan\n", [], "unknown family 'gaan'; accepted families: "),
        ("- just\n- a list\n", [], "expected a mapping"),
        ("family: vae\ndata: {name: npz}\n", [], "data.path is required"),
    ],
)
def test_bad_spec_exits_2_with_message(tmp_path, capsys, text, sets, expect) -> None:
    args = ["fit", _spec(tmp_path, text), "--out", str(tmp_path / "run")]
    for s in sets:
        args += ["--set", s]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert expect in err, err
    assert "Traceback" not in err


def test_corrupt_data_exits_2(tmp_path, capsys) -> None:
    bad = tmp_path / "broken.npz"
    bad.write_bytes(b"PK\x03\x04 this is not a zip file")
    spec = _spec(tmp_path, GOOD.replace("{name: digits, batch_size: 64}", f"{{name: npz, path: {bad}}}"))
    assert main(["fit", spec, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "not a readable .npz file" in err and str(bad) in err


def test_missing_files_and_flags_exit_2(tmp_path, capsys) -> None:
    assert main(["fit", str(tmp_path / "nope.yaml")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path)]) == 2
    assert "not a ppgen run folder" in capsys.readouterr().err
    assert main(["fit", _spec(tmp_path, GOOD), "--epochs", "0", "--out", str(tmp_path / "r")]) == 2
    assert "--epochs: must be at least 1" in capsys.readouterr().err
    assert main(["data", "fetch", "imagenet"]) == 2
    assert main(["fit", str(tmp_path)]) == 2
    assert "is a folder, not a YAML file" in capsys.readouterr().err
    assert main(["fit", _spec(tmp_path, "family: [a]\n")]) == 2
    assert "family must be a name, got ['a']" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["fit"])
    assert exc.value.code == 2


def test_small_test_split_evaluate_limits_and_diagnose(tmp_path, capsys) -> None:
    import numpy as np

    data = tmp_path / "tiny.npz"
    np.savez(data, x=(np.random.default_rng(0).random((40, 1, 4, 4)) > 0.5).astype(np.float32))
    spec = _spec(tmp_path, f"family: vae\ndata: {{name: npz, path: {data}, binarize: static, batch_size: 8}}\n"
                           "latent: {dim: 2}\nencoder: {hidden: [8]}\ndecoder: {hidden: [8]}\n")
    run = tmp_path / "run"
    assert main(["fit", spec, "--epochs", "1", "--out", str(run), "--no-figures"]) == 0
    assert main(["evaluate", str(run), "--limit", "0"]) == 2
    assert "limit: must be at least 1" in capsys.readouterr().err
    assert main(["evaluate", str(run), "--k", "0"]) == 2
    assert main(["evaluate", str(run), "--ais-runs", "10"]) == 2
    assert "only the energy families" in capsys.readouterr().err
    assert main(["evaluate", str(run), "--json", "--limit", "2", "--k", "10"]) == 0
    assert json.loads(capsys.readouterr().out)["n_test"] == 2
    assert main(["diagnose", str(run)]) == 0  # 4 test examples, fewer than the 16 it shows by default
    from ppgen.diagnostics.diagnose import arviz

    assert arviz().from_netcdf(run / "idata.nc").posterior.sizes["obs"] == 4


def test_console_script_list_and_exit_code() -> None:
    exe = Path(sys.executable).parent / "ppgen"
    out = subprocess.run([str(exe), "list"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "vae" in out.stdout and "mnist" in out.stdout and "svi" in out.stdout
    bad = subprocess.run([str(exe), "fit", "missing.yaml"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "missing.yaml: no such file" in bad.stderr


@pytest.mark.parametrize("devices", [1, 2])
def test_ctrl_c_saves_and_exits_130(tmp_path, capsys, devices) -> None:
    """Ctrl-C during training: the checkpoint records the batch reached (the interrupt lands at a step),
    the exit status is 130, and --resume continues; with two processes the parent passes the signal on
    and every process stops at the same step. While the fit runs, a second writer of its folder (another
    fit, a resume, evaluate) is refused with exit 2 naming the fit's process."""
    import signal
    import time

    import torch

    exe = Path(sys.executable).parent / "ppgen"
    run = tmp_path / "run"
    args = [str(exe), "fit", _spec(tmp_path, GOOD), "--epochs", "1000", "--out", str(run), "--no-figures",
            "--devices", str(devices)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 180
    while time.time() < deadline and not (run / "checkpoints" / "last.pt").exists():
        time.sleep(0.2)
    try:
        for second in (["fit", args[2], "--epochs", "1", "--out", str(run), "--no-figures"],
                       ["fit", str(run), "--resume", "--epochs", "2000", "--no-figures"], ["evaluate", str(run)]):
            capsys.readouterr()
            assert main(second) == 2, second
            refused = capsys.readouterr().err
            assert f"{run}: another process is writing this run folder (pid {proc.pid}: ppgen fit" in refused, refused
    except BaseException:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=180)
        raise
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 130, err
    assert "interrupted; saved" in err and "--resume" in err and "Traceback" not in err
    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["epoch"] >= 1 and ckpt["batches_done"] >= 1 and ckpt["world_size"] == devices
    epochs = ckpt["epoch"] + 1
    out = subprocess.run([str(exe), "fit", str(run), "--resume", "--epochs", str(epochs), "--no-figures",
                          "--devices", str(devices)], capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    after = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert (after["epoch"], after["batches_done"]) == (epochs, 0)
