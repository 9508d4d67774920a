"""Draw the figures shown in docs/figures/ from short fits on real and toy data, through the command line.

    PYTHONPATH=. OMP_NUM_THREADS=1 python docs/figures/make.py docs/figures/after [--work DIR]

Each figure comes from a run of a few seconds (``ppgen fit``, ``ppgen diagnose``, ``ppgen compare`` on a
slice of MNIST, the toy mixtures or the GDP series); the runs are kept in ``--work`` (default: a temporary
folder). The folder gets a copy of each figure scaled down to at most 900 px a side and ``sizes.txt``, the
size in pixels of each figure as ppgen wrote it.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MNIST = ["--set", "data.limit=1000"]


def ppgen(*args: str) -> None:
    """One ``ppgen`` command, in this process, its output kept quiet."""
    from ppgen.cli import main

    with contextlib.redirect_stdout(io.StringIO()):
        code = main([str(a) for a in args])
    if code:
        raise SystemExit(f"ppgen {' '.join(map(str, args))}: exit {code}")


def fit(work: Path, name: str, spec: str, recipe: str, *overrides: str, epochs: int = 1) -> Path:
    out = work / name
    ppgen("fit", ROOT / "models" / f"{spec}.yaml", "--inference", ROOT / "inference" / f"{recipe}.yaml",
          "--epochs", epochs, "--out", out, "--no-progress", *overrides)
    return out


def runs(work: Path) -> dict[str, Path]:
    """The figures, by the name they get in the output folder."""
    vae = fit(work, "vae", "vae", "svi", *MNIST)
    ppgen("diagnose", vae)
    vae3 = fit(work, "vae_blobs3", "vae", "svi", "--set", "data.name=toymix", "--set", "data.distribution=blobs3",
               "--set", "data.binarize=null", "--set", "likelihood.kind=gaussian", "--set", "latent.dim=2",
               "--set", "encoder.hidden=[32]", "--set", "decoder.hidden=[32]", epochs=3)
    gan = fit(work, "gan", "gan", "adversarial", *MNIST, "--set", "generator.hidden=[128,256]",
              "--set", "inference.log_every=5", epochs=2)
    ppgen("diagnose", gan)
    rbm = fit(work, "rbm", "rbm", "cd", *MNIST, "--set", "hidden=100", "--set", "sampling.steps=100",
              "--set", "sampling.warmup=50", "--set", "sampling.draws=100")
    ppgen("diagnose", rbm)
    dbn = fit(work, "dbn", "dbn", "layerwise", *MNIST, "--set", "hidden=[100,50]", "--set", "sampling.steps=50",
              "--set", "inference.layer_epochs=1", "--set", "inference.log_every=2", epochs=2)
    nuts = fit(work, "gmm_nuts", "gmm", "nuts", "--set", "data.n=200", "--set", "data.batch_size=200",
               "--set", "inference.warmup=30", "--set", "inference.draws_per_epoch=30", "--set", "inference.jit=false",
               epochs=2)
    hmm = fit(work, "hmm", "hmm", "em", epochs=50)
    pcnn = fit(work, "pixelcnn_y", "pixelcnn", "mle", *MNIST, "--set", "conditional=true", "--set", "net.channels=16",
               "--set", "net.blocks=2", "--set", "net.head=16")
    ppgen("diagnose", pcnn)
    ppgen("compare", vae, gan, rbm, pcnn, "-o", work / "compare.png")
    return {
        "vae_posterior": vae / "figures" / "posterior.png",
        "nuts_training_curves": nuts / "figures" / "training_curves.png",
        "dbn_training_curves": dbn / "figures" / "training_curves.png",
        "compare": work / "compare.png",
        "hmm_transition": hmm / "figures" / "transition.png",
        "rbm_gibbs_rank": rbm / "figures" / "gibbs_rank.png",
        "pixelcnn_posterior": pcnn / "figures" / "posterior.png",
        "vae_latent": vae3 / "figures" / "latent.png",
        "gan_training_curves": gan / "figures" / "training_curves.png",
        "gan_predictive": gan / "figures" / "predictive.png",
        "gan_pixel_means": gan / "figures" / "pixel_means.png",
        "gan_losses": gan / "figures" / "losses.png",
    }


def shrink(src: Path, dst: Path, side: int = 900) -> tuple[int, int]:
    """Copy ``src`` to ``dst`` at most ``side`` px a side; return the size of ``src``."""
    from PIL import Image

    with Image.open(src) as im:
        size = im.size
        im = im.convert("RGB")
        im.thumbnail((side, side), Image.LANCZOS)
        dst.parent.mkdir(parents=True, exist_ok=True)
        # a palette of 64 colours keeps a noisy sample grid small; line plots lose nothing visible
        im.quantize(64).save(dst, optimize=True)
    return size


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", type=Path, help="where the scaled copies go")
    p.add_argument("--work", type=Path, help="where the runs go (default: a temporary folder)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        figures = runs(work)
        lines = []
        for name, path in figures.items():
            w, h = shrink(path, args.folder / f"{name}.png")
            lines.append(f"{name}: {w}x{h}")
        (args.folder / "sizes.txt").write_text("\n".join(lines) + "\n")
        print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
