"""Prompt corpora: JSONL files with one ``{"text": ...}`` object per line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from expert_deploy.errors import ExpertDeployError, UsageError


class RouterError(ExpertDeployError):
    """A router artifact, corpus file or c-BTM pickle is unusable."""


def read_corpus(
    path: Path, *, text_field: str, label_field: str | None
) -> tuple[list[str], list[str]]:
    """Texts (and labels, if asked) from a JSONL file; blank lines are skipped.

    Raises:
        UsageError: the file does not exist.
        RouterError: a line is not a JSON object with the fields, or the corpus is empty.
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError as error:
        raise UsageError(f"corpus {path} not found; pass --corpus PATH to a JSONL file") from error
    except (OSError, UnicodeDecodeError) as error:
        raise RouterError(f"cannot read corpus {path}: {error}") from error
    texts: list[str] = []
    labels: list[str] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        record = _parse_line(path, number, line)
        text = record.get(text_field)
        if not isinstance(text, str):
            raise RouterError(
                f"{path}:{number}: needs a string field {text_field!r} (or pass --text-field)"
            )
        texts.append(text)
        if label_field is not None:
            label = record.get(label_field)
            if label is None or isinstance(label, dict | list):
                raise RouterError(
                    f"{path}:{number}: needs a scalar field {label_field!r} (or pass --label-field)"
                )
            labels.append(str(label))
    if not texts:
        raise RouterError(f"corpus {path} has no prompts; add one JSON object per line")
    return texts, labels


def _parse_line(path: Path, number: int, line: str) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise RouterError(
            f"{path}:{number}: not valid JSON ({error.msg}); write one JSON object per line"
        ) from error
    if not isinstance(record, dict):
        raise RouterError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
    return record
