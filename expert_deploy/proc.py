"""The one place expert_deploy runs outside commands.

Commands are argv lists built by pure functions elsewhere; nothing here joins or splits
strings, and nothing uses a shell.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from expert_deploy.errors import CommandError

_TAIL_LINES = 20


@dataclass(frozen=True)
class Completed:
    argv: tuple[str, ...]
    returncode: int
    output: str


def run(
    argv: list[str],
    *,
    timeout_s: float,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    log_path: Path | None = None,
    check: bool = True,
) -> Completed:
    """Run ``argv`` to completion, stdout and stderr together, optionally into ``log_path``.

    Raises:
        CommandError: the command exited non-zero (with ``check``), could not start, or ran
            past ``timeout_s``; it carries the argv, the exit code and the last lines.
    """
    try:
        done = subprocess.run(
            argv,
            cwd=cwd,
            env=dict(env) if env is not None else None,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            timeout=timeout_s,
            check=False,
        )
    except FileNotFoundError:
        raise CommandError(argv, 127, f"{argv[0]}: command not found", None) from None
    except subprocess.TimeoutExpired as expired:
        output = expired.output if isinstance(expired.output, str) else ""
        raise CommandError(
            argv, 124, f"timed out after {timeout_s:g} s\n{_tail(output)}", log_path
        ) from None
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.write_text(done.stdout, encoding="utf-8")
    if check and done.returncode != 0:
        raise CommandError(argv, done.returncode, _tail(done.stdout), log_path)
    return Completed(tuple(argv), done.returncode, done.stdout)


def _tail(output: str) -> str:
    return "\n".join(output.splitlines()[-_TAIL_LINES:])
