"""Turn pydantic validation errors into problems a person can act on.

Each problem names the file, the line, the dotted field path as written in the YAML (union
tags and validator names stripped), what is wrong, and a "did you mean" for a misspelt key
or enum value.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from expert_deploy.errors import Problem
from expert_deploy.inventory.source import FieldPath, SourceMap


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest choice, or an empty string."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def problems_from_validation(
    error: ValidationError, model: type[BaseModel], raw: Any, source: SourceMap
) -> list[Problem]:
    """One problem per pydantic error, located in the YAML the user wrote."""
    details = error.errors(include_url=False)
    failed = [detail["loc"] for detail in details]
    problems: list[Problem] = []
    for detail in details:
        loc = detail["loc"]
        # pydantic also reports a list as "too short" when all its items failed: noise.
        if detail["type"] == "too_short" and any(f[: len(loc)] == loc and f != loc for f in failed):
            continue
        path = _written_path(loc, raw)
        if detail["type"] == "union_tag_invalid":
            path = (*path, "kind")
        problems.append(source.problem(path, _message(detail, path, model)))
    return problems


def _written_path(loc: tuple[str | int, ...], raw: Any) -> FieldPath:
    """Drop the parts of pydantic's location that are not in the YAML (union tags)."""
    path: list[str | int] = []
    node = raw
    for part in loc:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        elif isinstance(node, dict) and node.get("kind") == part:
            continue  # discriminated-union tag, e.g. router.source.fit.corpus
        else:
            node = None
        path.append(part)
    return tuple(path)


def _message(detail: ErrorDetails, path: FieldPath, model: type[BaseModel]) -> str:
    kind = detail["type"]
    value = detail.get("input")
    if kind == "extra_forbidden":
        key = str(path[-1]) if path else "?"
        allowed = _fields_at(model, path[:-1])
        return f"unknown key {key!r}{did_you_mean(key, allowed)}"
    if kind == "missing":
        return "required, but not given"
    if kind == "union_tag_invalid":
        ctx = detail.get("ctx", {})
        tag = str(ctx.get("tag", ""))
        options = re.findall(r"'([^']*)'", str(ctx.get("expected_tags", "")))
        return f"{tag!r} is not one of {', '.join(options)}{did_you_mean(tag, options)}"
    if kind in ("literal_error", "enum"):
        expected = detail.get("ctx", {}).get("expected", "")
        options = re.findall(r"'([^']*)'", str(expected))
        hint = did_you_mean(str(value), options) if isinstance(value, str) else ""
        return f"{value!r} is not one of {', '.join(options)}{hint}"
    if kind == "union_tag_not_found":
        return "needs a 'kind' (fit, artifact or cbtm)"
    text = detail["msg"]
    if isinstance(value, (str, int, float, bool)) and not isinstance(value, dict):
        return f"{text[0].lower()}{text[1:]} (got {value!r})"
    return f"{text[0].lower()}{text[1:]}"


def _fields_at(model: type[BaseModel], path: FieldPath) -> set[str]:
    """The field names accepted at ``path`` below ``model`` (for suggestions)."""
    models: list[type[BaseModel]] = [model]
    for part in path:
        if isinstance(part, int):
            continue  # list items: the element models were collected with the field
        next_models: list[type[BaseModel]] = []
        for current in models:
            info = current.model_fields.get(part)
            if info is not None:
                next_models.extend(_models_in(info.annotation))
        models = next_models
    return {name for m in models for name in m.model_fields}


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _models_in(typing.get_args(annotation)[0])
    if origin is not None or isinstance(annotation, types.UnionType):
        for arg in typing.get_args(annotation):
            found.extend(_models_in(arg))
    return found
