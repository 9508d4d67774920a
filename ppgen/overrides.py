"""``--set KEY=VALUE``: overrides of a spec's (or, with ``--set inference.KEY=VALUE``, a recipe's) keys,
their values read as YAML, applied to the spec's mapping before it is validated; a validation error
names the ``--set`` that put a bad value there."""

from __future__ import annotations

from typing import Any

import yaml

from ppgen.spec import MAX_DEPTH, SpecError, cut, short
from ppgen.spec_yaml import parse_yaml, yaml_problem


def _parts(item: str) -> tuple[list[str], str]:
    if "=" not in item:
        raise SpecError(f"--set {cut(item)}: expected KEY=VALUE, for example latent.dim=2")
    key, raw = item.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise SpecError(f"--set {cut(item)}: the key is empty")
    if len(parts) > MAX_DEPTH:
        raise SpecError(f"--set {cut(item)}: the key has more than {MAX_DEPTH} parts")
    return parts, raw


def apply_overrides(data: dict[str, Any], overrides: list[str] | None, *, prefix: str = "") -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides (values parsed as YAML) to a nested dict, in place. ``prefix``
    is how the command line spells the keys (``inference.`` for a recipe's), for messages."""
    for item in overrides or []:
        parts, raw = _parts(item)
        shown = cut(prefix + item)
        try:
            value = parse_yaml(raw)
        except yaml.YAMLError as exc:
            raise SpecError(f"--set {shown}: the value is not valid YAML ({yaml_problem(exc)})") from None
        except RecursionError:
            raise SpecError(f"--set {shown}: the value is nested too deeply (at most {MAX_DEPTH} levels)") from None
        node = data
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                where = prefix + ".".join(parts[: i + 1])
                raise SpecError(f"--set {shown}: {where} is a value ({short(child)}), not a section")
            node = child
        node[parts[-1]] = value
    return data


def override_keys(overrides: list[str] | None, prefix: str = "") -> dict[tuple[str, ...], str]:
    """The dotted key each override sets, as a path, mapped to how the command line wrote it."""
    out: dict[tuple[str, ...], str] = {}
    for item in overrides or []:
        parts, _ = _parts(item)
        out[tuple(parts)] = f"--set {cut(prefix + item)}"
    return out
