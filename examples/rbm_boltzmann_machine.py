"""The lecture's Boltzmann machine, small enough to check against the exact distribution.

Four visible units, three hidden units, every pair connected (visible-visible and hidden-hidden too).
It is trained on a toy data set of 4-bit patterns by alternating a clamped phase (the visible units held
at the data, the hidden units sampled) and a free phase (every unit sampled): Hinton & Sejnowski's
learning rule with persistent free-phase chains. Afterwards the visible units are the output: the
script compares, for each of the 16 visible patterns, the data frequencies, the exact model
probability p(v) (all 128 states enumerated) and the frequencies of Gibbs samples drawn through
``pyro.infer.MCMC`` with ppgen's Gibbs kernel; and it writes a bar chart.

    python examples/rbm_boltzmann_machine.py [--epochs 30] [--out runs/bm-toy]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pyro
import torch

import ppgen
from ppgen.models.energy.partition import all_binary_states
from ppgen.inference.gibbs import GibbsKernel
from ppgen.plots.common import save_figure, subplots

ROOT = Path(__file__).resolve().parent.parent

#: The toy data: "two adjacent units on" patterns and their complements, with some noise patterns.
PATTERNS = {(1, 1, 0, 0): 0.3, (0, 1, 1, 0): 0.2, (0, 0, 1, 1): 0.3, (1, 0, 0, 1): 0.1, (0, 0, 0, 0): 0.1}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--out", default=str(ROOT / "runs" / "bm-toy"))
    args = p.parse_args()

    rng = np.random.default_rng(0)
    keys = list(PATTERNS)
    idx = rng.choice(len(keys), size=3000, p=list(PATTERNS.values()))
    x = np.array([keys[i] for i in idx], dtype=np.float32)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "toy.npz", x=x)
    spec = {"family": "bm", "name": "bm-toy", "hidden": 3,
            "data": {"name": "npz", "path": str(out / "toy.npz"), "binarize": "static", "batch_size": 50},
            "init": {"weight_std": 0.1}, "sampling": {"steps": 50, "chains": 4, "warmup": 100, "draws": 500}}
    recipe = {"routine": "pcd", "k": 1, "positive_sweeps": 5, "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.5},
              "initial_momentum": None}
    resume = (out / "checkpoints" / "last.pt").exists()
    run = ppgen.fit(spec, recipe, epochs=args.epochs, out=out, resume=resume, progress=False)
    model, data = run.model, run.data
    train, _ = data.split("train")

    V = all_binary_states(4)
    with torch.no_grad():
        exact = model.log_likelihood(V)[0].exp()  # log Z and the hidden sum enumerated
    codes = (train.long() * torch.tensor([8, 4, 2, 1])).sum(-1)
    freq_data = torch.bincount(codes, minlength=16).double() / len(codes)
    torch.manual_seed(0)
    mcmc = pyro.infer.MCMC(GibbsKernel(model, parallel=200), num_samples=200, warmup_steps=100, disable_progbar=True)
    mcmc.run()
    v = mcmc.get_samples()["v"].reshape(-1, 4)
    freq_gibbs = torch.bincount((v.long() * torch.tensor([8, 4, 2, 1])).sum(-1), minlength=16).double() / len(v)

    print("pattern  data   p(v) exact  Gibbs samples")
    for i in range(16):
        bits = "".join(str(int(b)) for b in V[i])
        print(f"{bits}    {freq_data[i]:.3f}  {exact[i]:.3f}       {freq_gibbs[i]:.3f}")
    tv = 0.5 * float((freq_gibbs - exact.double()).abs().sum())
    print(f"total variation between the Gibbs samples and the exact p(v): {tv:.3f}")
    print(f"KL(data || model) = {float((freq_data[freq_data > 0] * (freq_data[freq_data > 0] / exact.double()[freq_data > 0]).log()).sum()):.3f} nats")

    fig, ax = subplots(figsize=(9, 3.2))
    pos = np.arange(16)
    ax.bar(pos - 0.27, freq_data.numpy(), 0.27, label="data")
    ax.bar(pos, exact.numpy(), 0.27, label="model p(v), exact")
    ax.bar(pos + 0.27, freq_gibbs.numpy(), 0.27, label="Gibbs samples (Pyro MCMC)")
    ax.set_xticks(pos, ["".join(str(int(b)) for b in V[i]) for i in range(16)], rotation=90, fontsize=8)
    ax.set_ylabel("probability")
    ax.legend(fontsize=8)
    ax.set_title("a 4+3 unit Boltzmann machine after training: its visible units reproduce the data", fontsize=9)
    path = save_figure(fig, out / "figures" / "visible_distribution.png")
    print(path)


if __name__ == "__main__":
    main()
