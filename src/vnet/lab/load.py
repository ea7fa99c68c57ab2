"""`vnet lab` topology files, loading: YAML in, a validated Lab out, and every problem one
ConfigError that names the file, the line and the field (``lab.yaml:21: links.1.a.host:
no host 'c9' in hosts``)."""

from __future__ import annotations

from typing import Any

import yaml
from pydantic import ValidationError

from vnet.errors import ConfigError
from vnet.lab.addressing import assign
from vnet.lab.crosscheck import cross_check
from vnet.lab.schema import Lab


def _lines(text: str) -> dict[tuple[str, ...], int]:
    """Line (1-based) of every mapping key and sequence item, by its path."""
    out: dict[tuple[str, ...], int] = {}

    def walk(node: yaml.Node, path: tuple[str, ...]) -> None:
        out.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                sub = (*path, str(key.value))
                out[sub] = key.start_mark.line + 1
                walk(value, sub)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, (*path, str(i)))

    root = yaml.compose(text)
    if root is not None:
        walk(root, ())
    return out


def _line_of(lines: dict[tuple[str, ...], int], path: tuple[str, ...]) -> int | None:
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return lines.get(())


def load(text: str, source: str) -> Lab:
    """Parse and validate; every problem is a ConfigError ``FILE:LINE: FIELD: message``."""
    try:
        data: Any = yaml.safe_load(text)
        lines = _lines(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or "not valid YAML"
        raise ConfigError(f"{source}{where}: {problem}") from None
    except (ValueError, OverflowError):  # PyYAML's scanner on "\U" escapes out of range
        raise ConfigError(f"{source}: not valid YAML (an escape out of range)") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}:1: a lab file is a mapping (name, hosts, links, ...)")
    try:
        lab = Lab.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        loc = tuple(str(p) for p in first["loc"] if str(p) not in _PROCESS_KINDS)
        line = _line_of(lines, loc)
        field = ".".join(loc) or "(top)"
        msg = first["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{source}:{line}: {field}: {msg}") from None
    problems = cross_check(lab)
    if not problems:
        try:
            assign(lab)
        except ConfigError as e:
            path, _, msg = str(e).partition(": ")
            problems.append((path, msg))
    if problems:
        path, msg = problems[0]
        line = _line_of(lines, tuple(path.split(".")))
        raise ConfigError(f"{source}:{line}: {path}: {msg}")
    return lab


_PROCESS_KINDS = {"vnet-wg", "vnet-switch", "qemu", "etcd", "vnet-overlay", "command"}
