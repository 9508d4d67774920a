"""The held-out likelihood of ``ppgen evaluate`` for the zoo's VAE: time per batch of test images against the
number of importance samples drawn at a time (the chunk), side by side in one run.

    OMP_NUM_THREADS=1 python benchmarks/evaluate_chunks.py [--k 1000] [--batch 100] [--reps 3]

A VAE built from ``models/vae.yaml`` (untrained: the time does not depend on the weights) estimates log p(x)
of ``--batch`` random binary 28x28 images with ``--k`` importance samples, for each chunk size in turn,
``--reps`` times interleaved; the table gives the best time of each and its ratio to the default chunk
(:func:`ppgen.models.base.importance_chunk`). Printed, and appended to ``benchmarks/results/evaluate_chunks.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import time
from pathlib import Path

import torch

from ppgen.data.core import DataInfo
from ppgen.models.base import importance_chunk
from ppgen.registry import build
from ppgen.zoo import path as zoo_path

from machine import cpu_model  # benchmarks/ is sys.path[0] when run as a script


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--k", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    model = build(zoo_path("models", "vae"), DataInfo((1, 28, 28), "binary", n_train=1000)).eval()
    x = torch.bernoulli(torch.full((args.batch, 1, 28, 28), 0.15))
    default = importance_chunk(args.batch * 28 * 28)
    chunks = sorted({250, 125, default, max(1, default // 2)}, reverse=True)
    best: dict[int, float] = {}
    with torch.no_grad():
        model.log_likelihood(x[:2], k=4)  # warm up
        for _ in range(args.reps):
            for c in chunks:
                t = time.perf_counter()
                model.log_likelihood(x, k=args.k, chunk=c)
                best[c] = min(best.get(c, float("inf")), time.perf_counter() - t)
    lines = [f"## {dt.date.today()}: {cpu_model()}, {torch.get_num_threads()} thread(s), torch {torch.__version__}",
             f"k = {args.k}, {args.batch} images of 1x28x28, best of {args.reps}", "",
             "| samples per chunk | rows (samples x images) | seconds | vs default |", "|---|---|---|---|"]
    for c in chunks:
        mark = " (default)" if c == default else ""
        lines.append(f"| {c}{mark} | {c * args.batch:,} | {best[c]:.2f} | {best[c] / best[default]:.2f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(__file__).resolve().parent / "results" / "evaluate_chunks.md"
    with out.open("a", encoding="utf-8") as f:
        f.write(text + "\n")


if __name__ == "__main__":
    main()
