"""An RBM with 500 hidden units on MNIST and its test log-likelihood by AIS, at the budget a CPU allows.

Fits ``models/rbm.yaml`` (784-500, dynamically binarized MNIST) with CD-1 (``inference/cd.yaml``) and
with PCD-1 (``inference/pcd.yaml``) for the same number of epochs, each through ``ppgen.fit``, then
runs ``ppgen.evaluation.evaluate`` on the 10,000 test images: log Z by annealed importance sampling from the
base-rate model (Salakhutdinov & Murray 2008) with its standard error and the +-3 sd interval, and the
test NLL in nats. For comparison, S&M 2008 report -125.53 (CD-1, 500 hidden),
-105.50 (CD-3), -86.34 (CD-25) nats after long training; CD-25 at 500 hidden is what a GPU is for:

    cp inference/cd.yaml cd25.yaml  # and set k: 25
    ppgen fit models/rbm.yaml --inference cd25.yaml --epochs 100

    python benchmarks/rbm_ais.py            # 10 epochs each, AIS 100 runs x 10,000 steps
    python benchmarks/rbm_ais.py --quick    # 2 epochs each, AIS 100 runs x 1,000 steps
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from machine import cpu_model, load_average, logical_cpus  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--ais-steps", type=int, default=None)
    p.add_argument("--ais-runs", type=int, default=100)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quality-samples", type=int, default=1000,
                   help="samples (and test images) for the FID; 1,000 keeps the stored rows comparable")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "rbm_ais.md"))
    args = p.parse_args()
    epochs = args.epochs or (2 if args.quick else 10)
    steps = args.ais_steps or (1000 if args.quick else 10_000)
    torch.set_num_threads(args.threads)

    import ppgen
    from ppgen.evaluation.evaluate import evaluate

    load0 = load_average()
    rows = []
    for label, recipe in (("CD-1", "inference/cd.yaml"), ("PCD-1", "inference/pcd.yaml")):
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            run = ppgen.fit(ROOT / "models" / "rbm.yaml", ROOT / recipe, epochs=epochs, out=Path(tmp) / "run", seed=0,
                            progress=False)
            fit_s = time.perf_counter() - t
            last = [m for m in run.metrics if m["kind"] == "epoch"][-1]
            t = time.perf_counter()
            res = evaluate(run, write=False, ais_runs=args.ais_runs, ais_steps=steps, seed=0,
                           quality_samples=args.quality_samples)
            eval_s = time.perf_counter() - t
            # the same estimate with a tenth of the intermediate distributions: AIS has converged where
            # the two agree within their errors
            torch.manual_seed(1)
            short = run.model.log_partition(run.data, args.ais_runs, max(10, steps // 10), "ais")
            res["log_z_short"], res["log_z_short_stderr"] = short.value, short.stderr
            rows.append((label, recipe, fit_s, eval_s, last, res))
            print(label, {k: res[k] for k in ("test_nll_nats", "log_z", "log_z_stderr")}, f"fit {fit_s:.0f}s eval {eval_s:.0f}s",
                  file=sys.stderr)
    load1 = load_average()

    lines = [
        "# RBM (784-500) on MNIST: test NLL by AIS",
        "",
        f"Command: `python benchmarks/rbm_ais.py{' --quick' if args.quick else ''}"
        f"{'' if args.quality_samples == 1000 else f' --quality-samples {args.quality_samples}'}`, {time.strftime('%Y-%m-%d')}, on a shared "
        f"{logical_cpus()}-core CPU ({cpu_model()}; load average {load0[0]:.1f} at the start, {load1[0]:.1f} at the "
        "end: "
        f"other processes ran at the same time), {args.threads} torch thread(s), torch {torch.__version__}.",
        "",
        f"`models/rbm.yaml` (500 hidden units, dynamically binarized MNIST, batch 100, weight decay 2e-4) fitted for "
        f"{epochs} epochs by each recipe as shipped (SGD with momentum 0.5; CD: lr 0.01; PCD: lr 0.05 decaying "
        "linearly to a tenth). log Z by AIS from the "
        f"data's base-rate model with {args.ais_runs} runs x {steps} intermediate distributions; the test NLL is the "
        "mean of F(v) + log Z over the 10,000 test images (nats; lower is better).",
        "",
        f"| recipe | epochs | fit s | val pseudo-NLL | log Z (AIS) | log Z stderr | log Z +-3 sd | log Z with {max(10, steps // 10)} steps | test NLL (nats) | test NLL stderr (data) | FID (classifier) | evaluate s |",
        "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for label, recipe, fit_s, eval_s, last, res in rows:
        fid = f"{res['fid_classifier']:.1f}" if "fid_classifier" in res else "n/a"
        lines.append(
            f"| {label} (`{recipe}`) | {epochs} | {fit_s:.0f} | {last['val_loss']:.2f} | {res['log_z']:.2f} | "
            f"{res['log_z_stderr']:.3f} | [{res['log_z_lo']:.2f}, {res['log_z_hi']:.2f}] | "
            f"{res['log_z_short']:.2f} ± {res['log_z_short_stderr']:.2f} | {res['test_nll_nats']:.2f} | "
            f"{res['test_nll_stderr']:.2f} | {fid} | {eval_s:.0f} |"
        )
    lines += [
        "",
        "Reference (Salakhutdinov & Murray 2008, 500 hidden units, long training): CD-1 125.53, CD-3 105.50, "
        "CD-25 86.34 nats. AIS with too few intermediate distributions underestimates log Z on average, which makes "
        "the test NLL look better than it is; the +-3 sd interval is S&M's. FID (classifier): `ppgen evaluate`'s "
        f"Frechet distance in the MNIST classifier's feature space of {args.quality_samples:,} samples (E[v | h] after "
        f"1,000 Gibbs steps from random states) against as many test images (`--quality-samples`).",
        "",
    ]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
