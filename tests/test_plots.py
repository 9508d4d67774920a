"""ppgen.plots.curves: figures drawn from records show every record."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ppgen.arviz_data import arviz
from ppgen.plots import common, curves


def test_a_loss_trace_of_one_record_shows_it_as_a_marker(tmp_path: Path, monkeypatch: Any) -> None:
    """A run that logged a single step drew a line of one point: an empty panel."""
    drawn: list[Any] = []
    save = common.save_figure
    monkeypatch.setattr(curves, "save_figure", lambda fig, path: (drawn.append(fig), save(fig, path))[1])
    idata = arviz().from_dict(sample_stats={"loss": np.array([[380.5]]), "step": np.array([[1]])})
    assert curves.loss_trace_figure(idata, tmp_path / "loss_trace.png") == tmp_path / "loss_trace.png"
    (line,) = drawn[0].axes[0].get_lines()
    assert len(line.get_xdata()) == 1 and line.get_marker() not in (None, "None", "", " ")


def _marked(line: Any) -> bool:
    return line.get_marker() not in (None, "None", "", " ")


def _whole_step_axis(ax: Any) -> bool:
    lo, hi = ax.get_xlim()
    shown = [float(t) for t in ax.get_xticks() if lo <= t <= hi]
    return bool(shown) and all(t.is_integer() for t in shown)


def test_training_curves_of_one_logged_step_read_whole_steps(tmp_path: Path, saved: list) -> None:
    """A 1-epoch run: one record per quantity, on an axis that read 9.6-10.4."""
    metrics = [{"kind": "train", "step": 10, "loss": 2.0, "grad_norm": 3.0},
               {"kind": "epoch", "step": 10, "loss": 1.5, "grad_norm": 2.5}]
    curves.training_curves(metrics, tmp_path / "training_curves.png")
    (fig,) = saved
    panels = [ax for ax in fig.axes if ax.axison]
    assert len(panels) == 2  # grad_norm, loss
    for ax in panels:
        assert ax.get_lines() and all(_marked(ln) and list(ln.get_xdata()) == [10] for ln in ax.get_lines())
        assert _whole_step_axis(ax), (ax.get_xlim(), ax.get_xticks())
        assert ax.get_xlim()[1] - ax.get_xlim()[0] >= 2


def test_training_curves_mark_each_of_few_logged_steps(tmp_path: Path, saved: list) -> None:
    """Three logged steps were a bare line: how few they are did not show."""
    metrics = [{"kind": "train", "step": s, "loss": 2.0 / s} for s in (10, 20, 30)]
    metrics += [{"kind": "train", "step": s, "lr": 1.0 / s} for s in range(1, 101)]
    curves.training_curves(metrics, tmp_path / "training_curves.png")
    (fig,) = saved
    axes = [ax for ax in fig.axes if ax.axison]
    (few,) = [ln for ax in axes for ln in ax.get_lines() if len(ln.get_xdata()) == 3]  # loss
    assert _marked(few)
    (many,) = [ln for ax in axes for ln in ax.get_lines() if len(ln.get_xdata()) == 100]  # lr
    assert not _marked(many)  # a line alone where points are many
    assert all(_whole_step_axis(ax) for ax in axes)


def test_a_loss_trace_reads_whole_steps(tmp_path: Path, saved: list) -> None:
    idata = arviz().from_dict(sample_stats={"loss": np.array([[380.5]]), "step": np.array([[10]])})
    curves.loss_trace_figure(idata, tmp_path / "loss_trace.png")
    (ax,) = saved[0].axes
    assert _whole_step_axis(ax) and ax.get_xlim()[1] - ax.get_xlim()[0] >= 2


def _posterior_idata(n_obs: int = 4, dims: int = 3) -> Any:
    """Draws of a local latent z, normal around a different mean per example and coordinate."""
    g = np.random.default_rng(0)
    z = g.normal(size=(1, 400, n_obs, dims)) * 0.3 + np.arange(n_obs * dims).reshape(n_obs, dims)
    return arviz().from_dict(posterior={"z": z}, observed_data={"x": np.zeros((n_obs, 5))},
                             dims={"z": ["obs", "latent"], "x": ["obs", "pixel"]})


def test_posterior_legend_covers_no_histogram(tmp_path: Path, saved: list) -> None:
    """The legend in each panel's upper right corner covered the histogram's peak: it is one legend,
    below the panels, clear of every axes and so of every bar."""
    common.posterior_figure(_posterior_idata(), tmp_path / "posterior.png", "z")
    (fig,) = saved
    panels = [ax for ax in fig.axes if ax.patches]
    assert len(panels) == 12
    assert all(ax.get_legend() is None for ax in fig.axes)
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["draws (histogram)",
                                                          "normal density with the draws' mean and sd"]
    fig.draw_without_rendering()  # the layout as saved
    box = legend.get_window_extent()
    for ax in panels:
        assert not box.overlaps(ax.get_window_extent()), ax.get_title()
        tallest = max(ax.patches, key=lambda p: p.get_height())
        assert not box.overlaps(tallest.get_window_extent()), ax.get_title()
    # what each panel's legend said of its normal curve is in its title
    assert panels[0].get_title().startswith("example 0, z[0]\nmean ")
