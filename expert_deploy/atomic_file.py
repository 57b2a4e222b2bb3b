"""Replace a file whole: a reader (or a crash) sees the old content or the new, never half.

The deployment state, the lockfile, the checkpoint record and Hub refs are all rewritten this
way: a temporary file in the same folder (so the rename stays on one file system), flushed and
fsynced, then renamed over the target. Folders (rendered configs, router arrays, generated
checkpoints) are filled in a :func:`staging_dir` and renamed into place the same way.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_text_atomically(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` by rename; the temporary file never outlives a failure.

    Raises:
        OSError: the folder cannot be written.
    """
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        Path(temp).replace(path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def staging_dir(parent: Path, prefix: str) -> Path:
    """A new empty folder in ``parent`` (same file system as its final place) to fill, then rename.

    Mode 0755, not mkdtemp's 0700: what lands there is published (no secrets ever do) and is
    read by servers that may run as another user, such as the gateway image's ``nobody``.

    Raises:
        OSError: ``parent`` cannot be written.
    """
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    path.chmod(0o755)
    return path
