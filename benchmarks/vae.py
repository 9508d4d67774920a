"""VAE speed and quality on MNIST: ppgen against a hand-written PyTorch loop of the same math and against
plain Pyro SVI, measured side by side in one run.

    python benchmarks/vae.py            # timing rounds, then a 10-epoch fit evaluated at k = 1000
    python benchmarks/vae.py --quick    # one timing round of one epoch each, no quality fit

The model is the zoo's ``models/vae.yaml``: z = 50, one hidden layer of 400 ReLU units in the encoder
and the decoder, a Bernoulli likelihood on dynamically binarized MNIST, batch 128, Adam at 1e-3, the
ELBO with the analytic KL. All three contestants draw the same data in the same way (a fresh Bernoulli
binarization and permutation each epoch) and run in the same process with the same threads; the
rounds alternate between them so that a change of machine load hits all three alike. Times are the
training steps of an epoch only (no validation). Writes ``benchmarks/results/vae.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
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
from ppgen.evaluation.evaluate import evaluate  # noqa: E402

from machine import cpu_model, load_average, logical_cpus  # noqa: E402

SPEC = ROOT / "models" / "vae.yaml"
RECIPE = ROOT / "inference" / "svi.yaml"
Z, H, D, BATCH, LR = 50, 400, 784, 128, 1e-3


class HandVAE(nn.Module):
    """The same networks and bound, written directly in PyTorch."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(D, H), nn.ReLU(), nn.Linear(H, 2 * Z))
        self.dec = nn.Sequential(nn.Linear(Z, H), nn.ReLU(), nn.Linear(H, D))

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        h = self.enc(x)
        mu, std = h[:, :Z], nn.functional.softplus(h[:, Z:]) + 1e-4
        z = mu + std * torch.randn_like(std)
        logits = self.dec(z)
        rec = nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="sum")
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
            x = xb_all[perm[b * BATCH : (b + 1) * BATCH]]
            opt.zero_grad(set_to_none=True)
            loss = model.loss(x)
            loss.backward()
            opt.step()
            float(loss)
        times.append(time.perf_counter() - t0)
    return times


def epochs_pyro(train_x: torch.Tensor, epochs: int, seed: int) -> list[float]:
    """Plain Pyro: pyro.module + pyro.infer.SVI with TraceMeanField_ELBO, in the manner of Pyro's VAE example."""
    import pyro
    import pyro.distributions as dist
    from pyro.infer import SVI, TraceMeanField_ELBO
    from pyro.optim import Adam

    torch.manual_seed(seed)
    net = HandVAE()

    with pyro.settings.context(module_local_params=False):
        pyro.clear_param_store()

        def model(x: torch.Tensor) -> None:
            pyro.module("dec", net.dec)
            with pyro.plate("data", x.shape[0]):
                z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], Z), 1.0).to_event(1))
                pyro.sample("x", dist.Bernoulli(logits=net.dec(z), validate_args=False).to_event(1), obs=x)

        def guide(x: torch.Tensor) -> None:
            pyro.module("enc", net.enc)
            h = net.enc(x)
            with pyro.plate("data", x.shape[0]):
                pyro.sample("z", dist.Normal(h[:, :Z], nn.functional.softplus(h[:, Z:]) + 1e-4).to_event(1))

        svi = SVI(model, guide, Adam({"lr": LR}), TraceMeanField_ELBO(max_plate_nesting=1))
        flat = train_x.reshape(len(train_x), -1)
        times = []
        for epoch in range(epochs):
            gen = torch.Generator().manual_seed(epoch)
            t0 = time.perf_counter()
            perm = torch.randperm(len(flat), generator=gen)
            xb_all = torch.bernoulli(flat, generator=gen)
            for b in range(len(flat) // BATCH):
                svi.step(xb_all[perm[b * BATCH : (b + 1) * BATCH]])
            times.append(time.perf_counter() - t0)
        pyro.clear_param_store()
    return times


def epochs_ppgen(epochs: int, seed: int, out: Path) -> list[float]:
    run = ppgen.fit(SPEC, RECIPE, epochs=epochs, out=out, seed=seed, progress=False)
    return [m["train_time_s"] for m in run.metrics if m["kind"] == "epoch"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one round of one epoch each, no quality fit")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=2, help="epochs per contestant per round")
    ap.add_argument("--quality-epochs", type=int, default=10)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "vae.md"))
    args = ap.parse_args()
    rounds, epochs = (1, 1) if args.quick else (args.rounds, args.epochs)
    load_start = load_average()[0]

    dataset = ppdata.load(ppgen.load_spec(SPEC).data)
    train_x = dataset.train_x
    times: dict[str, list[float]] = {"ppgen": [], "hand-written PyTorch": [], "plain Pyro SVI": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            times["ppgen"] += epochs_ppgen(epochs, r, Path(tmp) / f"speed-{r}")
            times["hand-written PyTorch"] += epochs_hand(train_x, epochs, r)
            times["plain Pyro SVI"] += epochs_pyro(train_x, epochs, r)
            print(f"round {r + 1}: " + ", ".join(f"{k} {statistics.median(v):.2f} s" for k, v in times.items()),
                  file=sys.stderr)
        quality = None
        if not args.quick:
            run = ppgen.fit(SPEC, RECIPE, epochs=args.quality_epochs, out=Path(tmp) / "quality", seed=0, progress=False)
            quality = evaluate(run, k=1000, write=False)

    hand = statistics.median(times["hand-written PyTorch"])
    lines = [
        "# VAE on MNIST: ppgen against a hand-written PyTorch loop and plain Pyro SVI",
        "",
        f"Measured {dt.date.today().isoformat()} with `python benchmarks/vae.py{' --quick' if args.quick else ''}` "
        f"on {cpu_model()} with {torch.get_num_threads()} torch threads ({logical_cpus()} logical CPUs, load "
        f"average {load_start:.1f} at the start), torch "
        f"{torch.__version__}. Model: models/vae.yaml (z = 50, 400 hidden units, batch 128, Adam 1e-3, "
        "ELBO with analytic KL, dynamic binarization). Median training time of one epoch (50,000 images) over "
        f"{rounds} alternating round(s) of {epochs} epoch(s) each.",
        "",
        "| contestant | epoch time (s, median) | ratio to hand-written | fastest epoch (s) | ratio of fastest |",
        "|---|---|---|---|---|",
    ]
    hand_min = min(times["hand-written PyTorch"])
    for name, values in times.items():
        med = statistics.median(values)
        lines.append(f"| {name} | {med:.2f} | {med / hand:.3f} | {min(values):.2f} | {min(values) / hand_min:.3f} |")
    lines += ["", "Target: ppgen at most 1.15 times the hand-written loop.", ""]
    if quality is not None:
        lines += [
            f"## Test NLL after {args.quality_epochs} epochs",
            "",
            "ppgen's fit of models/vae.yaml with inference/svi.yaml (seed 0), evaluated on the 10,000 test images "
            "(binarized once with a fixed seed) by importance sampling with k = 1000 samples from q(z|x):",
            "",
            "| quantity | value |",
            "|---|---|",
        ]
        for key in ("test_nll_nats", "test_nll_stderr", "test_nll_mc_stderr", "bits_per_dim", "elbo", "kl"):
            lines.append(f"| {key} | {quality[key]:.3f} |")
        lines += ["", "Burda et al. (2015) report 86.76 nats for a one-stochastic-layer VAE trained far longer; "
                  "the target here is under 100 nats after 10 epochs.", ""]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))
    print(json.dumps({k: statistics.median(v) for k, v in times.items()}), file=sys.stderr)


if __name__ == "__main__":
    main()
