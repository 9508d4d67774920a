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
