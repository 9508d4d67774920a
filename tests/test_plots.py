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


def _rbm_metrics(steps: int = 10) -> list[dict[str, Any]]:
    """The records of a one-epoch RBM run on binary data: ``loss`` is minus the pseudo-log-likelihood on
    every record, ``pseudo_loglik`` (with ``recon_error``, the free energies) on the logged steps; one epoch
    record with the validation numbers above the training ones, at the last step."""
    train = []
    for s in range(1, steps + 1):
        pl = -200.0 + 8.0 * s + (3.0 if s % 3 == 0 else 0.0)
        train.append({"kind": "train", "epoch": 1, "step": s, "loss": -pl, "pseudo_loglik": pl,
                      "recon_error": 40.0 - s, "free_energy": -50.0 - s, "free_energy_gap": 2.0 / s})
    epoch = {"kind": "epoch", "epoch": 1, "step": steps, "loss": 150.0, "pseudo_loglik": -150.0,
             "recon_error": 35.0, "free_energy": -55.0, "val_loss": 185.0, "val_pseudo_loglik": -185.0,
             "val_recon_error": 38.0, "val_free_energy": -52.0, "time_s": 2.0}
    return train + [epoch]


def _rbm_labels() -> dict[str, str]:
    from types import SimpleNamespace

    from ppgen.plots.metric_labels import metric_labels
    from ppgen.registry import load_recipe

    return metric_labels(load_recipe({"routine": "cd"}), SimpleNamespace(family="rbm", visible="binary"))


def test_training_curves_draw_a_number_and_its_negation_once(tmp_path: Path, saved: list) -> None:
    """An RBM's curves had a "minus pseudo-log-likelihood" panel (``loss``) and a "pseudo-log-likelihood"
    one (``pseudo_loglik``) showing the same number with opposite signs: the loss's panel alone stays."""
    curves.training_curves(_rbm_metrics(), tmp_path / "training_curves.png", labels=_rbm_labels())
    panels = {ax.get_label(): ax for ax in saved[0].axes if ax.axison}
    assert set(panels) == {"loss", "recon_error", "free_energy", "free_energy_gap"}, set(panels)
    assert panels["loss"].get_title() == "minus pseudo-log-likelihood"
    # the validation number is still drawn, in the loss's panel
    assert any(185.0 in ln.get_ydata() for ln in panels["loss"].get_lines())
    # without the run's labels the loss's panel says which number it is
    curves.training_curves(_rbm_metrics(), tmp_path / "unlabelled.png")
    (loss,) = [ax for ax in saved[-1].axes if ax.get_label() == "loss"]
    assert " ".join(loss.get_title().split()) == "training loss = minus pseudo-log-likelihood"
    assert "pseudo_loglik" not in {ax.get_label() for ax in saved[-1].axes if ax.axison}
    # a number that is minus another on some records only is a quantity of its own: both panels stay
    differ = _rbm_metrics()
    differ[4]["pseudo_loglik"] += 1.0
    curves.training_curves(differ, tmp_path / "other.png", labels=_rbm_labels())
    assert {"loss", "pseudo_loglik"} <= {ax.get_label() for ax in saved[-1].axes if ax.axison}


def test_training_curves_draw_one_number_under_two_names_once(tmp_path: Path, saved: list) -> None:
    """A DBN's upper layer records its reconstruction error as its ``loss`` and as ``recon_error``: one
    panel for the two in that layer, while the bottom layer, whose loss is another number, keeps both. Long
    titles are broken between words, no line longer than 40 characters."""
    recs = []
    for layer, loss in ((0, lambda s: 200.0 - s), (1, lambda s: 0.06 + 0.001 * s)):
        for s in range(1, 6):
            err = 60.0 + s if layer == 0 else loss(s)
            recs.append({"kind": "train", "layer": layer, "step": s + 10 * layer, "loss": loss(s), "recon_error": err})
    curves.training_curves(recs, tmp_path / "dbn.png")
    axes = [ax for ax in saved[0].axes if ax.axison]
    by_layer = {}
    for ax in axes:
        by_layer.setdefault(ax.get_title().split(":")[0], []).append(ax.get_label())
    assert sorted(by_layer["layer 1"]) == ["loss", "recon_error"] and by_layer["layer 2"] == ["loss"], by_layer
    assert all(len(line) <= 40 for ax in axes for line in ax.get_title().splitlines())
    # a number equal to another on some records only is a quantity of its own
    recs[-1]["recon_error"] += 1.0
    curves.training_curves(recs, tmp_path / "dbn2.png")
    assert sum(ax.get_label() == "recon_error" for ax in saved[-1].axes if ax.axison) == 2


def _legend_metric_lists() -> dict[str, list[dict[str, Any]]]:
    from test_plots_gan import _gan_metrics

    one = [{"kind": "train", "step": 10, "loss": 2.0, "grad_norm": 3.0},
           {"kind": "epoch", "step": 10, "loss": 1.5, "grad_norm": 2.5, "val_loss": 1.8}]
    rising = [{"kind": "train", "step": s, "loss": 1.0 + 0.1 * s, "lr": 0.01} for s in range(1, 41)]
    rising += [{"kind": "epoch", "step": s, "loss": 1.0 + 0.1 * s, "val_loss": 1.2 + 0.1 * s} for s in (20, 40)]
    layered = [{"kind": "train", "layer": layer, "step": s, "loss": 5.0 - s + layer} for layer in (0, 1)
               for s in range(1, 6)]
    layered += [{"kind": "epoch", "layer": layer, "step": 5, "loss": 1.0 + layer, "val_loss": 1.5 + layer}
                for layer in (0, 1)]
    # what `ppgen fit rbm --epochs 1 --set data.limit=1000` recorded: one logged step and its epoch
    rbm_one = [{"kind": "train", "epoch": 1, "step": 10, "loss": 174.72, "recon_error": 67.67, "free_energy": -266.53,
                "free_energy_gap": 0.5357, "pseudo_loglik": -174.72, "lr": 0.01},
               {"kind": "epoch", "epoch": 1, "step": 10, "loss": 195.03, "val_recon_error": 67.33,
                "val_free_energy": -270.03, "val_loss": 209.24, "val_pseudo_loglik": -209.24, "time_s": 0.35}]
    return {"rbm": _rbm_metrics(), "rbm one epoch": rbm_one, "gan": _gan_metrics(), "one step": one,
            "rising": rising, "layered": layered}


def test_no_legend_of_the_training_curves_covers_a_point(tmp_path: Path, saved: list) -> None:
    """The legend in the RBM's "minus pseudo-log-likelihood" panel covered the validation point: no legend
    (of a panel or of the figure) contains a plotted point or any part of its marker, as drawn."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    for name, metrics in _legend_metric_lists().items():
        saved.clear()
        curves.training_curves(metrics, tmp_path / "training_curves.png",
                               labels=_rbm_labels() if name.startswith("rbm") else None)
        (fig,) = saved
        legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
        assert legends, name  # the series are named somewhere
        names = {t.get_text() for lg in legends for t in lg.get_texts()}
        assert "validation" in names, (name, names)
        for dpi in (100, 110):  # on screen, and as save_figure writes it
            fig.set_dpi(dpi)
            canvas = FigureCanvasAgg(fig)  # a figure made outside pyplot has a canvas that draws nothing
            canvas.draw()
            renderer = canvas.get_renderer()
            for legend in legends:
                for ax in fig.axes:
                    for line in ax.get_lines():
                        # the box grown by the marker's radius: a point whose marker it touches is covered
                        radius = line.get_markersize() / 2 * dpi / 72 if _marked(line) else 0.0
                        box = legend.get_window_extent(renderer).padded(radius)
                        xy = ax.transData.transform(np.asarray(line.get_xydata(), dtype=float))
                        inside = [tuple(p) for p in xy if box.contains(*p)]
                        assert not inside, f"{name} at {dpi} dpi: a legend covers {ax.get_label()}'s points {inside}"
