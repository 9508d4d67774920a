"""Which forward-backward is faster at which size: the scaled recursion, the log-space recursion and the
parallel scan of :func:`ppgen.models.bayesian.forward_backward.forward_backward`, timed side by side on the E-step of S
parameter values, N sequences of T steps and K states (float64, one thread), with their results checked
against each other. The ``auto`` rule of :func:`ppgen.models.bayesian.forward_backward.choose_method` is read off this table.

    python benchmarks/hmm_forward_backward.py [--device cuda]

Writes ``benchmarks/results/hmm_forward_backward.md`` (``..._cuda.md`` on a GPU).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ppgen.models.bayesian.forward_backward import choose_method, forward_backward  # noqa: E402

from machine import cpu_model, format_load, load_average  # noqa: E402

SIZES = [  # (S, N, T, K)
    (1, 21, 8, 2), (1, 320, 50, 3), (10, 320, 50, 3), (1, 320, 60, 2), (10, 320, 60, 2),
    (1, 2000, 200, 3), (10, 2000, 200, 3), (1, 1, 1000, 3), (1, 10, 1000, 3), (1, 100, 1000, 3),
    (1, 1, 10000, 3), (1, 10, 10000, 3), (1, 1000, 100, 8), (1, 10, 1000, 8), (1, 1, 5000, 8),
]
#: The scan keeps about S N T K^3 numbers for its gradient; beyond this many it is not run.
SCAN_LIMIT = 50_000_000


def problem(s: int, n: int, t: int, k: int, device: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    e = 2 * torch.randn(s, n, t, k, generator=g, dtype=torch.float64)
    log_pi = torch.log_softmax(torch.randn(s, k, generator=g, dtype=torch.float64), -1)
    log_a = torch.log_softmax(torch.randn(s, k, k, generator=g, dtype=torch.float64) + 2 * torch.eye(k), -1)
    return e.to(device), log_pi.to(device), log_a.to(device)


def timed(method: str, args: tuple, device: str, budget: float = 2.0) -> tuple[float, tuple]:
    """The best of up to 5 runs (fewer if one takes longer than ``budget`` seconds)."""
    best, out = float("inf"), None
    for _ in range(5):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = forward_backward(*args, method=method)
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
        if best > budget:
            break
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = []
    for s, n, t, k in SIZES:
        data = problem(s, n, t, k, args.device)
        times, outs = {}, {}
        for method in ("scaled", "log", "scan"):
            if method == "scan" and s * n * t * k**3 > SCAN_LIMIT:
                continue
            if method == "log" and s * n * t > 2_000_000:
                continue
            times[method], outs[method] = timed(method, data, args.device)
        ref = outs["scaled"]
        for method, out in outs.items():
            for a, b in zip(out, ref):
                torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)
        fastest = min(times, key=times.get)
        auto = choose_method(s, n, t, k, device=torch.device(args.device))
        rows.append((s, n, t, k, times, fastest, auto))
        shown = ", ".join(f"{m} {1e3 * v:.1f} ms" for m, v in times.items())
        print(f"S={s} N={n} T={T_(t)} K={k}: {shown}; fastest {fastest}, auto {auto}", flush=True)
    write(rows, args.device)


def T_(t: int) -> str:
    return f"{t:,}"


def write(rows: list, device: str) -> None:
    suffix = "" if device == "cpu" else f"_{device}"
    out = ROOT / "benchmarks" / "results" / f"hmm_forward_backward{suffix}.md"
    where = cpu_model() if device == "cpu" else torch.cuda.get_device_name()
    lines = [
        "# HMM forward-backward: scaled recursion, log-space recursion, parallel scan",
        "",
        f"`python benchmarks/hmm_forward_backward.py{'' if device == 'cpu' else ' --device ' + device}` on "
        f"{dt.date.today().isoformat()}; {where}; one thread; load average {format_load(load_average())} "
        f"after. Python {platform.python_version()}, torch {torch.__version__}. float64.",
        "",
        "The E-step (log-likelihood, state marginals, expected transition counts) of S parameter values on N "
        "sequences of T steps with K states; the best of up to 5 runs, in milliseconds; all methods agree to 1e-9. "
        "`-`: not run (the log recursion beyond 2 million steps, the scan beyond 50 million numbers to keep).",
        "",
        "| S | N | T | K | scaled | log | scan | fastest | auto picks |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s, n, t, k, times, fastest, auto in rows:
        cell = lambda m: f"{1e3 * times[m]:.1f}" if m in times else "-"  # noqa: E731
        lines.append(f"| {s} | {n:,} | {t:,} | {k} | {cell('scaled')} | {cell('log')} | {cell('scan')} | {fastest} | {auto} |")
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
