"""Fit time of ppgen's MAP fits against scikit-learn's GaussianMixture and hmmlearn, at equal
log-likelihood, measured side by side in one run.

    python benchmarks/gmm_hmm.py            # three repeats per case, larger data
    python benchmarks/gmm_hmm.py --quick    # one repeat, smaller data

Both sides start from the same parameters (ppgen's data-driven start: the best of ten k-means++ runs,
handed to the reference as its initial weights/means/precisions or start/transition/emission
parameters), so that the race is between the optimizers, not the initializations. The reference (EM:
sklearn's GaussianMixture or hmmlearn's GaussianHMM/CategoricalHMM) is first run to convergence (tol
1e-4, up to 1000 iterations); its training log-likelihood per example minus ``TOL`` nats per data point
(per sequence step for HMMs) is the target. Each side is then timed to the target: EM as the fit with the
fewest iterations that reaches it (found by doubling and bisection, each fit timed from the same start),
ppgen by MAP with the ``enum_svi`` routine (full batch, Adam at 0.05), through Pyro's TraceEnum_ELBO and
through the closed form (``fused``), stopped at the first step that reaches it. Only fitting is timed,
not the likelihood checks. Both sides run in this process on one thread. The ratio is ppgen's time over
EM's. ppgen's MAP includes weak priors, which cost less than the tolerance here.

Writes ``benchmarks/results/gmm_hmm.md`` (``gmm_hmm_quick.md`` with --quick).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import ppgen  # noqa: E402
from ppgen.inference.enum_svi import EnumSVI, EnumSVIConfig  # noqa: E402

#: Equal log-likelihood: within this many nats per data point (GMM) or per sequence step (HMM).
TOL = 1e-3
MAX_STEPS = 3000
MAX_EM_ITERATIONS = 1000


def gmm_case(n: int) -> dict:
    return {"name": f"GMM, blobs3 (2-D, K=3, full covariance), {int(0.8 * n)} points",
            "spec": {"family": "gmm", "components": 3, "covariance": "full",
                     "data": {"name": "toymix", "distribution": "blobs3", "n": n, "batch_size": n}},
            "unit": 1}


def hmm_cases(n: int) -> list[dict]:
    return [
        {"name": f"HMM, toyseq gaussian (K=3, T=50), {int(0.8 * n)} sequences",
         "spec": {"family": "hmm", "states": 3, "data": {"name": "toyseq", "distribution": "gaussian", "n": n,
                                                         "batch_size": n}}, "unit": 50},
        {"name": f"HMM, toyseq casino (K=2, 6 symbols, T=60), {int(0.8 * n)} sequences",
         "spec": {"family": "hmm", "states": 2, "emission": {"kind": "categorical", "symbols": 6},
                  "data": {"name": "toyseq", "distribution": "casino", "n": n, "batch_size": n}}, "unit": 60},
        {"name": "HMM, macro gdp (K=2, T=8), 21 windows",
         "spec": {"family": "hmm", "states": 2, "data": {"name": "macro", "distribution": "gdp", "batch_size": 100},
                  "prior": {"loc": {"mean": 3.0, "std": 10.0}, "scale": {"median": 3.0, "log_std": 2.0}}},
         "unit": 8},
    ]


# --------------------------------------------------------------------------- references


def start(spec: dict, x: torch.Tensor, seed: int) -> dict[str, np.ndarray]:
    """ppgen's data-driven starting point, as float64 arrays."""
    model = ppgen.build(spec)
    values = {k: v.double() for k, v in model.init_values(x, torch.Generator().manual_seed(seed)).items()}
    for k in ("weights", "initial", "transition", "emission_probs"):  # exactly normalized in float64
        if k in values:
            values[k] = values[k] / values[k].sum(-1, keepdim=True)
    return {k: v.numpy() for k, v in values.items()}


def fit_sklearn(x: np.ndarray, init: dict[str, np.ndarray], iterations: int = MAX_EM_ITERATIONS,
                tol: float = 1e-4) -> tuple[float, float]:
    from sklearn.mixture import GaussianMixture

    s, l = init["scales"], init["corr_cholesky"]
    cov = (s[:, :, None] * l) @ (s[:, :, None] * l).transpose(0, 2, 1)
    gm = GaussianMixture(3, covariance_type="full", tol=tol, max_iter=iterations, weights_init=init["weights"],
                         means_init=init["locs"], precisions_init=np.linalg.inv(cov))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "did not converge" when stopped early on purpose
        t0 = time.perf_counter()
        gm.fit(x)
        elapsed = time.perf_counter() - t0
    return elapsed, float(gm.score(x))


def fit_hmmlearn(x: np.ndarray, spec: dict, init: dict[str, np.ndarray], iterations: int = MAX_EM_ITERATIONS,
                 tol: float = 1e-4) -> tuple[float, float]:
    from hmmlearn import hmm

    n, t = x.shape[:2]
    flat = x.reshape(n * t, -1)
    lengths = [t] * n
    k = spec["states"]
    if spec.get("emission", {}).get("kind") == "categorical":
        model = hmm.CategoricalHMM(n_components=k, n_iter=iterations, tol=tol, init_params="")
        model.emissionprob_ = init["emission_probs"]
        flat = flat.astype(np.int64)
    else:
        model = hmm.GaussianHMM(n_components=k, covariance_type="diag", n_iter=iterations, tol=tol, init_params="")
        model.means_ = init["locs"]
        model.covars_ = init["scales"] ** 2
    model.startprob_ = init["initial"]
    model.transmat_ = init["transition"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # hmmlearn's notes on degenerate starts
        t0 = time.perf_counter()
        model.fit(flat, lengths)
        elapsed = time.perf_counter() - t0
    return elapsed, float(model.score(flat, lengths)) / n


def em_to_target(fit: Any, target: float) -> tuple[float, int]:
    """Seconds of the EM fit with the fewest iterations whose log-likelihood reaches ``target``, and
    that number (doubling, then bisection; every fit from the same start, without a tolerance)."""
    hi = 1
    while True:
        t, ll = fit(hi)
        if ll >= target or hi >= MAX_EM_ITERATIONS:
            break
        hi *= 2
    best = (t, hi)
    lo = hi // 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        t, ll = fit(mid)
        if ll >= target:
            hi, best = mid, (t, mid)
        else:
            lo = mid
    return best


# --------------------------------------------------------------------------- ppgen


def fit_ppgen(spec: dict, x: torch.Tensor, target: float, fused: bool, init: dict[str, np.ndarray]) -> tuple[float, float, int]:
    """Seconds until the training log-likelihood per example reaches ``target``, the value reached and
    the steps taken (NaN seconds if not reached within MAX_STEPS)."""
    model = ppgen.build(spec)
    model.point.set({k: torch.as_tensor(v, dtype=torch.float32) for k, v in init.items()})
    routine = EnumSVI(EnumSVIConfig(fused=fused, init="default"))
    state = routine.init(model)
    routine.n_total = x.shape[0]
    elapsed, ll = 0.0, -float("inf")
    for step in range(1, MAX_STEPS + 1):
        t0 = time.perf_counter()
        state, _ = routine.step(state, (x, None))
        elapsed += time.perf_counter() - t0
        with torch.no_grad():
            ll = float(model.log_likelihood(x)[0].double().mean())
        if ll >= target:
            return elapsed, ll, step
    return float("nan"), ll, MAX_STEPS


# --------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one repeat on smaller data")
    args = ap.parse_args()
    torch.set_num_threads(1)
    repeats = 1 if args.quick else 3
    n_gmm, n_seq = (1000, 100) if args.quick else (5000, 400)
    cases = [gmm_case(n_gmm), *hmm_cases(n_seq)]
    rows = []
    for case in cases:
        spec = case["spec"]
        data = ppgen.data.load(ppgen.load_spec(spec).data)
        x = data.train_x
        unit = case["unit"]
        ref_full, ref_t, ref_it, ref_ll, pp = [], [], [], [], {True: [], False: []}
        xn = x.double().numpy()
        for r in range(repeats):
            init = start(spec, x, seed=r)
            if spec["family"] == "gmm":
                fit = lambda m, tol=0.0: fit_sklearn(xn, init, m, tol)  # noqa: E731
            else:
                fit = lambda m, tol=0.0: fit_hmmlearn(xn, spec, init, m, tol)  # noqa: E731
            full_t, ll = fit(MAX_EM_ITERATIONS, 1e-4)
            target = ll - TOL * unit
            t, iters = em_to_target(fit, target)
            ref_full.append(full_t)
            ref_t.append(t)
            ref_it.append(iters)
            ref_ll.append(ll)
            for fused in (True, False):
                pp[fused].append(fit_ppgen(spec, x, target, fused, init))
            print(f"{case['name']} repeat {r}: EM {t:.3f}s ({iters} iterations; {full_t:.3f}s to converge) "
                  f"ll {ll / unit:.4f}; fused {pp[True][-1][0]:.3f}s ({pp[True][-1][2]} steps); "
                  f"traceenum {pp[False][-1][0]:.3f}s ({pp[False][-1][2]} steps)", flush=True)
        row = {"case": case["name"], "ref": statistics.median(ref_t), "ref_it": int(statistics.median(ref_it)),
               "ref_full": statistics.median(ref_full), "ref_ll": statistics.median(ref_ll) / unit}
        for fused in (True, False):
            times = [p[0] for p in pp[fused]]
            row[f"t_{fused}"] = statistics.median(times)
            row[f"ll_{fused}"] = statistics.median(p[1] for p in pp[fused]) / unit
            row[f"steps_{fused}"] = int(statistics.median(p[2] for p in pp[fused]))
        rows.append(row)
    write(rows, args.quick, repeats)


def write(rows: list[dict], quick: bool, repeats: int) -> None:
    name = "gmm_hmm_quick.md" if quick else "gmm_hmm.md"
    out = ROOT / "benchmarks" / "results" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = "python benchmarks/gmm_hmm.py" + (" --quick" if quick else "")
    lines = [
        "# Fit time at equal log-likelihood: ppgen MAP vs scikit-learn and hmmlearn (EM)",
        "",
        f"`{cmd}` on {dt.date.today().isoformat()}, a shared 2-core CPU (other jobs running; one thread per fit), "
        f"Python {platform.python_version()}, torch {torch.__version__}. Median of {repeats} repeat(s).",
        "",
        f"Both start from the same parameters (ppgen's k-means start). Target: EM's converged training "
        f"log-likelihood (tol 1e-4) minus {TOL} nats per point (per sequence step). EM time: the fit with the "
        f"fewest iterations that reaches the target. ppgen: MAP by the enum_svi routine, full batch, Adam 0.05, "
        f"until it reaches the target. Only fitting is timed. Ratio = ppgen time / EM time (below 1: ppgen is "
        f"faster). Log-likelihoods are per data point (GMM) or per sequence step (HMM).",
        "",
        "| case | EM s to target (iterations) | EM s to converge | EM ll | ppgen fused s (steps) | ratio | ppgen TraceEnum s (steps) | ratio | ppgen ll |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        def cell(fused: bool) -> tuple[str, str]:
            t = r[f"t_{fused}"]
            if math_isnan(t):
                return f"not reached in {MAX_STEPS} steps", "-"
            return f"{t:.3f} ({r[f'steps_{fused}']})", f"{t / r['ref']:.1f}x"
        f_t, f_r = cell(True)
        e_t, e_r = cell(False)
        lines.append(f"| {r['case']} | {r['ref']:.3f} ({r['ref_it']}) | {r['ref_full']:.3f} | {r['ref_ll']:.4f} | "
                     f"{f_t} | {f_r} | {e_t} | {e_r} | "
                     f"{r['ll_True']:.4f} |")
    lines += [
        "",
        "Reading: from the k-means start, EM reaches the target in one or two closed-form iterations on "
        "well-separated data, which no gradient method matches (Adam moves every parameter by about its "
        "learning rate at first, away from a good start, before it settles); where EM needs many iterations "
        "(the casino's weakly identified states) ppgen's fused path is on par. The TraceEnum_ELBO path costs "
        "more than the fused closed form by Pyro's tracing, most for HMMs, whose Markov chain it walks step by "
        "step in Python. What ppgen adds is declared priors, the same model under NUTS for the full posterior, "
        "and ArviZ diagnostics; for a plain maximum-likelihood fit of these models, EM is the faster tool.",
    ]
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


def math_isnan(v: float) -> bool:
    return v != v


if __name__ == "__main__":
    main()
