"""``ppgen``: the command line.

::

    ppgen list                                   families, zoo specs, recipes, datasets
    ppgen data fetch NAME                        into the cache (~/.cache/ppgen or $PPGEN_DATA)
    ppgen fit SPEC [--inference RECIPE] [--set KEY=VALUE]... [--epochs N] [--out RUN] [--seed S]
                   [--resume] [--device D] [--devices N] [--no-figures] [--no-progress]
    ppgen sample RUN [-n N] [-o FILE.png|FILE.npz] [--given SITE=VALUE]...
    ppgen evaluate RUN [--json] [--k K] [--ais-runs R] [--ais-steps S] [--limit N] [--bayes-k K]
                   [--quality-samples N | --no-quality] [--no-progress]
    ppgen diagnose RUN
    ppgen compare RUN... [-o FILE.png]

Exit status: 0 ok, 2 bad input (spec, flags, data; the message says what to change), 130 interrupted
(a checkpoint was saved; continue with ``--resume``), 1 anything else.

:func:`main` turns errors into those exit codes; :mod:`ppgen.cli.parser` holds each command's arguments,
:mod:`ppgen.cli.catalogue` the commands on what ships with ppgen (list, init, data fetch),
:mod:`ppgen.cli.commands` the commands on a run (fit, sample, evaluate, diagnose, compare) and
:mod:`ppgen.cli.output` how their tables and descriptions are printed.
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import Sequence

from ppgen.cli.parser import build_parser

__all__ = ["build_parser", "main"]

#: The most characters of one error message printed (messages cut values short themselves; this is the
#: last guard against one that does not).
MAX_MESSAGE = 8000


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
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
