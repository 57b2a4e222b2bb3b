"""``<workdir>/checkpoints.json``: what each ``repo@revision`` resolved to, for the lockfile.

Layout (sorted keys, one entry per repository and revision as the inventory writes them)::

    {"version": 1,
     "checkpoints": {"org/name@main": {"repo": "org/name", "revision": "main",
                                       "commit": "<40 hex>",
                                       "files": {"config.json": "<git blob id>",
                                                 "model-00001-of-00002.safetensors": "<sha256>"}}}}

Only verified checkpoints are recorded, and the file is replaced atomically, so a reader
never sees a half-written file or an entry for a checkpoint that failed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from expert_deploy.atomic_file import write_text_atomically
from expert_deploy.checkpoints.checkpoint import Checkpoint
from expert_deploy.errors import CheckpointError

RECORD_FILE = "checkpoints.json"
VERSION = 1


def read_record(workdir: Path) -> dict[str, dict[str, Any]]:
    """The entries of ``<workdir>/checkpoints.json`` by ``repo@revision``; empty if absent.

    Raises:
        CheckpointError: the file exists but is not a checkpoints record.
    """
    path = workdir / RECORD_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise CheckpointError(
            f"{path} is unreadable ({error}): delete it and run `expert-deploy fetch`"
        ) from None
    if not isinstance(data, dict) or data.get("version") != VERSION:
        raise CheckpointError(
            f"{path} is not a version-{VERSION} checkpoints record: "
            "delete it and run `expert-deploy fetch`"
        )
    entries = data.get("checkpoints")
    return dict(entries) if isinstance(entries, dict) else {}


def write_record(
    workdir: Path, checkpoints: Iterable[Checkpoint], *, drop: Iterable[str] = ()
) -> Path:
    """Merge ``checkpoints`` into ``<workdir>/checkpoints.json`` (atomically) and return its path.

    Entries for other checkpoints are kept, so fetching one expert does not forget the rest;
    keys in ``drop`` (checkpoints that just failed) are removed.

    Raises:
        CheckpointError: the existing record is unreadable.
        OSError: the workdir cannot be written.
    """
    entries = read_record(workdir)
    for key in drop:
        entries.pop(key, None)
    for checkpoint in checkpoints:
        entries[checkpoint.key] = {
            "repo": checkpoint.repo,
            "revision": checkpoint.revision,
            "commit": checkpoint.commit,
            "files": dict(checkpoint.files),
        }
    text = json.dumps({"version": VERSION, "checkpoints": entries}, indent=2, sort_keys=True)
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / RECORD_FILE
    write_text_atomically(path, text + "\n")
    return path
