"""``ppgen``: the command line.

::

    ppgen list                                   families, zoo specs, recipes, datasets
    ppgen data fetch NAME                        into the cache (~/.cache/ppgen or $PPGEN_DATA)
    ppgen fit SPEC [--inference RECIPE] [--set KEY=VALUE]... [--epochs N] [--out RUN] [--seed S]
                   [--resume] [--device D] [--devices N]
    ppgen sample RUN [-n N] [-o FILE.png|FILE.npz] [--given SITE=VALUE]...
    ppgen evaluate RUN [--json] [--k K] [--ais-runs R] [--ais-steps S] [--limit N] [--bayes-k K]
                   [--quality-samples N | --no-quality] [--no-progress]
    ppgen diagnose RUN
    ppgen compare RUN... [-o FILE.png]

Exit status: 0 ok, 2 bad input (spec, flags, data; the message says what to change), 130 interrupted
(a checkpoint was saved; continue with ``--resume``), 1 anything else.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any, Sequence


#: The most characters of one error message printed (messages cut values short themselves; this is the
#: last guard against one that does not).
MAX_MESSAGE = 8000


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    from ppgen.spec import SpecError, cut
    from ppgen.training.errors import Interrupted, TrainingError

    try:
        return int(args.func(args) or 0)
    except SpecError as exc:
        # Undecodable bytes of a command line (surrogates) are shown escaped, not fatal to the print.
        text = cut(str(exc), MAX_MESSAGE).encode("utf-8", "backslashreplace").decode("utf-8")
        print(f"ppgen: error: {text}", file=sys.stderr)
        return 2
    except Interrupted as exc:
        print(f"ppgen: {exc}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("ppgen: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (ppgen list | head): stop quietly, as other tools do
        try:
            sys.stdout = open(os.devnull, "w")  # nothing more to flush into the closed pipe at exit
        except OSError:
            pass
        return 141
    except TrainingError as exc:
        print(f"ppgen: training failed: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # the last resort: say what happened, keep the traceback for PPGEN_DEBUG
        if os.environ.get("PPGEN_DEBUG"):
            traceback.print_exc()
        print(f"ppgen: unexpected error: {type(exc).__name__}: {exc} (set PPGEN_DEBUG=1 for the traceback)",
              file=sys.stderr)
        return 1


def _seed(text: str) -> int:
    """An argparse type: a seed from 0 to :data:`ppgen.spec.MAX_SEED`."""
    from ppgen.spec import SpecError, check_seed

    try:
        return check_seed(int(text))
    except (ValueError, SpecError) as exc:
        raise argparse.ArgumentTypeError(str(exc) if isinstance(exc, SpecError) else f"expected an integer, got {text[:40]!r}")


#: The RUN argument: the files of a run folder it reads (see ppgen/store/folder.py).
RUN_HELP = "run folder written by ppgen fit (it reads RUN/spec.yaml and RUN/checkpoints/last.pt)"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ppgen", description="Define, fit, sample, evaluate and diagnose generative models.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("list", help="families, zoo specs, inference recipes and data sets")
    s.set_defaults(func=cmd_list)

    s = sub.add_parser("init", help="copy a zoo spec or recipe into this folder to edit it")
    s.add_argument("name", help="a zoo spec or recipe name (see ppgen list), e.g. vae or pcd")
    s.add_argument("-o", "--output", metavar="FILE", help="where to write it (default NAME.yaml here)")
    s.set_defaults(func=cmd_init)

    s = sub.add_parser("data", help="data sets: ppgen data fetch NAME")
    dsub = s.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    f = dsub.add_parser("fetch", help="fetch a data set into the cache")
    f.add_argument("name", help="data set name (see ppgen list)")
    f.set_defaults(func=cmd_data_fetch)

    s = sub.add_parser("fit", help="fit a model spec with an inference recipe")
    s.add_argument("spec", help="model spec: a YAML file (models/vae.yaml) or a zoo name (vae; see ppgen list)")
    s.add_argument("--inference", "-i", metavar="RECIPE",
                   help="inference recipe: a YAML file or a zoo name (pcd); default: the family's routine")
    s.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a spec key (latent.dim=2); keys under inference. go to the recipe")
    s.add_argument("--epochs", type=int, help="number of epochs (overrides the recipe)")
    s.add_argument("--out", "-o", metavar="RUN", help="run folder (default runs/<name>-<time>)")
    s.add_argument("--seed", type=_seed, help="random seed (default 0; a resumed run keeps its own)")
    s.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint "
                   "(RUN/checkpoints/last.pt)")
    s.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    s.add_argument("--devices", type=int, default=1, help="data-parallel processes (default 1)")
    s.add_argument("--no-figures", action="store_true", help="skip the figures after fitting (RUN/figures/)")
    s.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar (default: on a terminal)")
    s.set_defaults(func=cmd_fit)

    s = sub.add_parser("sample", help="draw samples from a fitted run")
    s.add_argument("run", metavar="RUN", help=RUN_HELP)
    s.add_argument("-n", type=int, default=64, help="number of samples")
    s.add_argument("-o", "--output", help="FILE.png (a picture) or FILE.npz (the arrays); default RUN/figures/samples-N.png")
    s.add_argument("--seed", type=_seed, default=0)
    s.add_argument("--given", action="append", default=[], metavar="SITE=VALUE",
                   help="fix a site of the model, e.g. --given y=3 (a class of the label site); repeatable")
    s.set_defaults(func=cmd_sample)

    s = sub.add_parser("evaluate", help="test NLL in nats and bits/dim, family metrics (into RUN/evaluation.json)")
    s.add_argument("run", metavar="RUN", help=RUN_HELP)
    s.add_argument("--json", action="store_true", help="print JSON")
    s.add_argument("--k", type=int, help="VAE: importance samples per example (default 1000)")
    s.add_argument("--ais-runs", type=int, help="RBM/BM/DBN: AIS runs for log Z (default: the spec's ais.runs)")
    s.add_argument("--ais-steps", type=int, help="RBM/BM/DBN: AIS temperatures (default: the spec's ais.steps)")
    s.add_argument("--limit", type=int, help="evaluate only the first N test examples")
    s.add_argument("--bayes-k", type=int, help="programs with a label site: importance samples per example and class "
                   "of bayes_accuracy (default 20)")
    s.add_argument("--quality-samples", type=int, metavar="N",
                   help="samples (and as many test images) for the sample-quality metrics of image and toy data "
                        "(default 10000, fewer where a family samples slowly)")
    s.add_argument("--no-quality", action="store_true", help="skip the sample-quality metrics")
    s.add_argument("--seed", type=_seed, default=0)
    s.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                   help="progress on stderr: a bar on a terminal, elsewhere (a notebook, a log file) a line every "
                        "10 to 30 s (default on); each long phase's estimated time is said in any case")
    s.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("diagnose", help="ArviZ InferenceData (RUN/idata.nc), summary and plots (RUN/figures/)")
    s.add_argument("run", metavar="RUN", help=RUN_HELP)
    s.set_defaults(func=cmd_diagnose)

    s = sub.add_parser("compare", help="one table and one figure across runs")
    s.add_argument("runs", nargs="+", metavar="RUN", help="run folders written by ppgen fit; RUN/evaluation.json, where ppgen evaluate wrote one, gives the "
                   "likelihood and sample-quality columns")
    s.add_argument("-o", "--output", default="compare.png", help="figure path (default compare.png)")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(func=cmd_compare)
    return p


# --------------------------------------------------------------------------- commands


def repo_folder(name: str) -> Path | None:
    """The zoo (``models``) or recipes (``inference``) folder (see :func:`ppgen.registry.repo_folder`)."""
    from ppgen.registry import repo_folder as folder

    return folder(name)


def _first_sentence(doc: str | None) -> str:
    """The first sentence of a docstring's first paragraph, on one line."""
    from ppgen.zoo import _sentence_end

    paragraph = " ".join((doc or "").strip().split("\n\n", 1)[0].split())
    end = _sentence_end(paragraph)
    return paragraph[:end] if end is not None else paragraph


def _row(name: str, text: str, width: int = 100) -> str:
    import textwrap

    return textwrap.fill(text, width, initial_indent=f"  {name:18s} ", subsequent_indent=" " * 21) if text else f"  {name}"


def cmd_list(args: argparse.Namespace) -> int:
    from ppgen import registry, zoo
    from ppgen.data import SOURCES

    print("families:")
    for name in registry.family_names():
        print(_row(name, _first_sentence(registry.family(name).__doc__)))
    print("routines:")
    for name in registry.routine_names():
        print(_row(name, _first_sentence(sys.modules[registry.routine(name).__module__].__doc__)))
    for title, kind in (("zoo specs (ppgen fit NAME)", "models"), ("inference recipes (--inference NAME)", "inference")):
        where = zoo.folder(kind)
        print(f"{title}, in {where if where else 'no ' + kind + ' folder found'}:")
        for name in zoo.names(kind):
            print(_row(name, zoo.describe(where / f"{name}.yaml")))
    print("data sets:")
    for name, text in SOURCES.items():
        print(_row(name, text))
    print("ppgen init NAME copies a zoo spec or recipe here to edit.")
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    from ppgen import zoo
    from ppgen.paths import check_output_file
    from ppgen.spec import SpecError

    found = [(kind, p) for kind in zoo.KINDS if (p := zoo.path(kind, args.name)) is not None]
    if not found:
        raise SpecError(f"init {args.name[:100]!r}: no zoo spec or recipe of that name; zoo specs: "
                        f"{', '.join(zoo.names('models'))}; recipes: {', '.join(zoo.names('inference'))}")
    kind, source = found[0]
    target = Path(args.output) if args.output else Path(f"{source.stem}.yaml")
    if target.exists() or target.is_symlink():
        raise SpecError(f"init: {target} already exists; remove it or pass -o OTHER.yaml")
    check_output_file(target, "-o", (".yaml", ".yml"))
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_bytes(source.read_bytes())
    tmp.replace(target)
    what = "spec" if kind == "models" else "recipe"
    use = f"ppgen fit {target}" if kind == "models" else f"ppgen fit SPEC --inference {target}"
    print(f"{target}: a copy of the zoo {what} {source.stem!r}; edit it, then: {use}")
    return 0


def cmd_data_fetch(args: argparse.Namespace) -> int:
    from ppgen.data import SOURCES
    from ppgen.spec import SpecError

    if args.name == "mnist":
        from ppgen.data.mnist import fetch_mnist

        print(fetch_mnist())
        return 0
    if args.name not in SOURCES:
        raise SpecError(f"data fetch: unknown data set {args.name!r}; accepted: {', '.join(SOURCES)}")
    print(f"{args.name}: nothing to fetch ({SOURCES[args.name]})")
    return 0


def cmd_fit(args: argparse.Namespace) -> int:
    import ppgen
    from ppgen.plots.common import metric_labels, training_curves

    spec_over = [o for o in args.overrides if not o.startswith("inference.")]
    recipe_over = [o.removeprefix("inference.") for o in args.overrides if o.startswith("inference.")]
    run = ppgen.fit(
        args.spec,
        args.inference,
        out=args.out,
        epochs=args.epochs,
        seed=args.seed,
        resume=args.resume,
        overrides=spec_over,
        recipe_overrides=recipe_over,
        devices=args.devices,
        accelerator=args.device,
        progress=args.progress,
    )
    print(f"run: {run.path}")
    if not args.no_figures:
        from ppgen.plots import families
        from ppgen.store.lock import run_lock

        folder = run.path / "figures"
        try:
            with run_lock(run.path, "ppgen fit (figures)"):
                paths = families.figures(run.model, folder, run.data)
                curves = training_curves(run.metrics, folder / "training_curves.png",
                                         title=run.spec.name or run.spec.family,
                                         labels=metric_labels(run.recipe, run.spec))
        except KeyboardInterrupt:
            print(f"ppgen: interrupted while drawing the figures; the fitted run in {run.path} is complete "
                  "(--no-figures skips them)", file=sys.stderr)
            return 130
        if curves:
            paths["training_curves"] = curves
        for name, path in paths.items():
            print(f"  {name}: {path}")
    last = [m for m in run.metrics if m.get("kind") == "epoch"]
    if last:
        rec = last[-1]
        extra = f", validation loss {rec['val_loss']:.4f}" if "val_loss" in rec else ""
        by_layer = final_losses_by_layer(last)
        if by_layer:
            print(f"epoch {rec['epoch']}: final losses by layer (each layer's own objective on its own input, "
                  "not a loss of the whole model):")
            for line in by_layer:
                print(f"  {line}")
        else:
            print(f"epoch {rec['epoch']}: training loss {rec['loss']:.4f}{extra}")
        ended = [m for m in run.metrics if m.get("kind") == "train" and m.get("epoch") == rec["epoch"] and m.get("converged")]
        if ended and rec["epoch"] < run.recipe.epochs:
            print(f"converged at epoch {rec['epoch']} of the {run.recipe.epochs} asked: further iterations would "
                  "change nothing, so the run ends here")
    return 0


def final_losses_by_layer(epochs: list[dict[str, Any]]) -> list[str]:
    """For a run trained one layer at a time (epoch records with a ``layer``, e.g. a DBN's layerwise
    routine), one line per layer with the losses of the last epoch that trained it; [] otherwise. The
    last epoch's loss alone is the top layer's only."""
    last: dict[int, dict[str, Any]] = {}
    for rec in epochs:
        if isinstance(rec.get("layer"), (int, float)) and not isinstance(rec.get("layer"), bool):
            last[int(rec["layer"])] = rec
    if not last:
        return []
    top = max(last)
    lines = []
    for layer in sorted(last):
        rec = last[layer]
        where = " (bottom)" if layer == 0 else " (top)" if layer == top else ""
        val = f", validation loss {rec['val_loss']:.4f}" if isinstance(rec.get("val_loss"), (int, float)) else ""
        loss = f"training loss {rec['loss']:.4f}" if isinstance(rec.get("loss"), (int, float)) else "no training loss"
        lines.append(f"layer {layer + 1}{where}: {loss}{val} (epoch {rec['epoch']})")
    return lines


#: What ``sample`` may be asked for: samples in one picture, and values (samples x numbers in each) in all.
MAX_PICTURE_SAMPLES = 10_000
MAX_SAMPLE_VALUES = 1 << 28
PICTURES = (".png", ".jpg", ".pdf", ".svg")


def cmd_sample(args: argparse.Namespace) -> int:
    from ppgen.paths import check_output_file
    from ppgen.store.folder import open_run
    from ppgen.store.lock import run_lock
    from ppgen.spec import SpecError

    if args.n < 1:
        raise SpecError(f"-n: must be at least 1, got {args.n}")
    out = check_output_file(args.output, "-o", (*PICTURES, ".npz")) if args.output else None
    picture = out is None or out.suffix.lower() in PICTURES
    if picture and args.n > MAX_PICTURE_SAMPLES:
        raise SpecError(f"-n {args.n}: a picture shows at most {MAX_PICTURE_SAMPLES} samples; "
                        "write the arrays with -o FILE.npz for more")
    run = open_run(args.run)
    dim = run.model.info.dim
    if args.n * dim > MAX_SAMPLE_VALUES:
        raise SpecError(f"-n {args.n}: {args.n} samples of {dim} numbers each would take "
                        f"{4 * args.n * dim / 2**30:.3g} GiB; ask for at most {MAX_SAMPLE_VALUES // dim}")
    if out is not None:
        return _sample(args, run, out, picture)
    with run_lock(run.path, "ppgen sample"):  # the picture goes into the run folder
        return _sample(args, run, run.path / "figures" / f"samples-{args.n}.png", picture)


def _sample(args: argparse.Namespace, run: Any, out: Path, picture: bool) -> int:
    import numpy as np

    from ppgen.plots.common import save_samples
    from ppgen.spec import SpecError

    if args.given:
        from ppgen.given import samples_given

        x = samples_given(run, args.n, args.given, seed=args.seed, display=picture)
    else:
        x = run.samples(args.n, seed=args.seed, display=picture)
    try:
        if not picture:
            out.parent.mkdir(parents=True, exist_ok=True)
            np.savez(out, x=x.cpu().numpy())
        else:
            ref = None if x.dim() == 4 else run.data.split("test")[0]
            save_samples(x, out, f"{args.n} samples from {run.spec.name or run.spec.family}", reference=ref)
    except OSError as exc:
        raise SpecError(f"-o {out}: cannot write it ({exc.strerror or exc})") from None
    print(out)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ppgen.evaluation.evaluate import evaluate
    from ppgen.spec import SpecError

    ais = {name: value for name, value in (("ais_runs", args.ais_runs), ("ais_steps", args.ais_steps)) if value is not None}
    res = evaluate(args.run, k=args.k, limit=args.limit, seed=args.seed, progress=args.progress,
                   bayes_k=args.bayes_k, quality=not args.no_quality, quality_samples=args.quality_samples, **ais)
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        for key, value in res.items():
            print(f"{key:28s} {value:.4f}" if isinstance(value, float) else f"{key:28s} {value}")
    return 0


def cmd_diagnose(args: argparse.Namespace) -> int:
    import pandas as pd

    from ppgen.diagnostics.diagnose import diagnose
    from ppgen.store.folder import open_run
    from ppgen.store.lock import run_lock

    run = open_run(args.run)
    with run_lock(run.path, "ppgen diagnose"):
        out = diagnose(run)
    with pd.option_context("display.width", 140, "display.max_columns", 20):
        print(out["summary"])
    print(f"idata: {out['idata']}")
    for name, path in out["figures"].items():
        print(f"  {name}: {path}")
    return 0


#: Runs in one comparison figure (a panel each).
MAX_COMPARE = 16


def cmd_compare(args: argparse.Namespace) -> int:
    from ppgen.evaluation.compare import compare, incomparable
    from ppgen.paths import check_output_file
    from ppgen.spec import SpecError

    if len(args.runs) > MAX_COMPARE:
        raise SpecError(f"compare: {len(args.runs)} runs; the figure has a panel per run, at most {MAX_COMPARE}")
    check_output_file(args.output, "-o", PICTURES)
    table, fig = compare(args.runs, args.output)
    if args.json:
        print(json.dumps(table, indent=2))
    else:
        _print_table(table)
        print(f"figure: {fig}")
    for note in incomparable(table):
        print(f"ppgen: not comparable: {note}", file=sys.stderr)
    return 0


def _print_table(rows: list[dict[str, Any]]) -> None:
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    cells = [[_fmt(r.get(k)) for k in keys] for r in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    print("  ".join(k.ljust(w) for k, w in zip(keys, widths)))
    for c in cells:
        print("  ".join(v.ljust(w) for v, w in zip(c, widths)))


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


if __name__ == "__main__":
    sys.exit(main())
