"""What the commands print: one-line descriptions, rows of ``ppgen list``, the layers' final losses of a fit and
the table of ``ppgen compare``."""

from __future__ import annotations

from typing import Any


def first_sentence(doc: str | None) -> str:
    """The first sentence of a docstring's first paragraph, on one line."""
    from ppgen.zoo import _sentence_end

    paragraph = " ".join((doc or "").strip().split("\n\n", 1)[0].split())
    end = _sentence_end(paragraph)
    return paragraph[:end] if end is not None else paragraph


def row(name: str, text: str, width: int = 100) -> str:
    import textwrap

    return textwrap.fill(text, width, initial_indent=f"  {name:18s} ", subsequent_indent=" " * 21) if text else f"  {name}"


def final_losses_by_layer(epochs: list[dict[str, Any]]) -> list[str]:
    """For a run trained one layer at a time (epoch records with a ``layer``, e.g. a DBN's layerwise
    routine), one line per layer with the losses of the last epoch that trained it; [] otherwise. The
    last epoch's loss alone is the top layer's only."""
    last: dict[int, dict[str, Any]] = {}
    for rec in epochs:
        if isinstance(rec.get("layer"), (int, float)) and not isinstance(rec.get("layer"), bool):
            last[int(rec["layer"])] = rec
    if not last:
        return []
    top = max(last)
    lines = []
    for layer in sorted(last):
        rec = last[layer]
        where = " (bottom)" if layer == 0 else " (top)" if layer == top else ""
        val = f", validation loss {rec['val_loss']:.4f}" if isinstance(rec.get("val_loss"), (int, float)) else ""
        loss = f"training loss {rec['loss']:.4f}" if isinstance(rec.get("loss"), (int, float)) else "no training loss"
        lines.append(f"layer {layer + 1}{where}: {loss}{val} (epoch {rec['epoch']})")
    return lines


def print_table(rows: list[dict[str, Any]]) -> None:
    """Print :func:`table_lines`."""
    print("\n".join(table_lines(rows)))


def table_lines(rows: list[dict[str, Any]]) -> list[str]:
    """The table of ``ppgen compare`` as printed: a number that cannot be set beside the others of its
    column (the row's ``not_comparable``) carries a mark ``[i]``, and note ``i`` under the table names the
    columns and says why."""
    notes: dict[str, list[str]] = {}  # reason -> its columns, in the order first met
    shown = []
    for r in rows:
        doubts = r.get("not_comparable") or {}
        cells: dict[str, Any] = {}
        for key, value in r.items():
            if key == "not_comparable":
                continue
            marks = ""
            for reason in doubts.get(key, []):
                columns = notes.setdefault(reason, [])
                if key not in columns:
                    columns.append(key)
                marks += f"[{list(notes).index(reason) + 1}]"
            cells[key] = f"{fmt(value)} {marks}" if marks else value
        shown.append(cells)
    lines = columns_lines(shown)
    if notes:
        lines.append("not comparable:")
        lines += [f"[{i}] {', '.join(columns)}: {reason}" for i, (reason, columns) in enumerate(notes.items(), 1)]
    return lines


def columns_lines(rows: list[dict[str, Any]]) -> list[str]:
    """Rows of dicts as left-aligned columns under a header (the keys of all rows, in the order first met)."""
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    cells = [[fmt(r.get(k)) for k in keys] for r in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    return ["  ".join(k.ljust(w) for k, w in zip(keys, widths)).rstrip()] + [
        "  ".join(v.ljust(w) for v, w in zip(c, widths)).rstrip() for c in cells]


def fmt(v: Any) -> str:
    if v is None:
        return "-"
    return f"{v:.4g}" if isinstance(v, float) else str(v)
