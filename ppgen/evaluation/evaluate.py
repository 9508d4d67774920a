"""``ppgen evaluate``: held-out likelihood in nats and bits/dim, and each family's own numbers.

The test negative log-likelihood is the mean over the test split of -log p(x), where each log p(x) is
exact or a family's estimator of it (importance sampling with k samples for latent-variable models,
AIS for energy-based ones). ``test_nll_stderr`` is the standard error of that mean over test examples;
``test_nll_mc_stderr`` is the Monte Carlo error of the estimator itself, averaged over examples.
Bits per dimension is ``test_nll_nats / (D ln 2)``, D the number of values in one example, reported
where the likelihood is a probability of discrete values (binary or grey-level pixels, symbols, a
dequantized flow); for a continuous density it is ``test_nll_nats_per_dim`` instead, with the reason.
"""

from __future__ import annotations

import json
import math
import sys
import time
from contextlib import nullcontext
from typing import Any

import torch

from ppgen import progress as progress_mod
from ppgen.contracts import PartitionFunction
from ppgen.store.atomic import atomic_write_text
from ppgen.store.folder import Run, open_run
from ppgen.store.lock import run_lock
from ppgen.spec import SpecError, check_seed, field_bounds, validate

#: Importance samples per example: at least two (the Monte Carlo error of an estimate needs two), and
#: at most so many that a batch's log-weights (k x batch_size numbers) stay within a few hundred MB.
MIN_K, MAX_K = 2, 1_000_000
#: Samples for the sample-quality metrics when asked for a number (the bounds of the energy families'
#: ``sampling.quality_samples``).
MIN_QUALITY_SAMPLES, MAX_QUALITY_SAMPLES = 10, 100_000


@torch.random.fork_rng(devices=[])  # seeds its own draws; the caller's random state is given back
def evaluate(
    run: Run | str,
    *,
    k: int | None = None,
    limit: int | None = None,
    batch_size: int = 100,
    seed: int = 0,
    write: bool = True,
    progress: bool = False,
    bayes_k: int | None = None,
    quality: bool = True,
    quality_samples: int | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Evaluate a fitted run on its test split and (with ``write``) save ``evaluation.json``, holding the
    run folder's lock while it does (a run being fitted is refused).

    ``k`` is the number of importance samples per example (1000 when left out) for the families whose
    likelihood is an importance-sampling estimate (the VAE, programs); the others refuse it. That estimate
    is a lower bound on log p(x) that tightens as k grows (Burda et al. 2015): on a one-epoch MNIST VAE,
    k = 100 gave a test NLL 1.5 nats above k = 1000, while ``test_nll_mc_stderr`` (the random error of the
    estimate, not its gap to log p(x)) was 0.02. Most of a default evaluation of a VAE is this estimate.
    ``limit`` evaluates only the first ``limit`` test examples (the split's order is fixed); ``options`` are
    the ones the family declares (its ``EvaluateOptions``), passed to its ``log_likelihood`` and ``evaluation_setup``
    hooks: ``ais_runs`` and ``ais_steps`` for the energy families (RBM, BM, DBN) override the spec's
    ``ais`` section, ``log_z_method`` forces exact or AIS, ``bound_samples`` (DBN) sets the bound's draws.
    Any other option is an error that names it. ``progress`` shows progress on stderr: a bar on a terminal,
    elsewhere a plain line every 10 to 30 s (see :mod:`ppgen.progress`); with or without it, each long phase
    (log Z by AIS, the test log-likelihood, the quality samples and their features) is timed on its first
    chunk and its length said on stderr before it goes on. ``bayes_k`` is the number of importance
    samples per example and class of ``bayes_accuracy`` for programs with a label site (see
    :mod:`ppgen.evaluation.classify`). ``quality=False`` skips the sample-quality metrics (the slow part on image
    data); ``quality_samples`` sets how many samples (and as many test and validation images) they use, the
    same for every family (default: 10,000, or the spec's own ``sampling.quality_samples``); the image metrics
    record the number used as ``quality_samples``.
    """
    if limit is not None and limit < 1:
        raise SpecError(f"limit: must be at least 1 test example, got {limit}")
    if k is not None and not MIN_K <= k <= MAX_K:
        raise SpecError(f"k: expected {MIN_K} to {MAX_K} importance samples per example (with one, the Monte Carlo "
                        f"error of the estimate is unknown), got {k}")
    if batch_size < 1:
        raise SpecError(f"batch_size: must be at least 1, got {batch_size}")
    check_seed(seed, "seed")
    if quality_samples is not None and (isinstance(quality_samples, bool) or not isinstance(quality_samples, int)
                                        or not MIN_QUALITY_SAMPLES <= quality_samples <= MAX_QUALITY_SAMPLES):
        raise SpecError(f"quality_samples: expected {MIN_QUALITY_SAMPLES} to {MAX_QUALITY_SAMPLES} samples for the "
                        f"sample-quality metrics, got {quality_samples!r}")
    if quality_samples is not None and not quality:
        raise SpecError("quality_samples: given with quality=False (--no-quality), which skips the metrics it sizes")
    run = open_run(run) if not isinstance(run, Run) else run
    with run_lock(run.path, "ppgen evaluate") if write else nullcontext():
        return _evaluate(run, k=k, limit=limit, batch_size=batch_size, seed=seed, write=write, progress=progress,
                         bayes_k=bayes_k, quality=quality, quality_samples=quality_samples, **options)


def _evaluate(run: Run, *, k: int | None, limit: int | None, batch_size: int, seed: int, write: bool,
              progress: bool, bayes_k: int | None = None, quality: bool = True, quality_samples: int | None = None,
              **options: Any) -> dict[str, Any]:
    model, data = run.model, run.data
    energy = isinstance(model, PartitionFunction)
    if k is not None and not model.importance_samples:
        how = ("its log Z comes from AIS, set by the spec's ais section or ais_runs/ais_steps "
               "(--ais-runs/--ais-steps)" if energy else "it is exact, or the family has none")
        raise SpecError(f"k: the {run.spec.family} family's test log-likelihood takes no importance samples "
                        f"({how}); leave k out")
    ais = sorted(set(options) & {"ais_runs", "ais_steps"})
    if ais and not energy:
        raise SpecError(f"{', '.join(ais)}: only the energy families (rbm, gbrbm, bm, dbn) estimate log Z by AIS; "
                        f"the {run.spec.family} family does not")
    if ais:
        # The same bounds as the spec's ais section (runs: at least 2, for the error of log Z).
        from ppgen.models.energy.spec import AISSpec

        for name in ais:
            lo, hi = field_bounds(AISSpec, name.removeprefix("ais_"))
            value = options[name]
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi):
                raise SpecError(f"{name}: must be at least {lo} and at most {hi} (as the spec's ais section), got {value!r}")
    # Every option the family declares (model.EvaluateOptions), none it does not: a misspelled one is an
    # error here rather than an option silently ignored.
    declared = list(model.EvaluateOptions.model_fields)
    unknown = sorted(set(options) - set(declared))
    if unknown:
        raise SpecError(f"{', '.join(unknown)}: not an option of evaluate for the {run.spec.family} family; its options "
                        f"are k, limit, batch_size, seed, write, progress" + "".join(f", {n}" for n in declared))
    options = validate(model.EvaluateOptions, options, "evaluate options").model_dump(exclude_unset=True)
    k = 1000 if k is None else k
    x, y = data.split("test")
    if limit is not None:
        x, y = x[:limit], (y[:limit] if y is not None else None)
    device = model.device
    x = x.to(device)
    y = y.to(device) if y is not None else None
    result: dict[str, Any] = {"family": run.spec.family, "n_test": int(x.shape[0])}
    note = _announce(model, int(x.shape[0]), k, quality, quality_samples, progress, options)
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    with torch.no_grad():
        with progress_mod.phase("log Z by AIS", unit="temperatures", show=progress, prefix=PREFIX):
            result.update(model.evaluation_setup(data, **options))
        nll = _nll(model, x, y, k=k, batch_size=batch_size, progress=progress, **options)
        if nll is not None:
            result.update(nll)
            if model.importance_samples:
                result["k"] = k
        result.update(model.evaluate_extra(x, y))
        from ppgen.evaluation.classify import classifier_metrics

        result.update(classifier_metrics(model, x, y, k=bayes_k))
        from ppgen.evaluation import quality as sample_quality

        # Sample quality (ppgen.evaluation.quality's rule: MNIST-shaped images, toy1d and ring8/grid25; {} otherwise).
        if quality:
            result.update(sample_quality.sample_metrics(model, data, n=quality_samples, seed=seed, progress=progress))
    if note:
        result["quality_note"] = note
    result["seconds"] = time.perf_counter() - t0
    if write:
        atomic_write_text(json.dumps(result, indent=2) + "\n", run.path / "evaluation.json")
    return result


#: What every line that ``evaluate`` writes on stderr starts with.
PREFIX = "ppgen evaluate: "
#: Work (likelihood terms, AIS transitions, Gibbs sweeps of the samples) from which ``evaluate`` says on
#: stderr what it is about to do even without a progress bar.
LONG_WORK = 1_000_000


def work_plan(model: Any, n_test: int, k: int, quality_n: int | None, **options: Any) -> tuple[str, int]:
    """What an evaluation will compute, in words, and a rough count of its work: test examples times
    importance samples, AIS runs times steps (energy families), quality samples times the Gibbs sweeps
    each one takes."""
    if model.importance_samples:
        work = n_test * k
        parts = [f"{n_test:,} test examples x {k:,} importance samples = {work:,} likelihood terms"]
    else:
        work, parts = n_test, [f"{n_test:,} test examples"]
    ais = getattr(model.spec, "ais", None)
    if isinstance(model, PartitionFunction) and ais is not None and options.get("log_z_method") != "exact":
        runs, steps = options.get("ais_runs") or ais.runs, options.get("ais_steps") or ais.steps
        how = "by AIS" if options.get("log_z_method") == "ais" else "exactly where it is small enough, else by AIS"
        parts.append(f"log Z {how} with {runs:,} runs x {steps:,} steps")
        work += runs * steps
    if quality_n:
        sweeps = getattr(getattr(model.spec, "sampling", None), "steps", None) if isinstance(model, PartitionFunction) else None
        parts.append(f"{quality_n:,} samples for the sample-quality metrics" + (f", {sweeps:,} Gibbs sweeps each" if sweeps else ""))
        work += quality_n * (sweeps or 1)
    return "; ".join(parts), work


def _announce(model: Any, n_test: int, k: int, quality: bool, quality_samples: int | None, progress: bool,
              options: dict[str, Any]) -> str | None:
    """Say on stderr what the evaluation will compute (with a progress bar, or when the work is long) and
    where the sample-quality metrics do not fit the data; returns that note for the result."""
    from ppgen.evaluation import quality as sample_quality

    metrics, note = sample_quality.applicability(model) if quality else (None, None)
    n = None
    if metrics == "modes":
        n = sample_quality.MODE_SAMPLES
    elif metrics is not None:
        n = sample_quality.sample_count(model, quality_samples)
    text, work = work_plan(model, n_test, k, n, **options)
    if progress or work >= LONG_WORK:
        print(f"{PREFIX}{text}", file=sys.stderr)
    if note and metrics is not None:  # computed, but not what they seem: say so now, not only in the result
        print(f"{PREFIX}{note}", file=sys.stderr)
    return note


def _nll(model: Any, x: torch.Tensor, y: torch.Tensor | None, *, k: int, batch_size: int, progress: bool,
         **options: Any) -> dict[str, Any] | None:
    values, errors = [], []
    with progress_mod.phase("test log-likelihood", x.shape[0], "test examples", show=progress, prefix=PREFIX) as bar:
        for start in range(0, x.shape[0], batch_size):
            xb = x[start : start + batch_size]
            yb = y[start : start + batch_size] if y is not None else None
            out = model.log_likelihood(xb, k=k, y=yb, **options)
            if out is None:
                return None
            values.append(out[0].double().cpu())
            errors.append(out[1].double().cpu())
            bar.advance(xb.shape[0])
    ll, se = torch.cat(values), torch.cat(errors)
    n = ll.numel()
    dims = math.prod(x.shape[1:])
    nll = float(-ll.mean())
    res = {
        "test_nll_nats": nll,
        "test_nll_stderr": float(ll.std() / math.sqrt(n)) if n > 1 else 0.0,
        "test_nll_mc_stderr": float(se.pow(2).mean().sqrt() / math.sqrt(n)),
    }
    res.update(per_dim(model, nll, dims))
    return res


#: Why a continuous density has no bits per dimension.
NO_BITS_PER_DIM = ("not reported: the data are continuous, so -log p(x) is a density in the units of x (it "
                   "changes with their scale and can be negative), not a code length; test_nll_nats_per_dim is "
                   "the same number per value, comparable only between models of the same data")


def likelihood_is_discrete(model: Any) -> bool:
    """Whether the model's test likelihood is a probability of discrete values (a code length, so bits per
    dimension mean something) rather than a density, as the family declares."""
    return bool(model.likelihood_is_discrete())


def per_dim(model: Any, nll: float, dims: int) -> dict[str, Any]:
    """``bits_per_dim`` (nats / (D ln 2)) for a likelihood of discrete values; for a continuous density
    ``test_nll_nats_per_dim`` and the reason bits/dim are left out."""
    if likelihood_is_discrete(model):
        return {"bits_per_dim": nll / (dims * math.log(2))}
    return {"test_nll_nats_per_dim": nll / dims, "bits_per_dim_omitted": NO_BITS_PER_DIM}
