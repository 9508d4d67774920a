"""The arguments of each ``ppgen`` command: one sub-parser per command, each naming the function that runs it."""

from __future__ import annotations

import argparse

from ppgen.cli.catalogue import cmd_data_fetch, cmd_init, cmd_list
from ppgen.cli.commands import cmd_compare, cmd_diagnose, cmd_evaluate, cmd_fit, cmd_sample


def _seed(text: str) -> int:
    """An argparse type: a seed from 0 to :data:`ppgen.spec.MAX_SEED`."""
    from ppgen.spec import SpecError, check_seed

    try:
        return check_seed(int(text))
    except (ValueError, SpecError) as exc:
        raise argparse.ArgumentTypeError(str(exc) if isinstance(exc, SpecError) else f"expected an integer, got {text[:40]!r}")


#: The RUN argument: the files of a run folder it reads (see ppgen/store/folder.py).
RUN_HELP = "run folder written by ppgen fit (it reads RUN/spec.yaml and RUN/checkpoints/last.pt)"


def build_parser() -> argparse.ArgumentParser:
    """The ``ppgen`` parser. No parser takes an abbreviation of an option (``--epoch`` for ``--epochs``): a
    misspelled option is refused with its name rather than read as whichever option it begins."""
    p = argparse.ArgumentParser(prog="ppgen", allow_abbrev=False,
                                description="Define, fit, sample, evaluate and diagnose generative models.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("list", help="families, zoo specs, inference recipes and data sets", allow_abbrev=False)
    s.set_defaults(func=cmd_list)

    s = sub.add_parser("init", help="copy a zoo spec or recipe into this folder to edit it", allow_abbrev=False)
    s.add_argument("name", help="a zoo spec or recipe name (see ppgen list), e.g. vae or pcd")
    s.add_argument("-o", "--output", metavar="FILE", help="where to write it (default NAME.yaml here)")
    s.set_defaults(func=cmd_init)

    s = sub.add_parser("data", help="data sets: ppgen data fetch NAME", allow_abbrev=False)
    dsub = s.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    f = dsub.add_parser("fetch", help="fetch a data set into the cache", allow_abbrev=False)
    f.add_argument("name", help="data set name (see ppgen list)")
    f.set_defaults(func=cmd_data_fetch)

    s = sub.add_parser("fit", help="fit a model spec with an inference recipe", allow_abbrev=False)
    s.add_argument("spec", help="model spec: a zoo name (vae; see ppgen list) or a YAML file (my_vae.yaml)")
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
    s.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                   help="progress on stderr: a bar on a terminal, elsewhere (a notebook, a log file) a line every "
                        "10 to 30 s within an epoch; and a line at the end of each epoch (default on)")
    s.set_defaults(func=cmd_fit)

    s = sub.add_parser("sample", help="draw samples from a fitted run", allow_abbrev=False)
    s.add_argument("run", metavar="RUN", help=RUN_HELP)
    s.add_argument("-n", type=int, default=64, help="number of samples")
    s.add_argument("-o", "--output", help="FILE.png (a picture) or FILE.npz (the arrays); default RUN/figures/samples-N.png")
    s.add_argument("--seed", type=_seed, default=0)
    s.add_argument("--given", action="append", default=[], metavar="SITE=VALUE",
                   help="fix a site of the model, e.g. --given y=3 (a class of the label site); repeatable")
    s.set_defaults(func=cmd_sample)

    s = sub.add_parser("evaluate", help="test NLL in nats and bits/dim, family metrics (into RUN/evaluation.json)",
                       allow_abbrev=False)
    s.add_argument("run", metavar="RUN", help=RUN_HELP)
    s.add_argument("--json", action="store_true", help="print JSON")
    s.add_argument("--k", type=int, help="VAE and programs: importance samples per test example (default 1000); the "
                   "estimate is a lower bound on log p(x) that tightens as k grows, and test_nll_mc_stderr is its "
                   "Monte Carlo error, not the gap to log p(x)")
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

    s = sub.add_parser("diagnose", help="ArviZ InferenceData (RUN/idata.nc), summary and plots (RUN/figures/)",
                       allow_abbrev=False)
    s.add_argument("run", metavar="RUN", help=RUN_HELP)
    s.set_defaults(func=cmd_diagnose)

    s = sub.add_parser("compare", help="one table and one figure across runs", allow_abbrev=False)
    s.add_argument("runs", nargs="+", metavar="RUN",
                   help="run folders written by ppgen fit; RUN/evaluation.json, where ppgen evaluate wrote one, "
                        "gives the likelihood and sample-quality columns")
    s.add_argument("-o", "--output", default="compare.png", help="figure path (default compare.png)")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(func=cmd_compare)
    return p
