"""The lecture's "GAN versus VAE" figure, measured: samples after epochs 1, 10 and 25 on MNIST.

Fits the zoo's VAE (models/vae.yaml with inference/svi.yaml) and GAN (models/gan.yaml with
inference/adversarial.yaml), keeping weight snapshots at the chosen epochs, then draws one 10x10 grid
of samples per model and epoch (the VAE's mean images E[x|z], the GAN's G(z)) with the Frechet distance
in the MNIST classifier's feature space under each grid, and writes a table of every sample-quality
metric (:mod:`ppgen.evaluation.quality`) for both models beside the real-data floor (held-out images against the
test images).

    python examples/gan_vs_vae.py                      # 25 epochs each, 10,000 samples per metric
    python examples/gan_vs_vae.py --quick              # 3 epochs on 10,000 images, to try it out
    python examples/gan_vs_vae.py --record             # also copy the figure and table to benchmarks/results/
    python examples/gan_vs_vae.py --gan dcgan          # the convolutional GAN (models/dcgan.yaml) instead

Runs go to ``--out`` (default runs/gan_vs_vae); an interrupted run continues where it stopped when the
command is repeated. The first call trains and caches the feature classifier (a few minutes).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch

import ppgen
from ppgen.evaluation import feature_classifier, quality
from ppgen.evaluation.compare import compare
from ppgen.plots.common import save_figure, show_grid, subplots
from ppgen.store.checkpoint import CHECKPOINT

ROOT = Path(__file__).resolve().parent.parent
MODELS = {
    "VAE": (ROOT / "models/vae.yaml", ROOT / "inference/svi.yaml"),
    "GAN": (ROOT / "models/gan.yaml", ROOT / "inference/adversarial.yaml"),
}
KEYS = ("fid_classifier", "kid_classifier", "precision", "recall", "class_entropy")


def fit(name: str, epochs: list[int], out: Path, limit: int | None, seed: int) -> tuple[Any, float]:
    """Fit (or finish fitting) one model with snapshots at ``epochs``; returns the run and the seconds spent."""
    spec_path, recipe_path = MODELS[name]
    recipe = ppgen.load_recipe(recipe_path, [f"snapshots={list(epochs)}"])
    overrides = [f"data.limit={limit}"] if limit else []
    folder = out / spec_path.stem
    resume = (folder / CHECKPOINT).exists()
    t0 = time.perf_counter()
    run = ppgen.fit(spec_path, recipe, epochs=max(epochs), out=folder, seed=seed, resume=resume,
                    overrides=overrides, progress=sys.stderr.isatty())
    return run, time.perf_counter() - t0


def grid_samples(model: Any, n: int = 100, seed: int = 0) -> torch.Tensor:
    torch.manual_seed(seed)
    return quality.draw(model, n)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, nargs="+", default=[1, 10, 25])
    p.add_argument("--samples", type=int, default=10_000, help="samples per metric (and test images)")
    p.add_argument("--limit", type=int, default=None, help="train on the first N images only")
    p.add_argument("--quick", action="store_true", help="epochs 1 2 3, 10,000 training images, 2,000 samples")
    p.add_argument("--out", type=Path, default=Path("runs/gan_vs_vae"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--record", action="store_true", help="copy figure and table to benchmarks/results/")
    p.add_argument("--gan", choices=["gan", "dcgan"], default="gan",
                   help="the GAN's zoo spec: models/gan.yaml (MLP, default) or models/dcgan.yaml (about 3x slower)")
    args = p.parse_args(argv)
    MODELS["GAN"] = (ROOT / f"models/{args.gan}.yaml", MODELS["GAN"][1])
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.quick:
        args.epochs, args.limit, args.samples = [1, 2, 3], 10_000, 2000
    if args.threads:
        torch.set_num_threads(args.threads)
    epochs = sorted(set(args.epochs))
    args.out.mkdir(parents=True, exist_ok=True)
    args.load_start = os.getloadavg()[0]
    t_start = time.perf_counter()

    feature_classifier.classifier()  # trained once and cached; reported separately from the fits
    args.classifier_seconds = time.perf_counter() - t_start
    runs, fit_seconds = {}, {}
    for name in MODELS:
        runs[name], fit_seconds[name] = fit(name, epochs, args.out, args.limit, args.seed)
        print(f"{name}: fitted {max(epochs)} epochs in {fit_seconds[name]:.0f} s ({runs[name].path})")

    rows: list[dict[str, Any]] = []
    grids: dict[tuple[str, int], torch.Tensor] = {}
    floor: dict[str, float] = {}
    for name, run in runs.items():
        for e in epochs:
            model = run.model_at(e)
            grids[name, e] = grid_samples(model)
            m = quality.sample_metrics(model, run.data, n=args.samples, seed=args.seed)
            floor = {k: m[f"real_{k}"] for k in KEYS}
            rows.append({"model": name, "epoch": e, **{k: m[k] for k in KEYS}})
            print(f"{name} epoch {e}: " + ", ".join(f"{k} {m[k]:.4f}" for k in KEYS))

    fig_path = figure(grids, rows, floor, epochs, args.out / "gan_vs_vae.png")
    curves = compare([runs["VAE"].path, runs["GAN"].path], args.out / "compare.png")[1]
    total = time.perf_counter() - t_start
    table_path = write_table(args, rows, floor, fit_seconds, total, epochs, args.out / "gan_vs_vae.md")
    print(f"figure: {fig_path}\ntable: {table_path}\ntraining curves: {curves}\ntotal {total / 60:.1f} min")
    if args.record:
        dest = ROOT / "benchmarks/results"
        suffix = ("_quick" if args.quick else "") + ("_dcgan" if args.gan == "dcgan" else "")
        shutil.copy(fig_path, dest / f"gan_vs_vae{suffix}.png")
        shutil.copy(table_path, dest / f"gan_vs_vae{suffix}.md")
        print(f"recorded in {dest}")
    return 0


def figure(grids: dict, rows: list[dict], floor: dict, epochs: list[int], path: Path) -> Path:
    """Rows VAE and GAN, one column per epoch, each a 10x10 grid with its classifier-space FD below."""
    fid = {(r["model"], r["epoch"]): r["fid_classifier"] for r in rows}
    names = list(MODELS)
    fig, axes = subplots(len(names), len(epochs), figsize=(3.3 * len(epochs) + 0.6, 3.6 * len(names)), squeeze=False)
    for i, name in enumerate(names):
        for j, e in enumerate(epochs):
            ax = axes[i, j]
            show_grid(ax, grids[name, e], nrow=10, title=f"epoch {e}" if i == 0 else None)
            ax.text(0.5, -0.06, f"FD (classifier) = {fid[name, e]:.2f}", transform=ax.transAxes, ha="center",
                    va="top", fontsize=10)
        axes[i, 0].text(-0.08, 0.5, name, transform=axes[i, 0].transAxes, rotation=90, ha="right", va="center",
                        fontsize=13)
    fig.suptitle(f"MNIST samples; real held-out images score FD {floor['fid_classifier']:.2f}", fontsize=11)
    fig.tight_layout()
    return save_figure(fig, path)


def write_table(args: argparse.Namespace, rows: list[dict], floor: dict, fit_seconds: dict, total: float,
                epochs: list[int], path: Path) -> Path:
    head = "| model | epoch | " + " | ".join(KEYS) + " |"
    lines = [
        "# GAN versus VAE on MNIST: sample quality in the feature space of ppgen's MNIST classifier",
        "",
        f"Command: `{' '.join(['python examples/gan_vs_vae.py', *args.argv])}`",
        f"Date: {datetime.date.today().isoformat()}; machine: 2-core CPU ({platform.machine()}, "
        f"{os.cpu_count()} logical CPUs, load average {args.load_start:.1f} at the start: other processes "
        "slow the fits); "
        f"{torch.get_num_threads()} torch thread(s); torch {torch.__version__}.",
        f"VAE: models/vae.yaml + inference/svi.yaml (dynamically binarized MNIST; metrics on its mean images E[x|z]). "
        f"GAN: models/{args.gan}.yaml + inference/adversarial.yaml (MNIST intensities, non-saturating loss).",
        f"Training images: {args.limit or 50_000}; samples per metric: {args.samples} against as many test images; "
        "the floor compares as many validation images with the test images.",
        f"Fit time: VAE {fit_seconds['VAE'] / 60:.1f} min, GAN {fit_seconds['GAN'] / 60:.1f} min; "
        f"whole command {total / 60:.1f} min, of which {args.classifier_seconds / 60:.1f} min to load or train "
        "the feature classifier.",
        "",
        "Lower is better for fid/kid; higher for precision, recall; class_entropy is log 10 = 2.303 at best.",
        "",
        head,
        "|" + "---|" * (len(KEYS) + 2),
    ]
    for r in rows:
        lines.append(f"| {r['model']} | {r['epoch']} | " + " | ".join(_fmt(r[k]) for k in KEYS) + " |")
    lines.append("| real (floor) | - | " + " | ".join(_fmt(floor[k]) for k in KEYS) + " |")
    last = max(epochs)
    vae = next(r for r in rows if r["model"] == "VAE" and r["epoch"] == last)
    gan = next(r for r in rows if r["model"] == "GAN" and r["epoch"] == last)
    better = "GAN" if gan["fid_classifier"] < vae["fid_classifier"] else "VAE"
    lines += ["", f"At epoch {last} the {better} has the lower classifier-space Frechet distance "
              f"(GAN {gan['fid_classifier']:.3f}, VAE {vae['fid_classifier']:.3f}, floor {floor['fid_classifier']:.3f}).", ""]
    path.write_text("\n".join(lines))
    return path


def _fmt(v: float) -> str:
    return f"{v:.4f}" if abs(v) >= 1e-3 else f"{v:.2e}"


if __name__ == "__main__":
    sys.exit(main())
