"""The commands on a run: ``ppgen fit``, ``sample``, ``evaluate``, ``diagnose`` and ``compare``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ppgen.cli.output import final_losses, final_losses_by_layer, print_table


def cmd_fit(args: argparse.Namespace) -> int:
    import ppgen
    from ppgen.plots.curves import training_curves
    from ppgen.plots.metric_labels import metric_labels

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
        by_layer = final_losses_by_layer(last, run.recipe, run.spec)
        if by_layer:
            print(f"epoch {rec['epoch']}: final losses by layer (each layer's own objective on its own input, "
                  "not a loss of the whole model):")
            for line in by_layer:
                print(f"  {line}")
        else:
            print(f"epoch {rec['epoch']}: {final_losses(rec, run.recipe, run.spec)}")
        ended = [m for m in run.metrics if m.get("kind") == "train" and m.get("epoch") == rec["epoch"] and m.get("converged")]
        if ended and rec["epoch"] < run.recipe.epochs:
            print(f"converged at epoch {rec['epoch']} of the {run.recipe.epochs} asked: further iterations would "
                  "change nothing, so the run ends here")
    return 0


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
        # each row's not_comparable says which of its numbers are in doubt; the reasons also go to stderr
        print(json.dumps(table, indent=2))
        for note in incomparable(table):
            print(f"ppgen: not comparable: {note}", file=sys.stderr)
    else:
        print_table(table)
        print(f"figure: {fig}")
    return 0
