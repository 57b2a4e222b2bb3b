"""``<workdir>/checkpoints.json``: what ``expert-deploy fetch`` resolved and verified.

Shape (written by ``expert_deploy.checkpoints.record``), one entry per repository and revision::

    {"version": 1,
     "checkpoints": {"meta-llama/Meta-Llama-3-8B-Instruct@main":
        {"repo": ..., "revision": "main", "commit": "<40 hex>", "files": {"a.json": "<hash>"}}}}

An entry may carry ``path``; without it the checkpoint is the Hugging Face cache snapshot
``<hub cache>/models--<org>--<name>/snapshots/<commit>``, where fetch put it. A bare mapping
without the ``version`` wrapper is read too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from expert_deploy.errors import CheckpointError

FILE_NAME = "checkpoints.json"


@dataclass(frozen=True)
class CheckpointRecord:
    """A fetched checkpoint; satisfies :class:`expert_deploy.builder.cache.CheckpointLike`."""

    repo: str
    revision: str
    commit: str
    path: Path
    files: tuple[tuple[str, str], ...]


def index_key(repo: str, revision: str) -> str:
    return f"{repo}@{revision}"


def snapshot_path(hub_cache: Path, repo: str, commit: str) -> Path:
    """Where huggingface_hub keeps ``repo`` at ``commit``."""
    return hub_cache / f"models--{repo.replace('/', '--')}" / "snapshots" / commit


def read_checkpoint_index(workdir: Path, hub_cache: Path) -> dict[str, CheckpointRecord]:
    """``repo@revision`` → record, from ``<workdir>/checkpoints.json``.

    Raises:
        CheckpointError: the file is missing (run fetch first) or malformed.
    """
    path = workdir / FILE_NAME
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(
            f"{path} not found: run expert-deploy fetch first (it downloads and pins the "
            "checkpoints the engines are built from)"
        ) from None
    except (OSError, ValueError) as error:
        raise CheckpointError(
            f"{path} cannot be read ({error}); run expert-deploy fetch again"
        ) from None
    if isinstance(raw, dict) and "checkpoints" in raw:
        raw = raw["checkpoints"]
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path}: expected a JSON object; run expert-deploy fetch again")
    records: dict[str, CheckpointRecord] = {}
    for key, entry in raw.items():
        repo, _, revision = str(key).rpartition("@")
        try:
            commit = str(entry["commit"])
            where = entry.get("path")
            records[key] = CheckpointRecord(
                repo=repo,
                revision=revision,
                commit=commit,
                path=Path(where) if where else snapshot_path(hub_cache, repo, commit),
                files=tuple(sorted((str(n), str(h)) for n, h in entry["files"].items())),
            )
        except (KeyError, TypeError, AttributeError) as error:
            raise CheckpointError(
                f"{path}: entry {key!r} lacks commit, path or files ({error}); "
                "run expert-deploy fetch again"
            ) from None
    return records
