"""The zoo's VAE written in the model language against the same model written by hand, on MNIST, side by
side in one run.

    python benchmarks/vae_program.py              # timing rounds, then 10-epoch fits evaluated at k = 1000
    python benchmarks/vae_program.py --quick      # one timing round of one epoch each, no quality fits

Contestants, all on dynamically binarized MNIST with batch 128, Adam at 1e-3, the ELBO with the analytic
KL, z = 50 and 400 hidden units:

- ``program``: ``ppgen fit models/vae_program.yaml`` (the model language, its fused bound);
- ``vae family``: ``ppgen fit models/vae.yaml`` (the hand-written VAE family, its fused bound);
- ``hand-written PyTorch``: the same networks and bound in a plain PyTorch loop (no ppgen).

Times are the training steps of one epoch (no validation), median over alternating rounds so that a
change of machine load hits every contestant alike; the load average at the start and the end is
recorded, since other work shares this machine. Quality: both ppgen models fitted for ``--quality-epochs``
epochs from seed 0 and evaluated on the 10,000 test images at k = 1000; the difference of their test
log-likelihoods is reported with the standard error of the paired per-example differences. Writes
``benchmarks/results/vae_program.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import ppgen  # noqa: E402
from ppgen import data as ppdata  # noqa: E402

from machine import cpu_model, load_average, logical_cpus  # noqa: E402

PROGRAM = ROOT / "models" / "vae_program.yaml"
FAMILY = ROOT / "models" / "vae.yaml"
RECIPE = ROOT / "inference" / "svi.yaml"
Z, H, D, BATCH, LR = 50, 400, 784, 128, 1e-3


class HandVAE(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(D, H), nn.ReLU(), nn.Linear(H, 2 * Z))
        self.dec = nn.Sequential(nn.Linear(Z, H), nn.ReLU(), nn.Linear(H, D))

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        h = self.enc(x)
        mu, std = h[:, :Z], nn.functional.softplus(h[:, Z:]) + 1e-4
        z = mu + std * torch.randn_like(std)
        rec = nn.functional.binary_cross_entropy_with_logits(self.dec(z), x, reduction="sum")
        kl = 0.5 * (mu.pow(2) + std.pow(2) - 1 - 2 * std.log()).sum()
        return (rec + kl) / x.shape[0]


def epochs_hand(train_x: torch.Tensor, epochs: int, seed: int) -> list[float]:
    torch.manual_seed(seed)
    model = HandVAE()
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    flat = train_x.reshape(len(train_x), -1)
    times = []
    for epoch in range(epochs):
        gen = torch.Generator().manual_seed(epoch)
        t0 = time.perf_counter()
        perm = torch.randperm(len(flat), generator=gen)
        xb_all = torch.bernoulli(flat, generator=gen)
        for b in range(len(flat) // BATCH):
            x = xb_all[perm[b * BATCH:(b + 1) * BATCH]]
            opt.zero_grad(set_to_none=True)
            loss = model.loss(x)
            loss.backward()
            opt.step()
            float(loss)
        times.append(time.perf_counter() - t0)
    return times


def interleaved_steps(train_x: torch.Tensor, steps: int, seed: int = 0) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """One training step of each contestant in turn, ``steps`` times, on the same batches: the svi
    routine's step (fused bound, Adam) for the two ppgen models, the plain loop's step for the third.
    Alternating step by step, a change of machine load hits all three alike. Returns the wall-clock and
    the process CPU time of each step (the CPU time leaves out the time the process waited for a core)."""
    from ppgen import registry

    recipe = ppgen.load_recipe(RECIPE)
    torch.manual_seed(seed)
    contestants = {}
    for name, spec in (("program", PROGRAM), ("vae family", FAMILY)):
        model = ppgen.build(spec, _info(train_x))
        routine = registry.routine(recipe.routine)(recipe)
        state = routine.init(model)
        contestants[name] = (lambda x, r=routine, st=state: r.step(st, (x, None)))
    hand = HandVAE()
    opt = torch.optim.Adam(hand.parameters(), lr=LR)

    def hand_step(x: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        loss = hand.loss(x.reshape(len(x), -1))
        loss.backward()
        opt.step()
        float(loss.detach())

    contestants["hand-written PyTorch"] = hand_step
    gen = torch.Generator().manual_seed(seed)
    times: dict[str, list[float]] = {k: [] for k in contestants}
    cpu: dict[str, list[float]] = {k: [] for k in contestants}
    names = list(contestants)
    for i in range(steps):
        idx = torch.randint(len(train_x), (BATCH,), generator=gen)
        x = torch.bernoulli(train_x[idx], generator=gen)
        for name in names[i % 3:] + names[: i % 3]:
            t0, c0 = time.perf_counter(), time.process_time()
            contestants[name](x)
            times[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    return times, cpu


def _info(train_x: torch.Tensor) -> object:
    from ppgen.data.core import DataInfo

    return DataInfo(tuple(train_x.shape[1:]), "binary", 10)


def epochs_ppgen(spec: Path, epochs: int, seed: int, out: Path) -> list[float]:
    run = ppgen.fit(spec, RECIPE, epochs=epochs, out=out, seed=seed, progress=False)
    return [m["train_time_s"] for m in run.metrics if m["kind"] == "epoch"]


@torch.no_grad()
def test_log_likelihoods(run: ppgen.Run, k: int, limit: int | None, batch: int = 100) -> torch.Tensor:
    x, _ = run.data.split("test")
    x = x[:limit] if limit else x
    model = run.model
    torch.manual_seed(0)
    return torch.cat([model.log_likelihood(x[s:s + batch], k=k)[0].double() for s in range(0, len(x), batch)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one round of one epoch each, no quality fits")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=2, help="epochs per contestant per round")
    ap.add_argument("--quality-epochs", type=int, default=10)
    ap.add_argument("--k", type=int, default=1000)
    ap.add_argument("--test-limit", type=int, default=None, help="evaluate on the first N test images only")
    ap.add_argument("--steps", type=int, default=600, help="interleaved training steps per contestant")
    ap.add_argument("--no-epochs", action="store_true", help="only the interleaved steps (and the quality fits)")
    ap.add_argument("--no-quality", action="store_true", help="no 10-epoch fits")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "vae_program.md"))
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rounds, epochs = (1, 1) if args.quick else (args.rounds, args.epochs)
    rounds = 0 if args.no_epochs else rounds
    load_start = load_average()
    started = time.perf_counter()
    train_x = ppdata.load(ppgen.load_spec(PROGRAM).data).train_x
    times: dict[str, list[float]] = {"program (models/vae_program.yaml)": [], "vae family (models/vae.yaml)": [],
                                     "hand-written PyTorch": []}
    quality = None
    steps, steps_cpu = interleaved_steps(train_x, args.steps)
    print("interleaved steps: " + ", ".join(f"{k} {statistics.median(v) * 1e3:.1f} ms (CPU {statistics.median(steps_cpu[k]) * 1e3:.1f})"
                                            for k, v in steps.items()),
          file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            names = list(times)
            order = names[r % 3:] + names[: r % 3]  # a different contestant first in each round
            for name in order:
                if name.startswith("program"):
                    times[name] += epochs_ppgen(PROGRAM, epochs, r, Path(tmp) / f"p-{r}")
                elif name.startswith("vae family"):
                    times[name] += epochs_ppgen(FAMILY, epochs, r, Path(tmp) / f"v-{r}")
                else:
                    times[name] += epochs_hand(train_x, epochs, r)
            print(f"round {r + 1}: " + ", ".join(f"{k.split(' (')[0]} {statistics.median(v):.2f} s" for k, v in times.items()),
                  file=sys.stderr)
        if not args.quick and not args.no_quality:
            runs = {}
            for name, spec in (("program", PROGRAM), ("vae family", FAMILY)):
                runs[name] = ppgen.fit(spec, RECIPE, epochs=args.quality_epochs, out=Path(tmp) / f"q-{name}", seed=0,
                                       progress=False)
            lls = {name: test_log_likelihoods(run, args.k, args.test_limit) for name, run in runs.items()}
            elbos = {}
            for name, run in runs.items():
                x, y = run.data.split("test")
                x, y = (x[:args.test_limit], y[:args.test_limit]) if args.test_limit else (x, y)
                torch.manual_seed(0)
                elbos[name] = run.model.evaluate_extra(x, y)["elbo"]
            diff = lls["program"] - lls["vae family"]
            quality = {
                "nll": {n: float(-v.mean()) for n, v in lls.items()},
                "se": {n: float(v.std() / math.sqrt(len(v))) for n, v in lls.items()},
                "elbo": elbos,
                "diff": float(diff.mean()),
                "diff_se": float(diff.std() / math.sqrt(len(diff))),
                "max_abs_diff": float(diff.abs().max()),
            }
    load_end = load_average()
    cpu = cpu_model()
    flags = " ".join(a for a in sys.argv[1:])
    lines = [
        "# The VAE as a program against the hand-written VAE family and a plain PyTorch loop (MNIST)",
        "",
        f"Measured {dt.date.today().isoformat()} with `python benchmarks/vae_program.py {flags}` on {cpu} "
        f"({logical_cpus()} logical CPUs, {torch.get_num_threads()} torch threads), torch {torch.__version__}. "
        f"Load average (1, 5, 15 min) {load_start[0]:.1f}, {load_start[1]:.1f}, {load_start[2]:.1f} at the start and "
        f"{load_end[0]:.1f}, {load_end[1]:.1f}, {load_end[2]:.1f} at the end: other work shared the machine. "
        f"Total {(time.perf_counter() - started) / 60:.1f} min.",
        "",
        f"## Training steps, interleaved ({args.steps} steps each, batch {BATCH})",
        "",
        "One step of each contestant in turn on the same batch: the svi routine's step for the two ppgen models, "
        "the plain loop's step for the third.",
        "",
        "| contestant | wall time (ms, median) | ratio | wall time (ms, 10th percentile) | ratio | CPU time (ms, median) | ratio |",
        "|---|---|---|---|---|---|---|",
    ]

    def p10(v: list[float]) -> float:
        return sorted(v)[len(v) // 10]

    hand = "hand-written PyTorch"
    for name, values in steps.items():
        med, low, c = statistics.median(values), p10(values), statistics.median(steps_cpu[name])
        lines.append(f"| {name} | {med * 1e3:.2f} | {med / statistics.median(steps[hand]):.3f} | {low * 1e3:.2f} | "
                     f"{low / p10(steps[hand]):.3f} | {c * 1e3:.2f} | {c / statistics.median(steps_cpu[hand]):.3f} |")
    lines += [""]
    if rounds:
        hand = statistics.median(times["hand-written PyTorch"])
        hand_min = min(times["hand-written PyTorch"])
        lines += [
            f"## Epochs ({rounds} alternating round(s) of {epochs} epoch(s) each)",
            "",
            "Median training time of one epoch (50,000 images), ppgen's through `ppgen.fit`.",
            "",
            "| contestant | epoch time (s, median) | ratio to hand-written | fastest epoch (s) | ratio of fastest |",
            "|---|---|---|---|---|",
        ]
        for name, values in times.items():
            med = statistics.median(values)
            lines.append(f"| {name} | {med:.2f} | {med / hand:.3f} | {min(values):.2f} | {min(values) / hand_min:.3f} |")
        lines += [""]
    lines += ["Target: the program at most 1.10 times the hand-written loop (plain Pyro SVI is 1.42 in "
              "benchmarks/results/vae.md).", ""]
    if quality is not None:
        lines += [
            f"## Test NLL after {args.quality_epochs} epochs (seed 0, k = {args.k}, "
            f"{'the first ' + str(args.test_limit) if args.test_limit else 'all 10,000'} test images)",
            "",
            "| model | test NLL (nats) | standard error | ELBO |",
            "|---|---|---|---|",
        ]
        for name in ("program", "vae family"):
            lines.append(f"| {name} | {quality['nll'][name]:.3f} | {quality['se'][name]:.3f} | {quality['elbo'][name]:.3f} |")
        lines += ["", f"Paired difference of the per-example log-likelihoods (program minus family): "
                  f"{quality['diff']:.4f} nats, standard error {quality['diff_se']:.4f}, largest absolute difference "
                  f"{quality['max_abs_diff']:.4f}. Target: equal within two standard errors of the test NLL.", ""]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
