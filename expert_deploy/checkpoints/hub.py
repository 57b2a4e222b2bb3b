"""Resolving revisions and downloading snapshots with huggingface_hub.

huggingface_hub reads its environment at import time; we pass everything it needs (cache
folder, token, endpoint, offline mode) explicitly from :class:`~expert_deploy.settings.Settings`,
and pass ``token=False`` when there is none so it never looks for one on its own.
"""

from __future__ import annotations

import shutil
from fnmatch import fnmatch
from pathlib import Path
from typing import Any, cast

from expert_deploy.atomic_file import write_text_atomically
from expert_deploy.checkpoints.checkpoint import (
    ALLOW_PATTERNS,
    IGNORE_PATTERNS,
    Checkpoint,
    file_hash,
    is_commit,
    sha256_of,
    snapshot_files,
)
from expert_deploy.checkpoints.hub_errors import HubCall, translated
from expert_deploy.checkpoints.progress import DownloadProgress
from expert_deploy.checkpoints.verify import verify_checkpoint
from expert_deploy.errors import CheckpointError
from expert_deploy.settings import Secret


def resolve_revision(
    repo: str,
    revision: str,
    *,
    token: Secret | None,
    endpoint: str | None = None,
    cache_dir: Path | None = None,
    offline: bool = False,
) -> str:
    """The 40-hex commit that ``revision`` (a branch, tag or commit) of ``repo`` points to.

    Offline, a branch or tag is looked up in ``cache_dir``'s ``refs/`` (written by an
    earlier fetch); online the Hub answers, so a moved branch is noticed.

    Raises:
        CheckpointError: repository or revision not found, gated, Hub unreachable, or
            offline without a cached ref.
    """
    if is_commit(revision):
        return revision
    from huggingface_hub import HfApi

    cache = cache_dir or Path.home() / ".cache" / "huggingface" / "hub"
    call = HubCall(repo, revision, endpoint, cache, token is not None, offline)
    api = HfApi(endpoint=endpoint, token=_token(token))
    with translated(call):
        if offline:
            resolved = api.resolve_revision(
                repo, revision=revision, cache_dir=cache, local_files_only=True
            )
            return str(resolved.resolved)
        sha = api.model_info(repo, revision=revision).sha
    if sha is None or not is_commit(sha):
        raise CheckpointError(
            f"the Hub at {call.where} gave no commit for {repo}@{revision}: check HF_ENDPOINT"
        )
    return sha


def fetch_checkpoint(
    repo: str,
    revision: str,
    *,
    cache_dir: Path,
    token: Secret | None,
    max_workers: int = 8,
    progress: DownloadProgress | None = None,
    endpoint: str | None = None,
    offline: bool = False,
) -> Checkpoint:
    """Download (or find in the cache) one checkpoint at a pinned commit, then verify it.

    A branch or tag is resolved to its commit first and only that commit is downloaded, so
    the result does not change if the branch moves mid-download. Files already in the cache
    are not downloaded again; a download cut short leaves nothing under the final name.

    Raises:
        CheckpointError: any hub, network or disk failure, or a checkpoint that fails
            :func:`~expert_deploy.checkpoints.verify.verify_checkpoint`.
    """
    from huggingface_hub import snapshot_download

    commit = resolve_revision(
        repo, revision, token=token, endpoint=endpoint, cache_dir=cache_dir, offline=offline
    )
    call = HubCall(repo, revision, endpoint, cache_dir, token is not None, offline)
    repo_folder = cache_dir / f"models--{repo.replace('/', '--')}"
    snapshot = repo_folder / "snapshots" / commit
    before = set(snapshot_files(snapshot)) if snapshot.is_dir() else set()
    bars = progress or DownloadProgress.quiet()
    common: dict[str, Any] = {
        "revision": commit,
        "cache_dir": cache_dir,
        "token": _token(token),
        "endpoint": endpoint,
        "allow_patterns": list(ALLOW_PATTERNS),
        "ignore_patterns": list(IGNORE_PATTERNS),
        "max_workers": max_workers,
        # huggingface_hub only asks that the class behave like tqdm (see progress.py).
        "tqdm_class": cast(Any, bars.bar_class(repo)),
    }
    with translated(call):
        if not offline:
            plan = snapshot_download(repo, dry_run=True, **common)
            needed = sum(f.file_size or 0 for f in plan if f.will_download)
            _check_free_space(cache_dir, needed, f"{repo}@{revision}")
        path = Path(snapshot_download(repo, local_files_only=offline, **common))
    names = [n for n in snapshot_files(path) if _wanted(n)]
    _check_new_lfs_files(path, sorted(set(names) - before))
    verify_checkpoint(path)
    if not is_commit(revision):
        _write_ref(repo_folder, revision, commit)
    return Checkpoint(
        repo=repo,
        revision=revision,
        commit=commit,
        path=path,
        files=tuple((name, file_hash(path / name)) for name in names),
        cached=not set(names) - before,
    )


def _token(token: Secret | None) -> str | bool:
    # False, not None: None would make huggingface_hub read HF_TOKEN or the token file itself.
    return token.reveal() if token is not None else False


def _wanted(name: str) -> bool:
    return any(fnmatch(name, p) for p in ALLOW_PATTERNS) and not any(
        fnmatch(name, p) for p in IGNORE_PATTERNS
    )


def _check_free_space(cache_dir: Path, needed: int, name: str) -> None:
    """Refuse to start a download that cannot fit, instead of failing hours in."""
    probe = cache_dir
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if needed > free:
        raise CheckpointError(
            f"{name} needs {needed / 1e9:.1f} GB but {cache_dir} has {free / 1e9:.1f} GB free: "
            "free space there or set HF_HOME to a larger disk"
        )


def _check_new_lfs_files(path: Path, new: list[str]) -> None:
    """Hash files downloaded just now against the sha256 the Hub named them by.

    Plain HTTP downloads are checked only for length; weights arriving corrupt would
    otherwise surface as garbage tokens much later. Cached files were checked when they came.
    """
    for name in new:
        expected = file_hash(path / name)
        if len(expected) == 64 and sha256_of(path / name) != expected:
            blob = (path / name).resolve()
            raise CheckpointError(
                f"{path / name} does not match its sha256 on the Hub (corrupt download): "
                f"delete {blob} and run `expert-deploy fetch` again"
            )


def _write_ref(repo_folder: Path, revision: str, commit: str) -> None:
    """Record ``revision -> commit`` as huggingface_hub does, for offline runs and the planner."""
    ref = repo_folder / "refs" / revision
    ref.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(ref, commit)
