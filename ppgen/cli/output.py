"""What the commands print: one-line descriptions, rows of ``ppgen list``, the final losses of a fit, named by
their kind, and the table of ``ppgen compare``."""

from __future__ import annotations

from typing import Any

from ppgen.plots.metric_labels import LOSS_KINDS, METRIC_LABELS, loss_kind, metric_labels


def first_sentence(doc: str | None) -> str:
    """The first sentence of a docstring's first paragraph, on one line."""
    from ppgen.zoo import sentence_end

    paragraph = " ".join((doc or "").strip().split("\n\n", 1)[0].split())
    end = sentence_end(paragraph)
    return paragraph[:end] if end is not None else paragraph


def row(name: str, text: str, width: int = 100) -> str:
    import textwrap

    return textwrap.fill(text, width, initial_indent=f"  {name:18s} ", subsequent_indent=" " * 21) if text else f"  {name}"


#: Routines whose ``val_loss`` is the plug-in held-out negative log-likelihood per example, not their
#: training objective on the validation data (see each routine's ``validate``).
HELD_OUT_NLL = ("em", "enum_svi", "nuts")


def loss_phrase(value: float, recipe: Any, spec: Any = None, layer: int | None = None) -> str:
    """The training ``loss`` of a run, named by its kind as the training curves label it
    (:func:`ppgen.plots.metric_labels.loss_kind`): ``"minus the ELBO 98.1000 nats per example"``,
    ``"discriminator loss 1.2300 (nats, binary cross-entropy; not a likelihood)"``, ``"NLL 80.2000 nats per
    example (exact)"``. ``layer`` (from 0) names the loss of one layer of a run trained layer by layer."""
    labels = metric_labels(recipe, spec)
    kind = loss_kind(recipe, spec)
    v = f"{value:.4f}"
    if layer is not None and labels.get(f"loss@layer{layer}") == METRIC_LABELS["recon_error"]:
        return f"squared reconstruction error {v} per example"
    name, unit = _name_and_unit(kind.label)
    if kind.kind == LOSS_KINDS["exact"]:
        return f"NLL {v} {unit} (exact)"
    if kind.kind == LOSS_KINDS["map"]:
        return f"MAP objective {v} {unit} ({name})"
    if kind.kind == LOSS_KINDS["adversarial"]:
        return f"discriminator loss {v} ({unit}; not a likelihood)"
    if kind.kind == LOSS_KINDS["reconstruction"]:
        return f"squared reconstruction error {v} per example"
    if kind.kind == LOSS_KINDS["other"]:
        return f"training loss {v}"
    return f"{name} {v} {unit}" if unit else f"{name} {v}"


def validation_phrase(value: float, recipe: Any, spec: Any = None) -> str:
    """What follows :func:`loss_phrase` for the epoch's ``val_loss``: the held-out NLL for the routines of
    :data:`HELD_OUT_NLL`, otherwise the training objective on the validation data."""
    if getattr(recipe, "routine", None) in HELD_OUT_NLL:
        return f", held-out NLL {value:.4f} nats per example"
    if loss_kind(recipe, spec).kind == LOSS_KINDS["other"]:
        return f", validation loss {value:.4f}"
    return f", {value:.4f} on the validation data"


def _name_and_unit(label: str) -> tuple[str, str]:
    """``"minus the ELBO (nats per example)"`` -> (``"minus the ELBO"``, ``"nats per example"``)."""
    if label.endswith(")") and " (" in label:
        name, unit = label[:-1].split(" (", 1)
        return name, unit
    return label, ""


def final_losses(rec: dict[str, Any], recipe: Any = None, spec: Any = None, layer: int | None = None) -> str:
    """An epoch record's training loss (:func:`loss_phrase`) and validation loss (:func:`validation_phrase`)."""
    loss = loss_phrase(rec["loss"], recipe, spec, layer) if _number(rec.get("loss")) else "no training loss"
    return loss + (validation_phrase(rec["val_loss"], recipe, spec) if _number(rec.get("val_loss")) else "")


def final_losses_by_layer(epochs: list[dict[str, Any]], recipe: Any = None, spec: Any = None) -> list[str]:
    """For a run trained one layer at a time (epoch records with a ``layer``, e.g. a DBN's layerwise
    routine), one line per layer with the losses of the last epoch that trained it, named as
    :func:`loss_phrase` names them; [] otherwise. The last epoch's loss alone is the top layer's only."""
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
        lines.append(f"layer {layer + 1}{where}: {final_losses(rec, recipe, spec, layer)} (epoch {rec['epoch']})")
    return lines


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


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
