"""What a fetched checkpoint is: its identity, where it lies, and the hash of every file."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

#: What a Llama 3 expert needs: weights, configs, tokenizer, model card and licence.
ALLOW_PATTERNS = ("*.json", "*.safetensors", "tokenizer*", "*.md", "LICENSE")
#: Meta's original consolidated weights (16 GB for 8B, 141 GB for 70B) that nothing here reads.
IGNORE_PATTERNS = ("original/*",)

_HEX_HASH = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")
_CHUNK_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class Checkpoint:
    """A downloaded and verified checkpoint in the Hugging Face cache.

    ``files`` pairs each file's path (relative to ``path``) with the hash the Hub knows it by:
    the sha256 of LFS files (the weights) and the git blob id of small ones.
    """

    repo: str
    revision: str
    commit: str
    path: Path
    files: tuple[tuple[str, str], ...]
    #: True when nothing had to be downloaded: everything was already in the cache.
    cached: bool = False

    @property
    def size_bytes(self) -> int:
        return sum((self.path / name).stat().st_size for name, _ in self.files)

    @property
    def key(self) -> str:
        """``repo@revision``, as the inventory names it (and as checkpoints.json is keyed)."""
        return f"{self.repo}@{self.revision}"


def is_commit(revision: str) -> bool:
    """True when ``revision`` already is a full 40-hex commit id (nothing to resolve)."""
    return re.fullmatch(r"[0-9a-f]{40}", revision) is not None


def snapshot_files(snapshot: Path) -> list[str]:
    """Every file of a snapshot folder, relative and '/'-separated, sorted."""
    return sorted(
        p.relative_to(snapshot).as_posix()
        for p in snapshot.rglob("*")
        if p.is_file() and not p.name.endswith(".incomplete")
    )


def file_hash(path: Path) -> str:
    """The Hub's identity of a cached file: the blob name its snapshot link points to.

    huggingface_hub stores each file as ``blobs/<etag>`` (sha256 for LFS files, git blob id
    otherwise) and links the snapshot entry to it, so reading the link costs no I/O. A copy
    without a link (filesystems without symlinks) is hashed with sha256.
    """
    if path.is_symlink():
        name = path.readlink().name
        if _HEX_HASH.match(name):
            return name
    return sha256_of(path)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()
