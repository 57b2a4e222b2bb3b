"""Collect a deployment's files in memory, then write them all at once, atomically.

Everything is first written into a fresh temporary folder next to the destination (same file
system, so the final ``os.replace`` is a rename), then swapped in: a failure at any point
leaves the previous ``rendered/`` untouched and no temporary folder behind.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from expert_deploy.atomic_file import staging_dir
from expert_deploy.errors import RenderError


@dataclass(frozen=True)
class StagedFile:
    """A file to write: its bytes, or (for a symlink) the target it points at."""

    path: PurePosixPath
    data: bytes = b""
    link_target: str | None = None
    mode: int = 0o644

    @property
    def sha256(self) -> str:
        """Digest of the bytes (of the link target for a symlink): what the lockfile records."""
        payload = self.link_target.encode() if self.link_target is not None else self.data
        return hashlib.sha256(payload).hexdigest()


@dataclass
class Staging:
    """Files of one deployment, keyed by their path relative to ``rendered/``."""

    files: dict[PurePosixPath, StagedFile] = field(default_factory=dict)

    def add_text(self, path: str, text: str) -> None:
        self._add(StagedFile(PurePosixPath(path), text.encode("utf-8")))

    def add_bytes(self, path: str, data: bytes, mode: int = 0o644) -> None:
        self._add(StagedFile(PurePosixPath(path), data, mode=mode))

    def add_symlink(self, path: str, target: str) -> None:
        self._add(StagedFile(PurePosixPath(path), link_target=target))

    def _add(self, staged: StagedFile) -> None:
        if staged.path in self.files:
            raise RenderError(f"two rendered files want the same path {staged.path}")
        self.files[staged.path] = staged

    def commit(self, destination: Path) -> None:
        """Write every file into ``destination`` (replaced whole), or nothing at all.

        Raises:
            RenderError: the folder cannot be created or written (one line, with the OS reason).
        """
        parent = destination.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
            temp = staging_dir(parent, f".{destination.name}-new-")
        except OSError as exc:
            raise RenderError(f"cannot write to {parent}: {exc.strerror or exc}") from exc
        try:
            for staged in sorted(self.files.values(), key=lambda f: f.path):
                _write(temp, staged)
            _swap(temp, destination)
        except OSError as exc:
            shutil.rmtree(temp, ignore_errors=True)
            raise RenderError(f"cannot write to {destination}: {exc.strerror or exc}") from exc


def _write(root: Path, staged: StagedFile) -> None:
    target = root.joinpath(*staged.path.parts)
    target.parent.mkdir(parents=True, exist_ok=True)
    if staged.link_target is not None:
        target.symlink_to(staged.link_target)
        return
    target.write_bytes(staged.data)
    target.chmod(staged.mode)


def _swap(new: Path, destination: Path) -> None:
    """Put ``new`` at ``destination``; keep the old tree until the new one is in place."""
    if not destination.exists():
        new.replace(destination)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{destination.name}-old-", dir=destination.parent))
    destination.replace(old / "tree")
    try:
        new.replace(destination)
    except OSError:
        (old / "tree").replace(destination)  # put the previous render back
        old.rmdir()
        raise
    shutil.rmtree(old, ignore_errors=True)
