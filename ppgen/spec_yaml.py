"""Specs and recipes as YAML: read within limits (:data:`MAX_SPEC_BYTES`, :data:`ppgen.spec.MAX_DEPTH`,
:data:`MAX_VALUES`; a key repeated in one mapping is refused; PyYAML's safe loader, so nothing in a file
can build an object or run code), the zoo's names for its files, and a spec written back out."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from ppgen import zoo
from ppgen.spec import MAX_DEPTH, MAX_ECHO, SpecError, cut, short

#: A spec is a few kilobytes of settings; these bound what reading one may cost, whatever the file holds.
MAX_SPEC_BYTES = 1 << 20
#: Values in a spec once YAML aliases are expanded (an alias "bomb" expands exponentially).
MAX_VALUES = 100_000


class _LimitError(yaml.MarkedYAMLError):
    """A YAML document that breaks one of the limits above (or repeats a key)."""


class _SpecLoader(yaml.SafeLoader):
    """PyYAML's safe loader (plain data only: no tag can build an object or run code) that also refuses
    a key repeated in one mapping, nesting deeper than :data:`MAX_DEPTH`, and aliases that expand to
    more than :data:`MAX_VALUES` values or into themselves."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _LimitError(None, None, f"sections and lists are nested more than {MAX_DEPTH} levels deep",
                                  self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            seen: dict[tuple[str, str], Any] = {}
            for key_node, _ in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = (key_node.tag, key_node.value)
                if key in seen:
                    raise _LimitError(None, None, f"the key {short(key_node.value)} appears twice in one mapping "
                                      f"(first on line {seen[key].line + 1}); keep one", key_node.start_mark)
                seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)

    def get_single_data(self) -> Any:
        node = self.get_single_node()
        if node is None:
            return None
        _check_expanded(node)
        return self.construct_document(node)


def _check_expanded(root: Any) -> None:
    """Refuse a node graph whose expansion (each alias replaced by a copy of what it names) has more than
    MAX_VALUES values or is deeper than MAX_DEPTH; iterative, so it costs the distinct nodes only."""
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    stack: list[tuple[Any, bool]] = [(root, False)]
    open_: set[int] = set()
    while stack:
        node, done = stack.pop()
        key = id(node)
        children = [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else (
            node.value if isinstance(node, yaml.SequenceNode) else [])
        if done:
            open_.discard(key)
            size[key] = 1 + sum(size[id(c)] for c in children)
            depth[key] = 1 + max((depth[id(c)] for c in children), default=0)
            if size[key] > MAX_VALUES:
                raise _LimitError(None, None, f"it holds more than {MAX_VALUES} values once its aliases (*name) "
                                  "expand to copies of what they name; a spec is a few settings", node.start_mark)
            if depth[key] > MAX_DEPTH:
                raise _LimitError(None, None, f"its aliases (*name) nest sections more than {MAX_DEPTH} levels deep",
                                  node.start_mark)
            continue
        if key in size:
            continue
        if key in open_:
            raise _LimitError(None, None, "an alias (*name) refers to a value that contains it", node.start_mark)
        open_.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in size)


def parse_yaml(text: str) -> Any:
    """YAML text as plain data, within the limits of :class:`_SpecLoader`."""
    loader = _SpecLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def yaml_problem(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        kind = "YAML error" if isinstance(exc, (_LimitError, yaml.constructor.ConstructorError)) else "YAML syntax error"
        return f"{kind} at {where}: {cut(str(exc.problem), 2 * MAX_ECHO)}"
    return f"YAML error: {cut(str(exc), 2 * MAX_ECHO)}"


def read_yaml(source: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a syntax error names the file and line."""
    path = Path(source)
    if not path.exists():
        raise SpecError(f"{path}: no such file")
    if path.is_dir():
        raise SpecError(f"{path}: is a folder, not a YAML file")
    if not path.is_file():
        raise SpecError(f"{path}: is not a regular file (a device, pipe or socket); give a YAML file")
    try:
        size = path.stat().st_size
        if size > MAX_SPEC_BYTES:
            raise SpecError(f"{path}: {size} bytes is too large for a spec (at most {MAX_SPEC_BYTES}); "
                            "is it the right file?")
        data = parse_yaml(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: cannot be read as UTF-8 text ({exc})") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: {yaml_problem(exc)}") from None
    except RecursionError:
        raise SpecError(f"{path}: nested too deeply to read (at most {MAX_DEPTH} levels)") from None
    if not isinstance(data, dict):
        raise SpecError(f"{path}: expected a mapping of keys to values, got {type(data).__name__}")
    return data


def as_dict(source: str | Path | dict | BaseModel) -> tuple[dict[str, Any], str]:
    """A spec or recipe given as a file, a mapping or a spec object, as a mapping of its own (a copy),
    with what to call it in a message."""
    if isinstance(source, BaseModel):
        return source.model_dump(mode="json"), type(source).__name__
    if isinstance(source, dict):
        return copy.deepcopy(source), "spec"
    return read_yaml(source), str(source)


def zoo_file(source: Any, kind: zoo.Kind) -> Any:
    """A bare name of a zoo spec or recipe (``vae``, ``pcd``) as the zoo file's path; a name that is neither
    a file here nor in the zoo is refused with the zoo's names."""
    found = zoo.resolve(source, kind)
    if found is source and isinstance(source, (str, Path)) and not Path(source).exists():
        text = str(source)
        if text and "/" not in text and "\\" not in text and not text.endswith((".yaml", ".yml")):
            what = "zoo spec" if kind == "models" else "inference recipe"
            raise SpecError(f"{cut(text)}: no such file, and no {what} of that name; {what}s: "
                            f"{', '.join(zoo.names(kind)) or 'none found'}")
    return found


def dump_yaml(spec: BaseModel, path: str | Path) -> None:
    """A spec or recipe written as YAML (every key, defaults included)."""
    Path(path).write_text(yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False))
