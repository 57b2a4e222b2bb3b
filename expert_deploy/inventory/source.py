"""YAML reading that remembers where every value came from.

PyYAML's composed node tree carries a line for every node; we walk it once to build the
Python data and a map from field path to line, so any later problem (schema or semantic)
can name the line a person has to edit. Duplicate keys, which PyYAML silently collapses to
the last one, are reported as problems here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from expert_deploy.errors import InventoryError, Problem

FieldPath = tuple[str | int, ...]


def format_path(path: FieldPath) -> str:
    """``("experts", 3, "quantization")`` → ``experts[3].quantization``."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text


@dataclass(frozen=True)
class SourceMap:
    """Where a document came from and the line of every field path in it."""

    file: str
    lines: dict[FieldPath, int] = field(default_factory=dict)

    def line_of(self, path: FieldPath) -> int | None:
        """The line of ``path``, or of its nearest ancestor present in the file."""
        for end in range(len(path), -1, -1):
            line = self.lines.get(path[:end])
            if line is not None:
                return line
        return None

    def problem(self, path: FieldPath, message: str) -> Problem:
        return Problem(self.file, self.line_of(path), format_path(path), message)


def read_yaml(path: Path, display_name: str | None = None) -> tuple[Any, SourceMap]:
    """Read one YAML document; return its data and a :class:`SourceMap`.

    Raises:
        InventoryError: the file is missing, unreadable, not YAML, or has duplicate keys.
    """
    name = display_name or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InventoryError([Problem(name, None, "", "file not found")]) from None
    except (OSError, UnicodeDecodeError) as error:
        raise InventoryError([Problem(name, None, "", f"cannot read file: {error}")]) from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        reason = getattr(error, "problem", None) or str(error)
        raise InventoryError([Problem(name, line, "", f"not valid YAML: {reason}")]) from None
    source = SourceMap(name)
    if node is None:
        return None, source
    problems: list[Problem] = []
    data = _build(node, (), source, problems, yaml.SafeLoader(""))
    if problems:
        raise InventoryError(problems)
    return data, source


def _build(
    node: yaml.Node,
    path: FieldPath,
    source: SourceMap,
    problems: list[Problem],
    constructor: yaml.SafeLoader,
) -> Any:
    source.lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = constructor.construct_object(key_node, deep=True)
            if not isinstance(key, str):
                problems.append(source.problem(path, f"key {key!r} must be a string"))
                continue
            child = (*path, key)
            if key in result:
                line = key_node.start_mark.line + 1
                problems.append(
                    Problem(source.file, line, format_path(child), "key given twice; keep one")
                )
                continue
            source.lines[child] = key_node.start_mark.line + 1
            result[key] = _build(value_node, child, source, problems, constructor)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [
            _build(item, (*path, index), source, problems, constructor)
            for index, item in enumerate(node.value)
        ]
    return constructor.construct_object(node, deep=True)
