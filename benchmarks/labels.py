"""Labels on MNIST: the semi-supervised M2 with 100 labels, the CVAE as a generative classifier, a
discriminative classifier of the same labels, and the autoencoder against the VAE of the same size.

    python benchmarks/labels.py job m2 --labels 100 --seed 0 --minutes 20 --out DIR
    python benchmarks/labels.py job cvae --labels all --seed 0 --minutes 20 --out DIR
    python benchmarks/labels.py job mlp --labels 100 --seed 0 --out DIR       # and cnn
    python benchmarks/labels.py job aevae --seed 0 --minutes 20 --out DIR
    python benchmarks/labels.py all --out DIR --minutes 7 --parallel 12      # every job at once
    python benchmarks/labels.py report DIR [DIR...] -o benchmarks/results/labels.md
    python benchmarks/labels.py speed --steps 20 --rounds 3          # seconds per M2 step, two ways
    python benchmarks/labels.py trace models/ssvae.yaml --recipe inference/ssvae.yaml --out RUN --epochs 40 \
        --set networks.decoder.per=y --set 'networks.decoder.inputs=[z]'   # q(y|x) accuracy after each epoch
    python benchmarks/labels.py curve benchmarks/results/labels -o benchmarks/results/labels_curve.png
    python benchmarks/labels.py subnormals [--run RUN] --threads 1   # M2 steps, subnormals computed or flushed

Jobs (each writes DIR/<job>-<labels>-<seed>.json):

- ``m2``: ``models/ssvae.yaml`` with ``inference/ssvae.yaml`` (classification term 50, 32 labelled
  examples appended to each batch of 128), ``data.labels`` = N and ``data.labels_seed`` = the seed (so each
  seed has its own labelled set); fitted in chunks of epochs until the time budget is spent, then
  evaluated on the 10,000 test images: ``guide_accuracy`` (argmax q(y|x)), ``bayes_accuracy`` (argmax
  log p(x, y), ``--bayes-k`` importance samples per class) and the test NLL;
- ``cvae``: ``models/cvae_classifier.yaml`` trained on the N labelled examples alone
  (``data.labelled_only``; all 50,000 for ``all``), ``bayes_accuracy``;
- ``mlp``: the discriminative classifier of the same shape as M2's q(y|x) (784-500-10, ReLU), cross-entropy
  on the N labelled examples, 5,000 Adam steps of 128 on fresh binarizations; ``cnn``: ppgen's metric
  classifier (:class:`ppgen.evaluation.feature_classifier.DigitClassifier`, about 7.5M multiply-adds, with augmentation);
- ``aevae``: ``models/autoencoder.yaml`` and the same file with ``guide=auto`` (the VAE of the same
  networks) fitted for the same time; reconstruction error, test NLL (the VAE), the classifier-space
  sample metrics of draws from N(0, I) and, for the autoencoder, of codes drawn from a Normal fitted to
  its training codes; a comparison figure.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import ppgen  # noqa: E402
from ppgen import data as ppdata  # noqa: E402

from machine import cpu_model, load_average, logical_cpus, torch_description  # noqa: E402

MODELS, RECIPES = ROOT / "models", ROOT / "inference"


def machine() -> dict[str, Any]:
    out: dict[str, Any] = {"platform": platform.platform(), **torch_description(), "cpu": cpu_model(),
                           "cpus": logical_cpus()}
    if torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name(0)
    try:
        out["git_commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                           cwd=ROOT, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        out["git_commit"] = None
    out["load_average"] = list(load_average())
    return out


def fit_for(spec: Path | dict, recipe: Path | dict, out: Path, *, seed: int, overrides: list[str], minutes: float,
            chunk: int, max_epochs: int, device: str, recipe_overrides: list[str] | None = None) -> dict[str, Any]:
    """Fit in chunks of ``chunk`` epochs (resuming) until ``minutes`` are spent or ``max_epochs`` reached."""
    t0 = time.perf_counter()
    epochs = chunk
    ppgen.fit(spec, recipe, out=out, epochs=epochs, seed=seed, overrides=overrides, recipe_overrides=recipe_overrides,
              progress=False, accelerator=device)
    per_chunk = time.perf_counter() - t0
    while epochs < max_epochs:
        spent = time.perf_counter() - t0
        if spent + per_chunk > minutes * 60:
            break
        c0 = time.perf_counter()
        epochs = min(max_epochs, epochs + chunk)
        ppgen.fit(out, None, out=out, epochs=epochs, resume=True, progress=False, accelerator=device)
        per_chunk = time.perf_counter() - c0
    return {"epochs": epochs, "fit_seconds": time.perf_counter() - t0}


def figures(run_dir: Path) -> None:
    """The run's figures (one row per class, style transfer, ...), as ``ppgen fit`` draws them."""
    run = ppgen.open_run(run_dir)
    run.model.figures(run_dir / "figures", run.data)


def _evaluate(run_dir: Path, **kw: Any) -> dict[str, Any]:
    from ppgen.evaluation.evaluate import evaluate

    return evaluate(str(run_dir), **kw)


def job_m2(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    labels = args.labels
    over = [f"data.labels={labels}", f"data.labels_seed={args.seed}"]
    run = out / f"m2{args.tag}-{labels}-{args.seed}"
    fit = fit_for(MODELS / "ssvae.yaml", RECIPES / "ssvae.yaml", run, seed=args.seed, overrides=over,
                  recipe_overrides=args.recipe_set, minutes=args.minutes, chunk=args.chunk, max_epochs=args.max_epochs,
                  device=args.device)
    res = _evaluate(run, k=args.k, bayes_k=args.bayes_k, limit=args.limit)
    figures(run)
    return {"job": "m2" + args.tag, "labels": labels, "seed": args.seed, "overrides": over, "recipe": "inference/ssvae.yaml",
            "recipe_overrides": args.recipe_set,
            "spec": "models/ssvae.yaml", **fit, "evaluation": res, "run": str(run)}


def job_cvae(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    labels = args.labels
    over = [] if labels == "all" else [f"data.labels={labels}", f"data.labels_seed={args.seed}", "data.labelled_only=true",
                                         f"data.batch_size={32 if int(labels) >= 320 else 10}"]
    run = out / f"cvae-{labels}-{args.seed}"
    fit = fit_for(MODELS / "cvae_classifier.yaml", RECIPES / "svi.yaml", run, seed=args.seed, overrides=over,
                  minutes=args.minutes, chunk=args.chunk if labels == "all" else 10 * args.chunk,
                  max_epochs=args.max_epochs if labels == "all" else 100 * args.max_epochs, device=args.device)
    res = _evaluate(run, k=args.k, bayes_k=args.bayes_k, limit=args.limit)
    figures(run)
    return {"job": "cvae", "labels": labels, "seed": args.seed, "overrides": over, "recipe": "inference/svi.yaml",
            "spec": "models/cvae_classifier.yaml", **fit, "evaluation": res, "run": str(run)}


def _labelled_train(labels: str, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    if labels == "all":
        d = ppdata.load(name="mnist", binarize="none")
        return d.train_x, d.train_y
    d = ppdata.load(name="mnist", binarize="none", labels=int(labels), labels_seed=seed, labelled_only=True)
    return d.train_x, d.train_y


def job_mlp(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    from ppgen.evaluation.classify import mlp_accuracy, train_mlp

    x, y = _labelled_train(args.labels, args.seed)
    test = ppdata.load(name="mnist", binarize="static")
    tx, ty = test.split("test")
    dev = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    t0 = time.perf_counter()
    clf = train_mlp(x, y, 10, hidden=[500], steps=args.steps, seed=args.seed, device=dev)
    acc = mlp_accuracy(clf, tx.to(dev), ty.to(dev))
    return {"job": "mlp", "labels": args.labels, "seed": args.seed, "steps": args.steps, "fit_seconds": time.perf_counter() - t0,
            "evaluation": {"accuracy": acc}}


def job_cnn(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    from ppgen.evaluation.feature_classifier import accuracy, train_classifier

    x, y = _labelled_train(args.labels, args.seed)
    test = ppdata.load(name="mnist", binarize="none")
    tx, ty = test.split("test")
    n = x.shape[0]
    epochs = 3 if args.labels == "all" else max(3, math.ceil(args.steps / max(1, n // 128)))
    t0 = time.perf_counter()
    clf = train_classifier(x, y, epochs=epochs, seed=args.seed)
    return {"job": "cnn", "labels": args.labels, "seed": args.seed, "epochs": epochs,
            "fit_seconds": time.perf_counter() - t0, "evaluation": {"accuracy": accuracy(clf, tx, ty)}}


def job_aevae(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    results = {}
    for name, over in (("autoencoder", []), ("vae", ["guide=auto"])):
        run = out / f"{name}-{args.seed}"
        fit = fit_for(MODELS / "autoencoder.yaml", RECIPES / "svi.yaml", run, seed=args.seed, overrides=over,
                      minutes=args.minutes / 2, chunk=args.chunk, max_epochs=args.max_epochs, device=args.device)
        res = _evaluate(run, k=args.k_vae if name == "vae" else None, limit=args.limit)  # the code has no proposal
        if name == "autoencoder":
            res.update(fitted_normal_metrics(run))
        results[name] = {"overrides": over, **fit, "evaluation": res, "run": str(run)}
    figure(out / f"autoencoder-{args.seed}", out / f"vae-{args.seed}", out / f"ae_vs_vae-{args.seed}.png")
    return {"job": "aevae", "labels": "none", "seed": args.seed, **results}


@torch.no_grad()
def _codes(model: Any, x: torch.Tensor) -> torch.Tensor:
    return torch.cat([model.encode(x[s:s + 1000])["z"] for s in range(0, x.shape[0], 1000)])


@torch.no_grad()
def fitted_normal_metrics(run_dir: Path, n: int = 10_000) -> dict[str, Any]:
    """Classifier-space metrics of E[x | z] for z from N(mean, covariance) of the training codes."""
    from ppgen.evaluation import feature_classifier, quality

    run = ppgen.open_run(run_dir)
    model = run.model
    train_x, _ = run.data.split("train")
    z = _codes(model, train_x.to(model.device))
    mean, cov = z.mean(0), torch.cov(z.T) + 1e-5 * torch.eye(z.shape[1], device=z.device)
    torch.manual_seed(0)
    draws = mean + torch.randn(n, z.shape[1], device=z.device) @ torch.linalg.cholesky(cov).T
    x = torch.cat([model.sample(1000, given={"z": draws[s:s + 1000]}, mean=True) for s in range(0, n, 1000)]).cpu()
    clf = feature_classifier.classifier()
    real_f, _ = feature_classifier.embed(clf, run.data.test_x[:n])
    fake_f, fake_labels = feature_classifier.embed(clf, x)
    return {f"fitted_normal_{k}": v for k, v in quality.feature_metrics(real_f, fake_f, fake_labels).items()}


@torch.no_grad()
def figure(ae_dir: Path, vae_dir: Path, path: Path, n: int = 12) -> Path:
    from ppgen.plots.common import save_figure, show_grid, subplots

    ae, vae = ppgen.open_run(ae_dir), ppgen.open_run(vae_dir)
    x = ae.data.split("test")[0][:n]
    torch.manual_seed(0)
    z = _codes(ae.model, ae.data.split("train")[0][:5000].to(ae.model.device))
    mean, cov = z.mean(0), torch.cov(z.T) + 1e-5 * torch.eye(z.shape[1], device=z.device)
    fitted = mean + torch.randn(n, z.shape[1], device=z.device) @ torch.linalg.cholesky(cov).T
    rows = [("test images", x),
            ("autoencoder: reconstructions", ae.model.reconstruct(x.to(ae.model.device)).cpu()),
            ("VAE: reconstructions", vae.model.reconstruct(x.to(vae.model.device)).cpu()),
            ("autoencoder: E[x | z], z ~ N(0, I)", ae.model.sample(n, mean=True).cpu()),
            ("autoencoder: E[x | z], z ~ Normal fitted to its training codes",
             ae.model.sample(n, given={"z": fitted}, mean=True).cpu()),
            ("VAE: E[x | z], z ~ N(0, I)", vae.model.sample(n, mean=True).cpu())]
    fig, axes = subplots(len(rows), 1, figsize=(0.7 * n + 0.5, 1.5 * len(rows)))
    for ax, (title, imgs) in zip(axes, rows):
        show_grid(ax, imgs, nrow=n, title=title)
    return save_figure(fig, path)


JOBS = {"m2": job_m2, "cvae": job_cvae, "mlp": job_mlp, "cnn": job_cnn, "aevae": job_aevae}


def run_job(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    started = dt.datetime.now().isoformat(timespec="seconds")
    res = JOBS[args.name](args, out)
    res.update({"machine": machine(), "started": started, "seconds": time.perf_counter() - t0,
                "command": " ".join([Path(sys.executable).name, *sys.argv])})
    path = out / f"{args.name}{args.tag}-{args.labels}-{args.seed}.json"
    path.write_text(json.dumps(res, indent=2, default=str) + "\n")
    print(json.dumps({k: v for k, v in res.items() if k in ("job", "labels", "seed", "epochs", "seconds")}))
    return 0


#: (job, labels, seed, extra arguments): what ``all`` runs, at once.
PLAN = [("m2", "100", s, []) for s in (0, 1, 2)] + [("m2", "1000", 0, [])] + \
       [("m2", "100", 0, ["--tag", "_w200", "--recipe-set", "classify_weight=200"])] + \
       [("cvae", lab, 0, []) for lab in ("100", "1000", "all")] + [("cvae", "all", 1, [])] + \
       [("aevae", "none", 0, [])] + \
       [("mlp", lab, s, []) for lab in ("100", "1000", "all") for s in (0, 1)]


def run_all(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    procs = []
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    for name, labels, seed, extra in PLAN:
        if args.only and name not in args.only:
            continue
        cmd = [sys.executable, str(Path(__file__)), "job", name, "--labels", labels, "--seed", str(seed),
               "--minutes", str(args.minutes), "--out", str(out), "--device", args.device, "--k", str(args.k),
               "--bayes-k", str(args.bayes_k), "--chunk", str(args.chunk), "--max-epochs", str(args.max_epochs),
               "--k-vae", str(args.k_vae), *extra]
        log = open(out / f"{name}{''.join(extra[1:2])}-{labels}-{seed}.log", "w")
        while sum(p.poll() is None for p, _ in procs) >= args.parallel:
            time.sleep(2)
        procs.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), log))
    for p, log in procs:
        p.wait()
        log.close()
    return 0


# --------------------------------------------------------------------------- report


def _stat(values: list[float], pct: bool = True) -> str:
    f = (lambda v: f"{100 * v:.2f}") if pct else (lambda v: f"{v:.2f}")
    if not values:
        return "-"
    if len(values) == 1:
        return f"{f(values[0])} (1 seed)"
    return f"{f(statistics.mean(values))} +- {f(statistics.stdev(values))} ({len(values)} seeds: " + \
        ", ".join(f(v) for v in values) + ")"


def report(args: argparse.Namespace) -> int:
    rows: list[dict[str, Any]] = []
    for d in args.dirs:
        for p in sorted(Path(d).glob("*.json")):
            rows.append(json.loads(p.read_text()))
    lines = ["| job | labels | seeds | epochs | test accuracy (%) | other |", "|---|---|---|---|---|---|"]
    keyed: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        keyed.setdefault((r["job"], str(r["labels"])), []).append(r)
    order = {"m2": 0, "m2_w200": 0.5, "cvae": 1, "mlp": 2, "cnn": 3, "aevae": 4}
    for (job, labels), rs in sorted(keyed.items(), key=lambda kv: (order.get(kv[0][0], 9), kv[0][1])):
        if job == "aevae":
            continue
        seeds = ", ".join(str(r["seed"]) for r in rs)
        ep = ", ".join(str(r.get("epochs", r.get("steps", "-"))) for r in rs)
        if job.startswith("m2"):
            acc = "guide " + _stat([r["evaluation"]["guide_accuracy"] for r in rs]) + "; Bayes " + \
                _stat([r["evaluation"]["bayes_accuracy"] for r in rs])
            other = "test NLL " + _stat([r["evaluation"]["test_nll_nats"] for r in rs], pct=False)
        elif job == "cvae":
            acc = "Bayes " + _stat([r["evaluation"]["bayes_accuracy"] for r in rs])
            other = "test NLL " + _stat([r["evaluation"]["test_nll_nats"] for r in rs], pct=False)
        else:
            acc = _stat([r["evaluation"]["accuracy"] for r in rs])
            other = ""
        lines.append(f"| {job} | {labels} | {seeds} | {ep} | {acc} | {other} |")
    ae = [r for r in rows if r["job"] == "aevae"]
    if ae:
        lines += ["", "| model | seed | epochs | reconstruction sq. error | test NLL (nats) | FID (classifier) | precision | "
                  "recall | class entropy |", "|---|---|---|---|---|---|---|---|---|"]
        for r in ae:
            for name in ("autoencoder", "vae"):
                e = r[name]["evaluation"]
                nll = f"{e['test_nll_nats']:.2f} +- {e['test_nll_stderr']:.2f}" if "test_nll_nats" in e else "not defined"
                lines.append(f"| {name}, z ~ N(0, I) | {r['seed']} | {r[name]['epochs']} | {e['reconstruction_sq_error']:.2f} "
                             f"| {nll} | {e['fid_classifier']:.2f} | {e['precision']:.3f} | {e['recall']:.3f} | "
                             f"{e['class_entropy']:.3f} |")
                if name == "autoencoder" and "fitted_normal_fid_classifier" in e:
                    lines.append(f"| autoencoder, z ~ Normal fitted to its codes | {r['seed']} | {r[name]['epochs']} | "
                                 f"| | {e['fitted_normal_fid_classifier']:.2f} | {e['fitted_normal_precision']:.3f} | "
                                 f"{e['fitted_normal_recall']:.3f} | {e['fitted_normal_class_entropy']:.3f} |")
            e = r["vae"]["evaluation"]
            lines.append(f"| held-out images (the floor) | | | | | {e['real_fid_classifier']:.2f} | {e['real_precision']:.3f} | "
                         f"{e['real_recall']:.3f} | {e['real_class_entropy']:.3f} |")
    machines = {json.dumps({k: r["machine"].get(k) for k in ("cpu", "cpus", "gpu", "torch", "git_commit")}) for r in rows}
    text = "\n".join(lines) + "\n\nMachines: " + "; ".join(sorted(machines)) + "\n"
    print(text)
    if args.output:
        Path(args.output).write_text(text)
    return 0


#: The series of the accuracy-against-labels figure: (file-name prefix, label).
CURVE_SERIES = {
    "cvae": "CVAE by Bayes' rule, a decoder and encoder per class",
    "cvae_shared": "CVAE by Bayes' rule, one decoder reading [z, y]",
    "mlp": "MLP 784-500-10 (discriminative)",
    "m2_per_class": "M2 q(y | x), a decoder per class, z = 10",
    "m2": "M2 q(y | x), one decoder reading [z, y] (the paper's)",
}


def curve_points(dirs: list[str]) -> dict[str, dict[int, list[tuple[float, int, int | None]]]]:
    """The points of :func:`curve`, read from the records in ``dirs``: for each series, labelled-set size ->
    [(accuracy, seed, epochs)], one per seed (for M2 the longest fit of each seed, its last epoch).
    Records: ``cvae-N-S.json`` (a ``job cvae``) and ``cvae-all-S-accuracy.json`` (``accuracy`` of a fit on
    all labels), the same with ``cvae_shared`` for the shared decoder, ``mlp-N-S.json``,
    ``m2-100-S-*epochs.json`` and ``m2-per-class-z10-100-S.jsonl`` (``trace``)."""
    sizes = {"100": 100, "1000": 1000, "all": 50000}
    found: dict[tuple[str, int, int], tuple[float, int | None]] = {}

    def put(series: str, n: int, seed: int, acc: float, epochs: int | None) -> None:
        key = (series, n, seed)
        if key not in found or (epochs or 0) > (found[key][1] or 0):
            found[key] = (acc, epochs)

    for d in dirs:
        for p in sorted(Path(d).iterdir()):
            name = p.name
            if p.suffix == ".jsonl" and name.startswith("m2-per-class-z10-100-"):
                lines = [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
                if lines:
                    put("m2_per_class", 100, int(name[:-6].rsplit("-", 1)[1]), lines[-1]["guide_accuracy"],
                        lines[-1]["epoch"])
                continue
            if p.suffix != ".json":
                continue
            r = json.loads(p.read_text())
            for prefix in ("cvae_shared", "cvae"):
                if name.startswith(prefix + "-all-") and name.endswith("-accuracy.json") and "bayes_accuracy" in r:
                    put(prefix, 50000, int(name.split("-")[2]), r["bayes_accuracy"], r.get("epochs_done"))
                    break
                if name.startswith(prefix + "-") and "evaluation" in r:
                    put(prefix, sizes[str(r["labels"])], int(r["seed"]), r["evaluation"]["bayes_accuracy"],
                        r.get("epochs"))
                    break
            else:
                if r.get("job") == "mlp":
                    put("mlp", sizes[str(r["labels"])], int(r["seed"]), r["evaluation"]["accuracy"], None)
                elif name.startswith("m2-100-") and name.endswith("epochs.json") and "guide_accuracy_by_epoch" in r:
                    by_epoch = r["guide_accuracy_by_epoch"]
                    last = max(by_epoch, key=int)
                    put("m2", 100, int(r["seed"]), by_epoch[last], int(last))
    out: dict[str, dict[int, list[tuple[float, int, int | None]]]] = {}
    for (series, n, seed), (acc, epochs) in sorted(found.items()):
        out.setdefault(series, {}).setdefault(n, []).append((acc, seed, epochs))
    return out


def curve(args: argparse.Namespace) -> int:
    """Test accuracy against the number of labelled examples (:func:`curve_points`): each point the mean over
    seeds, with every seed drawn faint."""
    from matplotlib.figure import Figure

    series = curve_points(args.dirs)
    fig = Figure(figsize=(6.4, 4.2), dpi=100)
    ax = fig.add_subplot()
    for key, marker in zip(CURVE_SERIES, "osD^v"):
        if key not in series:
            continue
        points = series[key]
        xs = sorted(points)
        label = CURVE_SERIES[key]
        if key.startswith("m2"):
            label += ", epochs " + ", ".join(str(e) for _, _, e in points[100])
        values = {n: [100 * a for a, _, _ in points[n]] for n in xs}
        means = [statistics.mean(values[n]) for n in xs]
        line = ax.plot(xs, means, marker=marker, label=label, linestyle="--" if key.endswith("shared") or key == "m2"
                       else "-")[0]
        for n in xs:
            ax.plot([n] * len(values[n]), values[n], linestyle="none", marker=marker, alpha=0.35,
                    color=line.get_color())
        print(label, {n: [round(v, 2) for v in values[n]] for n in xs})
    ax.set_xscale("log")
    ax.set_xticks([100, 1000, 50000], ["100", "1,000", "all 50,000"])
    ax.set_xlabel("labelled training examples (balanced over the 10 classes)")
    ax.set_ylabel("test accuracy on 10,000 MNIST images (%)")
    ax.set_title("Accuracy against the number of labels (line: mean over seeds; faint: each seed)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(args.output)
    print("wrote", args.output)
    return 0


def accuracy(args: argparse.Namespace) -> int:
    """guide_accuracy on the whole test split and bayes_accuracy on its first ``--limit`` images, of a
    run's last checkpoint (also while it is being fitted: nothing is written)."""
    from ppgen.evaluation.classify import classifier_metrics, guide_log_probs

    run = ppgen.open_run(args.run)
    model = run.model
    x, y = run.data.split("test")
    x, y = x.to(model.device), y.to(model.device)
    out: dict[str, Any] = {"run": args.run, "epochs_done": sum(1 for m in run.metrics if m.get("kind") == "epoch")}
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    prog = model.program
    if prog.y_site is not None and prog.y_site.name in prog.guide_by_name:
        out["guide_accuracy"] = float((guide_log_probs(model, x).argmax(1) == y).double().mean())
        out["guide_n_test"] = int(x.shape[0])
    lim = args.limit or x.shape[0]
    res = classifier_metrics(model, x[:lim], y[:lim], k=args.bayes_k)
    out.update({"bayes_accuracy": res["bayes_accuracy"], "bayes_k": res["bayes_k"], "bayes_n_test": int(min(lim, x.shape[0])),
                "seconds": time.perf_counter() - t0, "machine": machine()})
    print(json.dumps(out))
    return 0


def subnormals(args: argparse.Namespace) -> int:
    """Seconds per training step of M2 with a decoder per class (``models/ssvae_per_class.yaml``, the ssvae
    recipe) once q(y | x) is sure of its answers, with IEEE arithmetic (subnormal floats computed) against
    subnormals flushed to zero (what ``ppgen fit`` does, :mod:`ppgen.training.subnormals`): the same
    batches, in alternating rounds in one process, torch on ``--threads`` threads. The model is the last
    checkpoint of ``--run`` (a fitted M2), or else a new one whose classifier's last layer is scaled by
    ``--scale`` so that its q(y | x) is as sure as a fitted one's."""
    from contextlib import nullcontext

    from ppgen.evaluation.classify import guide_log_probs
    from ppgen.inference.svi import SVI
    from ppgen.training.subnormals import flushing_subnormals

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    recipe = ppgen.load_recipe(RECIPES / "ssvae.yaml")
    if args.run:
        run = ppgen.open_run(args.run)
        model, data, batch_size = run.model, run.data, run.spec.data.batch_size
    else:
        spec = ppgen.load_spec(MODELS / "ssvae_per_class.yaml", [])
        data = ppdata.load(spec.data)
        model, batch_size = ppgen.build(spec, data.info), spec.data.batch_size
        last = [m for m in model._mods()[0]["classifier"].modules() if isinstance(m, torch.nn.Linear)][-1]
        with torch.no_grad():
            last.weight.mul_(args.scale)
            last.bias.mul_(args.scale)
    routine = SVI(recipe)
    state = routine.init(model)
    batches = [b for _, b in zip(range(args.steps), data.batches(0, batch_size, args.seed))]
    with torch.no_grad():
        weights = guide_log_probs(model, batches[0][0][:batch_size]).exp()  # the unlabelled part of a batch
    tiny = torch.finfo(torch.float32).tiny
    times: dict[str, list[float]] = {"ieee": [], "flushed": []}
    torch.set_flush_denormal(False)
    for _ in range(args.rounds):
        for name in times:
            t0 = time.perf_counter()
            with flushing_subnormals() if name == "flushed" else nullcontext():
                for b in batches:
                    routine.step(state, b)
            times[name].append((time.perf_counter() - t0) / len(batches))
    best = {k: min(v) for k, v in times.items()}
    out = {"model": args.run or f"models/ssvae_per_class.yaml, classifier's last layer x {args.scale}",
           "q_y_weights_subnormal": float(((weights > 0) & (weights < tiny)).double().mean()),
           "q_y_weights_zero": float((weights == 0).double().mean()),
           "seconds_per_step": best, "ieee_over_flushed": best["ieee"] / best["flushed"], "rounds": times,
           "steps_per_round": len(batches), "threads": args.threads, "machine": machine()}
    print(json.dumps(out))
    return 0


def trace(args: argparse.Namespace) -> int:
    """Fit a run one epoch at a time (resuming a run folder that exists) and print, after each epoch, the
    test accuracy of q(y | x) on the whole test split as one JSON line: the M2 curves of the results."""
    from ppgen.evaluation.classify import guide_log_probs

    out = Path(args.out)
    done = 0
    if (out / "metrics.jsonl").exists():
        done = sum(1 for m in ppgen.open_run(out).metrics if m.get("kind") == "epoch")
    t0 = time.perf_counter()
    for epoch in range(done + 1, args.epochs + 1):
        if epoch == 1:
            ppgen.fit(args.spec, args.recipe, out=out, epochs=1, seed=args.seed, overrides=args.set, progress=False)
        else:
            ppgen.fit(out, None, out=out, epochs=epoch, resume=True, progress=False)
        run = ppgen.open_run(out)
        x, y = run.data.split("test")
        with torch.no_grad():
            acc = float((guide_log_probs(run.model, x.to(run.model.device)).argmax(1).cpu() == y).double().mean())
        loss = [m for m in run.metrics if m.get("kind") == "epoch"][-1].get("loss")
        print(json.dumps({"epoch": epoch, "guide_accuracy": acc, "loss": loss, "t": round(time.perf_counter() - t0),
                          "load_average": list(load_average())}), flush=True)
    return 0


def speed(args: argparse.Namespace) -> int:
    """Seconds per training step of M2 (``models/ssvae.yaml`` with ``inference/ssvae.yaml``: 128 images and 32
    labelled ones, every class of the hidden labels summed out in one batched pass) with the networks' first
    layer computed per input, x once per example and y once per class (ppgen's default), against the inputs
    joined for every (x, y) pair first: the same batches, in alternating rounds in one process."""
    from ppgen.inference.svi import SVI
    from ppgen.program.networks import Network

    torch.manual_seed(args.seed)
    spec = ppgen.load_spec(MODELS / "ssvae.yaml", [])
    data = ppdata.load(spec.data)
    model = ppgen.build(spec, data.info)
    routine = SVI(ppgen.load_recipe(RECIPES / "ssvae.yaml"))
    state = routine.init(model)
    batches = [b for _, b in zip(range(args.steps), data.batches(0, spec.data.batch_size, args.seed))]
    times: dict[str, list[float]] = {"split": [], "joined": []}
    for _ in range(args.rounds):
        for name, split in (("split", True), ("joined", False)):
            Network.split_first_layer = split
            try:
                t0 = time.perf_counter()
                for b in batches:
                    routine.step(state, b)
                times[name].append((time.perf_counter() - t0) / len(batches))
            finally:
                Network.split_first_layer = True
    best = {k: min(v) for k, v in times.items()}
    out = {"seconds_per_step": best, "joined_over_split": best["joined"] / best["split"], "rounds": times,
           "steps_per_round": len(batches), "machine": machine()}
    print(json.dumps(out))
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    j = sub.add_parser("job")
    j.add_argument("name", choices=list(JOBS))
    a = sub.add_parser("all")
    a.add_argument("--parallel", type=int, default=4)
    a.add_argument("--only", nargs="*")
    for s in (j, a):
        s.add_argument("--labels", default="100")
        s.add_argument("--seed", type=int, default=0)
        s.add_argument("--minutes", type=float, default=10.0)
        s.add_argument("--chunk", type=int, default=5)
        s.add_argument("--max-epochs", type=int, default=200)
        s.add_argument("--out", required=True)
        s.add_argument("--device", default="auto")
        s.add_argument("--k", type=int, default=100, help="importance samples of the test NLL")
        s.add_argument("--k-vae", type=int, default=1000, help="aevae: importance samples of the VAE's test NLL")
        s.add_argument("--tag", default="", help="a suffix of the job's name (a variant)")
        s.add_argument("--recipe-set", action="append", default=[], metavar="KEY=VALUE", help="recipe overrides")
        s.add_argument("--bayes-k", type=int, default=20)
        s.add_argument("--limit", type=int, help="evaluate on the first N test images")
        s.add_argument("--steps", type=int, default=5000, help="mlp/cnn: optimizer steps")
    c = sub.add_parser("accuracy")
    c.add_argument("run")
    c.add_argument("--limit", type=int)
    c.add_argument("--bayes-k", type=int, default=20)
    c.add_argument("--seed", type=int, default=0)
    sp = sub.add_parser("speed")
    sp.add_argument("--steps", type=int, default=20)
    sp.add_argument("--rounds", type=int, default=3)
    sp.add_argument("--seed", type=int, default=0)
    sn = sub.add_parser("subnormals")
    sn.add_argument("--run", help="a fitted M2 run folder (else a new model with a sure classifier)")
    sn.add_argument("--scale", type=float, default=400.0)
    sn.add_argument("--steps", type=int, default=5)
    sn.add_argument("--rounds", type=int, default=3)
    sn.add_argument("--threads", type=int, default=1)
    sn.add_argument("--seed", type=int, default=0)
    t = sub.add_parser("trace")
    t.add_argument("spec")
    t.add_argument("--recipe")
    t.add_argument("--out", required=True)
    t.add_argument("--epochs", type=int, required=True)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="spec overrides")
    cu = sub.add_parser("curve")
    cu.add_argument("dirs", nargs="+")
    cu.add_argument("-o", "--output", required=True)
    r = sub.add_parser("report")
    r.add_argument("dirs", nargs="+")
    r.add_argument("-o", "--output")
    args = p.parse_args()
    if args.cmd == "job":
        return run_job(args)
    if args.cmd == "all":
        return run_all(args)
    if args.cmd == "accuracy":
        return accuracy(args)
    if args.cmd == "speed":
        return speed(args)
    if args.cmd == "trace":
        return trace(args)
    if args.cmd == "subnormals":
        return subnormals(args)
    if args.cmd == "curve":
        return curve(args)
    return report(args)


if __name__ == "__main__":
    sys.exit(main())
