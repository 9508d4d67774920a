"""GAN designs on MNIST at a fixed budget of generator updates, side by side in one run.

Each row fits a zoo spec with a recipe for the same number of training images (``--images``, 128,000 by
default: about 2,000 steps of 64), then measures 5,000 samples against 5,000 test images in the feature space
of ppgen's MNIST classifier (:mod:`ppgen.evaluation.quality`), with the real-data floor. Rows: the MLP GAN
(models/gan.yaml) with the non-saturating, minimax, hinge (+ moving average) and WGAN-GP losses, and the
DCGAN (models/dcgan.yaml) with the non-saturating loss.

    python benchmarks/gan_mnist.py            # about an hour of one shared core, the DCGAN most of it
    python benchmarks/gan_mnist.py --quick    # 12,800 images per row, to check that it runs

Writes benchmarks/results/gan_mnist.md (or gan_mnist_quick.md) and a figure of samples beside it. Runs
go to --work (default /tmp/ppgen-gan-mnist).
"""

from __future__ import annotations

import argparse
import datetime
import math
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch

import ppgen
from ppgen.evaluation import feature_classifier, quality
from ppgen.plots.common import save_figure, show_grid, subplots

from machine import cpu_model, logical_cpus  # benchmarks/ is sys.path[0] when run as a script

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
KEYS = ("fid_classifier", "kid_classifier", "precision", "recall", "class_entropy")
#: label, spec, recipe, recipe overrides; the WGAN critic has no batch norm to begin with.
ROWS: list[tuple[str, str, str, list[str]]] = [
    ("MLP, non-saturating", "models/gan.yaml", "inference/adversarial.yaml", []),
    ("MLP, minimax (the lecture's game)", "models/gan.yaml", "inference/minimax.yaml", []),
    ("MLP, hinge + EMA", "models/gan.yaml", "inference/hinge.yaml", []),
    ("MLP, WGAN-GP (n_critic 5)", "models/gan.yaml", "inference/wgan_gp.yaml", []),
    ("DCGAN, non-saturating", "models/dcgan.yaml", "inference/adversarial.yaml", []),
]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=128_000, help="training images per row")
    p.add_argument("--samples", type=int, default=5000)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--work", type=Path, default=Path("/tmp/ppgen-gan-mnist"))
    args = p.parse_args(argv)
    if args.quick:
        args.images, args.samples = 12_800, 1000
    torch.set_num_threads(args.threads)
    feature_classifier.classifier()
    # Whole epochs over a prefix of the training set: the step count is the same for every row.
    epochs = max(1, math.ceil(args.images / 50_000))
    limit = args.images // epochs
    rows, grids, floor = [], [], {}
    t_all = time.perf_counter()
    for i, (label, spec, recipe, over) in enumerate(ROWS):
        out = args.work / f"row{i}"
        shutil.rmtree(out, ignore_errors=True)
        t0 = time.perf_counter()
        run = ppgen.fit(ROOT / spec, ROOT / recipe, epochs=epochs, out=out, overrides=[f"data.limit={limit}"],
                        recipe_overrides=over, progress=False)
        seconds = time.perf_counter() - t0
        m = quality.sample_metrics(run.model, run.data, n=args.samples)
        floor = {k: m[f"real_{k}"] for k in KEYS}
        torch.manual_seed(0)
        grids.append((label, run.model.sample(64), m["fid_classifier"]))
        steps = run.metrics[-1]["step"]
        rows.append({"label": label, "steps": steps, "seconds": seconds, **{k: m[k] for k in KEYS}})
        print(f"{label}: " + ", ".join(f"{k} {m[k]:.4f}" for k in KEYS) + f" ({steps} steps, {seconds:.0f} s)", flush=True)
    total = time.perf_counter() - t_all

    fig, axes = subplots(1, len(grids), figsize=(3.2 * len(grids), 3.6), squeeze=False)
    for ax, (label, x, fid) in zip(axes[0], grids):
        show_grid(ax, x, nrow=8, title=f"{label}\nFD (classifier) {fid:.2f}")
    fig.tight_layout()
    suffix = "_quick" if args.quick else ""
    fig_path = save_figure(fig, RESULTS / f"gan_mnist{suffix}.png")
    lines = [
        "# GAN designs on MNIST at a fixed budget",
        "",
        f"Command: `python benchmarks/gan_mnist.py{' --quick' if args.quick else ''}`",
        f"Date: {datetime.date.today().isoformat()}; shared CPU ({cpu_model()}, {logical_cpus()} logical "
        f"CPUs, other jobs running, so the times are indicative), {args.threads} torch thread(s); torch {torch.__version__}. "
        f"Whole run: {total / 60:.1f} min.",
        f"Each row: {epochs} epoch(s) over the first {limit} training images (batch 64); {args.samples} samples against "
        f"as many test images; the floor compares as many validation images with the test images. `steps` counts",
        "discriminator updates (WGAN-GP updates its generator every 5th).",
        "",
        "| model, loss | steps | seconds | " + " | ".join(KEYS) + " |",
        "|" + "---|" * (len(KEYS) + 3),
    ]
    lines += [f"| {r['label']} | {r['steps']} | {r['seconds']:.0f} | " + " | ".join(f"{r[k]:.4f}" for k in KEYS) + " |"
              for r in rows]
    lines += ["| real images (floor) | - | - | " + " | ".join(f"{floor[k]:.4f}" for k in KEYS) + " |", "",
              f"Figure: `{fig_path.relative_to(ROOT)}`", ""]
    out = RESULTS / f"gan_mnist{suffix}.md"
    out.write_text("\n".join(lines))
    print(f"table: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
