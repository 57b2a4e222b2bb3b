"""Fetching the checkpoints of many experts: each distinct one once, several at a time."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from expert_deploy.checkpoints.checkpoint import Checkpoint
from expert_deploy.checkpoints.hub import fetch_checkpoint
from expert_deploy.checkpoints.progress import DownloadProgress
from expert_deploy.errors import CheckpointError
from expert_deploy.inventory.models import Expert, GeneratedModel, ModelSource
from expert_deploy.settings import Settings

#: Checkpoints downloaded at the same time; each also downloads up to FILE_WORKERS files.
CHECKPOINT_WORKERS = 4
FILE_WORKERS = 8
#: Generated checkpoints live in the workdir, one folder per generation key.
GENERATED_DIR = "generated"
#: What a generated tokenizer trains on when the inventory names no corpus.
SHIPPED_CORPUS = "data/local-prompts.jsonl"


class FetchFailedError(CheckpointError):
    """Some checkpoints failed; the others were fetched and verified and are kept here."""

    def __init__(
        self, completed: dict[str, Checkpoint], failures: dict[str, CheckpointError]
    ) -> None:
        self.completed = completed
        self.failures = failures
        # Experts sharing a checkpoint share its error: say it once, naming them all.
        by_error: dict[int, list[str]] = {}
        for expert, error in sorted(failures.items()):
            by_error.setdefault(id(error), []).append(expert)
        lines = [
            f"expert{'s' if len(ids) > 1 else ''} {', '.join(ids)}: {failures[ids[0]]}"
            for ids in by_error.values()
        ]
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class _Source:
    repo: str
    revision: str
    generate: GeneratedModel | None = None


def fetch_all(
    experts: Sequence[Expert], settings: Settings, *, progress: DownloadProgress | None = None
) -> dict[str, Checkpoint]:
    """Fetch and verify the checkpoint of every expert that has one, keyed by expert id.

    Synthetic experts (no ``model``) are left out. Experts naming the same repository and
    revision share one download; distinct checkpoints download in parallel. A ``generate:``
    model is made under ``<workdir>/generated/`` instead, or reused from there.

    Raises:
        FetchFailedError: one or more checkpoints failed; carries the ones that succeeded.
    """
    users: dict[_Source, list[str]] = {}
    models: dict[_Source, ModelSource] = {}
    for expert in experts:
        if expert.model is not None and expert.engine != "synthetic":
            source = _Source(expert.model.repo, expert.model.revision, expert.model.generate)
            users.setdefault(source, []).append(expert.id)
            models[source] = expert.model
    if not users:
        return {}

    def fetch(source: _Source) -> Checkpoint:
        if source.generate is not None:
            # Made here rather than downloaded: the embedded default needs no Hub.
            from expert_deploy.checkpoints.generated import generate_checkpoint

            return generate_checkpoint(
                models[source],
                corpus=settings.inventories_dir / SHIPPED_CORPUS,
                root=settings.workdir.resolve() / GENERATED_DIR,
            )
        return fetch_checkpoint(
            source.repo,
            source.revision,
            cache_dir=settings.hf_cache_dir,
            token=settings.hf_token,
            max_workers=FILE_WORKERS,
            progress=progress,
            endpoint=settings.hf_endpoint,
            offline=settings.hf_hub_offline,
        )

    completed: dict[str, Checkpoint] = {}
    failures: dict[str, CheckpointError] = {}
    with ThreadPoolExecutor(max_workers=min(CHECKPOINT_WORKERS, len(users))) as pool:
        futures = {source: pool.submit(fetch, source) for source in users}
        for source, future in futures.items():
            try:
                checkpoint = future.result()
            except CheckpointError as error:
                failures.update(dict.fromkeys(users[source], error))
            else:
                completed.update(dict.fromkeys(users[source], checkpoint))
    if failures:
        raise FetchFailedError(completed, failures)
    return completed
