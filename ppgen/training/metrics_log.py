"""What a training process records: ``metrics.jsonl``, a record a line, cut back to the checkpoint on
resume. Its progress on stderr is a :class:`ppgen.progress.Phase` per epoch."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ppgen.store.atomic import atomic_write_text
from ppgen.store.records import open_append, read_metrics


class MetricsLog:
    """``metrics.jsonl``, appended a line a record; numbers that are not finite are written as null
    (JSON has no NaN)."""

    def __init__(self, path: Path, enabled: bool) -> None:
        self._f = open_append(path) if enabled else None

    def __enter__(self) -> "MetricsLog":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._f is not None:
            self._f.close()

    def write(self, record: dict[str, Any]) -> None:
        if self._f is not None:
            clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
            self._f.write(json.dumps(clean) + "\n")
            self._f.flush()


def truncate_metrics(path: Path, step: int, epoch: int) -> None:
    """Drop the records written after the checkpoint (a run stopped by a NaN goes on logging until it
    stops), so that a resumed run's metrics read as one run's."""
    keep = [m for m in read_metrics(path) if m.get("step", 0) <= step and (m.get("kind") != "epoch" or m["epoch"] <= epoch)]
    atomic_write_text("".join(json.dumps(m) + "\n" for m in keep), path)
