"""Start a process in its own process group and stop the whole group.

tritonserver keeps running with its backend stub after SIGTERM once its exit timeout passes,
so every helper here signals the group, waits a short grace period, then SIGKILLs the group.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


def start_group(argv: list[str], *, env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start ``argv`` as the leader of a new session, stdout and stderr appended to ``log_path``."""
    with log_path.open("ab") as log_file:
        return subprocess.Popen(
            argv,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def stop_group(process: subprocess.Popen[bytes], *, grace_s: float = 3.0) -> int | None:
    """SIGTERM the process group, wait up to ``grace_s``, then SIGKILL it; return the exit code."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=grace_s)
    kill_group(process)
    return process.returncode


def kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the whole process group at once (simulates a crash) and reap the leader."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10.0)


def wait_until(
    predicate: Callable[[], bool], *, timeout_s: float, interval_s: float = 0.05
) -> bool:
    """Poll ``predicate()`` until it is true or ``timeout_s`` passes; return the last result."""
    deadline = time.monotonic() + timeout_s
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)


def thread_cpu_lists(pid: int) -> set[str]:
    """The ``Cpus_allowed_list`` of every thread of process ``pid`` (one entry if all agree)."""
    lists = set()
    for status in Path(f"/proc/{pid}/task").glob("*/status"):
        for line in status.read_text().splitlines():
            if line.startswith("Cpus_allowed_list:"):
                lists.add(line.split(":", 1)[1].strip())
    return lists
