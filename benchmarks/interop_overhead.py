"""What Pyro interop and the loop's guard cost, measured side by side in one run on the zoo's VAE
(models/vae.yaml networks: z = 50, 400 hidden units, batch 128 of 784 pixels).

    python benchmarks/interop_overhead.py [--reps 200] [--out benchmarks/results/interop_overhead.md]

Rows, each the median time of one training step (forward, backward, Adam) over interleaved repetitions:

- fused: the fused loss (the default path of ``inference/svi.yaml``), untouched by interop;
- general, exposed: Pyro's TraceMeanField_ELBO through ``pyro_loss`` on the family's ``model``/``guide``,
  which run in the PyroModule context so every parameter is a ``param`` site, in a private param store;
- general, hidden: the same without the PyroModule context and without the private store (the
  parameters invisible to Pyro, as before interop);

and the guard's cost per epoch (copying and comparing every parameter once) as a share of an epoch of
fused steps on 50,000 images. Writes a markdown table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import ppgen  # noqa: E402
from ppgen.data.core import DataInfo  # noqa: E402
from ppgen.inference.svi import SVIConfig, pyro_elbo, pyro_loss  # noqa: E402
from ppgen.models.vae import VAE  # noqa: E402

from machine import cpu_model, load_average, logical_cpus  # noqa: E402

BATCH, STEPS_PER_EPOCH = 128, 50_000 // 128


class Hidden:
    """The family's model and guide outside its PyroModule context: no param sites."""

    def __init__(self, model: VAE) -> None:
        self.model = functools.partial(VAE.model.__wrapped__, model)
        self.guide = functools.partial(VAE.guide.__wrapped__, model)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "interop_overhead.md"))
    args = ap.parse_args()
    load_start = load_average()[0]
    torch.manual_seed(0)
    model = ppgen.build(ROOT / "models" / "vae.yaml", DataInfo((1, 28, 28), "binary"))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.bernoulli(torch.full((BATCH, 1, 28, 28), 0.15))
    objective = pyro_elbo(SVIConfig(), model.max_plate_nesting)
    hidden = Hidden(model)

    def fused() -> None:
        opt.zero_grad(set_to_none=True)
        (model.fused_loss(x, "meanfield") / BATCH).backward()
        opt.step()

    def exposed() -> None:
        opt.zero_grad(set_to_none=True)
        pyro_loss(model, objective, x, None).backward()
        opt.step()

    def plain() -> None:
        opt.zero_grad(set_to_none=True)
        objective.loss(hidden, x, None).backward()
        opt.step()

    def guard() -> None:  # what the loop does once per epoch
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        params = dict(model.named_parameters())
        any(not torch.equal(before[n], params[n].detach()) for n in before)

    contestants = {"fused": fused, "general, exposed (param sites, private store)": exposed,
                   "general, hidden (no param sites, global store)": plain, "guard, once per epoch": guard}
    times: dict[str, list[float]] = {k: [] for k in contestants}
    for fn in contestants.values():
        for _ in range(5):
            fn()
    for _ in range(args.reps):
        for name, fn in contestants.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    hidden_ms = med["general, hidden (no param sites, global store)"]
    lines = [
        "# Pyro interop and the loop's guard: what they cost",
        "",
        f"Measured {dt.date.today().isoformat()} with `python benchmarks/interop_overhead.py --reps {args.reps}` on "
        f"{cpu_model()} with {torch.get_num_threads()} torch threads ({logical_cpus()} logical CPUs, load average "
        f"{load_start:.1f} at the start), torch {torch.__version__}. The zoo's VAE, batch {BATCH}; median of "
        f"{args.reps} interleaved repetitions.",
        "",
        "| what | time (ms, median) | ratio |",
        "|---|---|---|",
        f"| fused step (the default path) | {med['fused']:.2f} | 1 (reference) |",
        f"| general step, parameters exposed to Pyro, private param store | "
        f"{med['general, exposed (param sites, private store)']:.2f} | "
        f"{med['general, exposed (param sites, private store)'] / hidden_ms:.3f} of the hidden one |",
        f"| general step, parameters hidden from Pyro, global store | {hidden_ms:.2f} | 1 (reference) |",
        f"| guard, once per epoch | {med['guard, once per epoch']:.2f} | "
        f"{med['guard, once per epoch'] / (med['fused'] * STEPS_PER_EPOCH):.5f} of a fused epoch ({STEPS_PER_EPOCH} steps) |",
        "",
        "The fused step runs no Pyro code, so interop cannot slow it; the guard adds one copy and one comparison",
        "of the parameters per epoch and one comparison after the first step of a fit.",
        "",
    ]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
