"""Two GAN toys whose answers are known, fitted and drawn with the zoo's specs and recipes.

1. Inverse transform sampling (the lecture's reference, sdsra-ai 2017): a generator from Uniform(0, 1)
   to a 1-D target. The monotone map that pushes U(0, 1) onto a distribution is its inverse CDF, so
   the figure sets G(u) against F^-1(u) and reports the Kolmogorov-Smirnov distance of the samples.
2. The ring of 8 Gaussians: does the generator cover every mode, or collapse onto a few?

    python examples/gan_toys.py                       # the mixture target and the ring, zoo budgets
    python examples/gan_toys.py --target exponential --epochs-1d 300 --epochs-ring 30

The same from the command line:

    ppgen fit models/gan1d.yaml -i inference/adversarial_1d.yaml --set data.distribution=mixture --out runs/gan1d
    ppgen evaluate runs/gan1d                          # ks_statistic
    (for the exponential add --set generator.output=softplus: its support is [0, inf))
    ppgen fit models/gan_ring8.yaml -i inference/adversarial_toy.yaml --out runs/ring8
    ppgen evaluate runs/ring8                          # modes_covered, high_quality_share

Figures land in each run's ``figures/`` folder (``generator.png``, ``discriminator.png``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import ppgen
from ppgen.data.toy import TOY1D
from ppgen.evaluation.evaluate import evaluate
from ppgen.store.checkpoint import CHECKPOINT
from ppgen.plots import families

ROOT = Path(__file__).resolve().parent.parent


def fit_and_show(spec: str, recipe: str, out: Path, epochs: int | None, overrides: list[str]) -> dict:
    run = ppgen.fit(ROOT / spec, ROOT / recipe, out=out, epochs=epochs, overrides=overrides,
                    resume=(out / CHECKPOINT).exists(), progress=sys.stderr.isatty())
    figures = families.figures(run.model, run.path / "figures", run.data)
    result = evaluate(run)
    for name, path in figures.items():
        print(f"  {name}: {path}")
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--target", choices=list(TOY1D), default="mixture")
    p.add_argument("--epochs-1d", type=int, default=None, help="default: the recipe's (1000)")
    p.add_argument("--epochs-ring", type=int, default=None, help="default: the recipe's (100)")
    p.add_argument("--out", type=Path, default=Path("runs/gan_toys"))
    args = p.parse_args(argv)

    print(f"1-D: Uniform(0, 1) -> {args.target}")
    # The exponential lives on [0, inf): a softplus output declares that support (with the identity the
    # generator tends to fold at 0; benchmarks/results/gan_toys_1d.md measures both).
    support = ["generator.output=softplus"] if args.target == "exponential" else []
    res = fit_and_show("models/gan1d.yaml", "inference/adversarial_1d.yaml", args.out / f"gan1d-{args.target}",
                       args.epochs_1d, [f"data.distribution={args.target}", *support])
    print(f"  Kolmogorov-Smirnov distance of 10,000 samples to the exact CDF: {res['ks_statistic']:.4f}")

    print("2-D: the ring of 8 Gaussians")
    res = fit_and_show("models/gan_ring8.yaml", "inference/adversarial_toy.yaml", args.out / "ring8",
                       args.epochs_ring, [])
    print(f"  modes covered: {res['modes_covered']} of {res['modes_total']}; "
          f"high-quality samples: {100 * res['high_quality_share']:.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
