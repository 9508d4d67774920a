"""The GAN's figures: samples over the data, the generator against the exact inverse CDF of a 1-D toy
target, the discriminator's scores over 2-D data; for ``ppgen diagnose`` both players' losses and the
prior predictive check."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from matplotlib.patches import Circle

from ppgen.arviz_data import arviz
from ppgen.data.core import Dataset
from ppgen.data.toy import toy1d
from ppgen.evaluation import toy_checks
from ppgen.models.gan import GAN, eval_mode
from ppgen.plots import common as plots
from ppgen.plots.common import save_figure, subplots
from ppgen.plots.curves import plot_series, step_axis, wrap_label
from ppgen.plots.metric_labels import METRIC_LABELS, adversarial_labels, metric_title
from ppgen.plots.predictive import pixel_means_figure, predictive_draws_figure


def figures(model: GAN, folder: Path, data: Dataset) -> dict[str, Path]:
    """``samples.png`` (a 10x10 grid for images, a scatter or histogram over the data otherwise);
    for 1-D data ``generator.png``, the learned map z -> G(z) against the exact inverse CDF of a
    ``toy1d`` target; for 2-D data ``discriminator.png``, samples over the discriminator's scores."""
    folder = Path(folder)
    with eval_mode(model), torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        x_test = data.split("test")[0]
        out: dict[str, Path] = {}
        if len(model.event_shape) == 3:
            out["samples"] = plots.save_samples(model.sample(100), folder / "samples.png", "samples G(z), z ~ p(z)", nrow=10)
            return out
        out["samples"] = plots.save_samples(model.sample(5000), folder / "samples.png", "samples G(z), z ~ p(z)",
                                            reference=x_test)
        if model.event_shape == (1,):
            out["generator"] = generator_figure(model, folder / "generator.png", reference=data.train_x)
        elif model.event_shape == (2,):
            out["discriminator"] = discriminator_figure(model, folder / "discriminator.png", reference=x_test)
        return out


def diagnostic_figures(model: GAN, idata: Any, folder: Path, labels: dict[str, str] | None = None) -> dict[str, Path]:
    """A GAN has no posterior; what applies: ``predictive.png``, replicated data sets G(z), z ~ p(z), against
    the observed test data (:func:`~ppgen.plots.predictive.predictive_draws_figure`); for images
    ``pixel_means.png``, each pixel's mean over the draws against its mean over the test images
    (:func:`~ppgen.plots.predictive.pixel_means_figure`); ``losses.png``, both players' training losses,
    where training steps were logged (:func:`losses_figure`); for 1-D data ``ppc.png``, ArviZ's check of
    the generated data sets against the observed one. ``labels`` name the recorded numbers
    (:func:`~ppgen.plots.metric_labels.metric_labels` of the run's recipe)."""
    folder = Path(folder)
    out: dict[str, Path] = {}
    if "posterior_predictive" in idata.groups() and "observed_data" in idata.groups():
        shape = tuple(model.event_shape) if plots.is_image(model.event_shape) else None
        drawn = "G(z), z ~ p(z)"
        out["predictive"] = predictive_draws_figure(idata, folder / "predictive.png", shape, drawn=drawn)
        if shape is not None:
            out["pixel_means"] = pixel_means_figure(idata, folder / "pixel_means.png", shape, drawn=drawn)
    if "sample_stats" in idata.groups():
        losses = losses_figure(idata.sample_stats, folder / "losses.png", labels)
        if losses is not None:
            out["losses"] = losses
    if model.event_shape == (1,):
        az = arviz()
        fig, ax = subplots(figsize=(6, 4))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            az.plot_ppc(idata, group="posterior", num_pp_samples=20, ax=ax)
        out["ppc"] = save_figure(fig, folder / "ppc.png")
    return out


def losses_figure(stats: Any, path: Path, labels: dict[str, str] | None = None) -> Path | None:
    """One panel per number adversarial training recorded in ``stats`` (``sample_stats``: ``loss``,
    ``g_loss``, ``d_real``, ``d_fake``, ``gp``) against the training step, titled and labelled from
    ``labels`` over :func:`~ppgen.plots.metric_labels.adversarial_labels` (the loss not known); a number
    recorded on some steps only (``g_loss`` with ``n_critic`` > 1) is drawn at those steps. None when
    none is recorded."""
    keys = [k for k in ("loss", "g_loss", "d_real", "d_fake", "gp") if k in stats]
    if not keys:
        return None
    names = {**METRIC_LABELS, **adversarial_labels(None), **(labels or {})}
    # one row of up to three panels, else two rows: four or five in a row would be too wide to read
    cols = len(keys) if len(keys) <= 3 else -(-len(keys) // 2)
    fig, axes = plots.grid_axes(len(keys), panel=(3.6, 3.0), max_cols=cols)
    for ax, key in zip(axes, keys):
        v = stats[key].values[0]
        step = stats["step"].values[0] if "step" in stats else range(1, len(v) + 1)
        plot_series(ax, step, v, lw=0.8)
        step_axis(ax, step)
        ax.set_title(metric_title(names[key]), fontsize=9)
        ax.set_ylabel(wrap_label(names[key]), fontsize=8)
        ax.set_xlabel(names.get("step", "training step"), fontsize=8)
        ax.set_label(key)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)


def _toy1d_target(model: GAN) -> Any:
    data = model.spec.data
    if data.name != "toy1d" or data.distribution is None:
        return None
    return toy1d(data.distribution)


@torch.no_grad()
def generator_figure(model: GAN, path: Path, reference: torch.Tensor | None = None, n: int = 10_000) -> Path:
    """Inverse transform sampling by a GAN, as a PNG: :func:`plot_generator` on one or two panels."""
    panels = 2 if model.z_dim == 1 else 1
    fig, axes = subplots(1, panels, figsize=(5.2 * panels, 3.8), squeeze=False)
    plot_generator(model, list(axes[0]), reference, n)
    fig.tight_layout()
    return save_figure(fig, path)


@torch.no_grad()
def plot_generator(model: GAN, axes: list[Any], reference: torch.Tensor | None = None, n: int = 10_000) -> float | None:
    """First axis: the density of ``n`` samples against the exact density of a ``toy1d`` target (or a
    histogram of ``reference`` data). Second axis, if given (1-D latent): the learned map z -> G(z)
    against the exact inverse CDF F^-1 of the target composed with the prior's CDF (for a Uniform(0, 1)
    prior F^-1(z) itself); a GAN may as well learn the decreasing solution F^-1(1 - F_z(z)), drawn
    dashed. Returns the Kolmogorov-Smirnov distance of the samples to the target (None without one)."""
    target = _toy1d_target(model)
    with eval_mode(model):
        x = model.sample(n).reshape(-1).double()
    ax = axes[0]
    lo, hi = torch.quantile(x, 0.001).item(), torch.quantile(x, 0.999).item()
    ax.hist(x.numpy(), bins=120, range=(lo, hi), density=True, alpha=0.55, color="C0", label="G(z)")
    title, ks = f"{n} samples", None
    if target is not None:
        grid = torch.linspace(lo, hi, 400, dtype=torch.float64)
        ax.plot(grid, target.log_prob(grid).exp(), color="k", lw=1.2, label=f"exact {target.name} density")
        ks = toy_checks.ks_statistic(x, target.cdf)
        title += f", KS = {ks:.4f}"
    elif reference is not None:
        ax.hist(reference.reshape(-1).numpy(), bins=120, range=(lo, hi), density=True, alpha=0.35, color="0.4", label="data")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    if len(axes) > 1 and model.z_dim == 1:
        ax = axes[1]
        u = torch.linspace(0.0005, 0.9995, 999, dtype=torch.float64)
        if model.spec.latent.prior == "uniform":
            lo_z, hi_z = model.spec.latent.bounds
            z = lo_z + (hi_z - lo_z) * u
        else:
            z = torch.special.ndtri(u)
        with eval_mode(model):
            g = model.generate(z.float().unsqueeze(1)).reshape(-1).double()
        ax.plot(z, g, color="C0", lw=2, label="G(z)")
        if target is not None:
            ax.plot(z, target.icdf(u), color="k", lw=1, label="exact F^-1(F_z(z))")
            ax.plot(z, target.icdf(1 - u), color="k", lw=1, ls="--", label="exact F^-1(1 - F_z(z))")
        ax.set_ylim(lo - 0.5, hi + 0.5)
        ax.set_xlabel("z")
        ax.set_title("the generator against the inverse CDF", fontsize=9)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    return ks


@torch.no_grad()
def discriminator_figure(model: GAN, path: Path, reference: torch.Tensor | None = None, n: int = 2500) -> Path:
    """2-D data as a PNG: :func:`plot_discriminator`."""
    fig, ax = subplots(figsize=(6, 5.4))
    plot_discriminator(model, ax, reference, n)
    return save_figure(fig, path)


@torch.no_grad()
def plot_discriminator(model: GAN, ax: Any, reference: torch.Tensor | None = None, n: int = 2500,
                       colorbar: bool = True) -> dict[str, Any] | None:
    """2-D data: the discriminator's score as a colour map, data in grey, ``n`` samples in blue and, for
    the ``ring8``/``grid25`` toys, the mode centres with their 3-sigma circles; returns the
    :func:`ppgen.evaluation.toy_checks.mode_coverage` of the samples for those toys (None otherwise)."""
    with eval_mode(model):
        x = model.sample(n).double()
    pts = x if reference is None else torch.cat([x, reference.double()])
    lo, hi = pts.min(0).values - 0.5, pts.max(0).values + 0.5
    gx, gy = torch.meshgrid(torch.linspace(lo[0], hi[0], 160), torch.linspace(lo[1], hi[1], 160), indexing="xy")
    with eval_mode(model):
        s = model.score(torch.stack([gx.reshape(-1), gy.reshape(-1)], 1).float()).reshape(gx.shape)
    im = ax.pcolormesh(gx, gy, s, shading="auto", cmap="RdBu_r", alpha=0.6)
    if colorbar:
        ax.figure.colorbar(im, ax=ax, label="D(x) score")
    if reference is not None:
        ax.scatter(reference[:, 0], reference[:, 1], s=2, color="0.3", alpha=0.3, label="data")
    ax.scatter(x[:, 0], x[:, 1], s=2, color="C0", alpha=0.5, label="G(z)")
    title, cov = f"{n} samples", None
    toy = toy_checks.toy2d_modes(model.spec.data)
    if toy is not None:
        centres, std = toy
        cov = toy_checks.mode_coverage(x, centres, std)
        for c in centres:
            ax.add_patch(Circle((float(c[0]), float(c[1])), 3 * std, fill=False, color="k", lw=0.6))
        title += f": {cov['modes_covered']}/{len(centres)} modes, {100 * cov['high_quality_share']:.1f}% high quality"
    ax.set_aspect("equal")
    ax.set_xlabel("x[0]")
    ax.set_ylabel("x[1]")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="upper right")
    return cov
