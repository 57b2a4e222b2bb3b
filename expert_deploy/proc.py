"""The one place expert_deploy runs outside commands.

Commands are argv lists built by pure functions elsewhere; nothing here joins or splits
strings, and nothing uses a shell.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
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


# --- long-running children -------------------------------------------------------------------
#
# Servers (tritonserver, gateway replicas, NGINX) outlive the CLI that starts them: each is the
# leader of its own session, so Ctrl-C on the CLI does not reach it, and its process group holds
# everything it forks (Triton's Python backend stubs, NGINX workers), so one signal reaches all.
# ``os.posix_spawn`` rather than ``subprocess.Popen``: no Popen object is left to warn "still
# running" when the CLI lets go of a child that is meant to keep running.

#: Signals Python ignores or handles that a server must get back at their defaults.
_DEFAULT_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGTERM)


@dataclass(frozen=True)
class ProcessIdentity:
    """A PID plus its start time (``/proc/<pid>/stat`` field 22), which a recycled PID lacks."""

    pid: int
    start_ticks: int

    @property
    def ref(self) -> str:
        return f"{self.pid}:{self.start_ticks}"

    @classmethod
    def parse(cls, ref: str) -> ProcessIdentity:
        """The identity a ``ref`` string names.

        Raises:
            ValueError: ``ref`` is not ``"<pid>:<ticks>"``.
        """
        pid, _, ticks = ref.partition(":")
        return cls(int(pid), int(ticks))


def spawn(argv: list[str], *, env: Mapping[str, str], log_path: Path) -> ProcessIdentity:
    """Start ``argv[0]`` (an absolute path) in a new session, output appended to ``log_path``.

    Returns at once. The child inherits no file descriptor but stdin (``/dev/null``) and
    stdout/stderr (the log): Python opens everything else close-on-exec, which keeps the
    deployment lock from leaking into servers.

    Raises:
        OSError: the program could not be executed (missing, not executable).
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    pid = os.posix_spawn(
        argv[0],
        argv,
        dict(env),
        file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, str(log_path), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644),
            (os.POSIX_SPAWN_DUP2, 1, 2),
        ],
        setsid=True,
        setsigdef=_DEFAULT_SIGNALS,
    )
    ticks = start_ticks(pid)
    # A child that exited within microseconds has no /proc entry left but its zombie's; both
    # cases still have a start time unless already reaped, which only this process could do.
    return ProcessIdentity(pid, ticks if ticks is not None else 0)


def _stat_fields(pid: int) -> list[str] | None:
    """Fields 3… of ``/proc/<pid>/stat`` (after the parenthesised command name), or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name may itself contain spaces and parentheses: split after the last ")".
    return text[text.rfind(")") + 2 :].split()


def start_ticks(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot, or None when there is no such process."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None  # field 22 overall; fields[0] is field 3


def _state_letter(pid: int) -> str | None:
    fields = _stat_fields(pid)
    return fields[0] if fields else None


def reap(pid: int) -> int | None:
    """Collect ``pid`` if it is this process's exited child; its exit code (or -signal), else None.

    Only the CLI run that spawned a server can learn its exit code; later runs see it gone.
    """
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return None
    if done == 0:
        return None
    return os.waitstatus_to_exitcode(status)


def is_alive(identity: ProcessIdentity) -> bool:
    """True when the process ``identity`` names still runs (a zombie counts as exited)."""
    if start_ticks(identity.pid) != identity.start_ticks:
        return False
    return _state_letter(identity.pid) not in (None, "Z", "X")


def group_members(pgid: int, *, started_since: int = 0) -> list[int]:
    """Live PIDs in process group ``pgid`` that started at or after ``started_since`` ticks."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if not fields or fields[0] in ("Z", "X"):
            continue
        if int(fields[2]) == pgid and int(fields[19]) >= started_since:
            members.append(int(entry.name))
    return members


def stop_group(identity: ProcessIdentity, *, grace_s: float, kill_wait_s: float = 10.0) -> bool:
    """SIGTERM the group ``identity`` leads, wait up to ``grace_s``, then SIGKILL what is left.

    Never signals a stranger: when the leader's PID now belongs to another process (a different
    start time), nothing is sent. When the leader is gone but members of its group live on (a
    Triton backend stub after its server was killed), those members are signalled one by one;
    the PID of a group leader is not reused while its group has members, so they are ours.
    Returns True when nothing of the group is left.
    """
    pid = identity.pid
    current = start_ticks(pid)
    if current is not None and current != identity.start_ticks:
        return True  # the PID was recycled: what we started is long gone
    _signal_group(identity, signal.SIGTERM)
    if _wait_gone(identity, grace_s):
        return True
    _signal_group(identity, signal.SIGKILL)
    return _wait_gone(identity, kill_wait_s)


def _signal_group(identity: ProcessIdentity, sig: signal.Signals) -> None:
    if is_alive(identity):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(identity.pid, sig)
        return
    for member in group_members(identity.pid, started_since=identity.start_ticks):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(member, sig)


def _wait_gone(identity: ProcessIdentity, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while True:
        reap(identity.pid)
        if not is_alive(identity) and not group_members(
            identity.pid, started_since=identity.start_ticks
        ):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def tail_lines(path: Path, count: int) -> str:
    """The last ``count`` lines of a log file ("" when it does not exist)."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            # Read backwards in blocks until enough newlines are in hand.
            block = 8192
            data = b""
            position = size
            while position > 0 and data.count(b"\n") <= count:
                step = min(block, position)
                position -= step
                handle.seek(position)
                data = handle.read(step) + data
    except FileNotFoundError:
        return ""
    lines = data.decode(errors="replace").splitlines()
    return "\n".join(lines[-count:]) if count > 0 else ""


def leaders_with_env(name: str, value: str, *, prefix: bool = False) -> list[ProcessIdentity]:
    """Live session leaders whose environment has ``name=value`` (``value…`` with ``prefix``).

    A server's environment carries a marker naming its work dir and component, set when it
    was spawned; this finds one that was started but never recorded (its CLI was killed
    between the spawn and the state write), so it can be stopped instead of left running.
    """
    wanted = f"{name}={value}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        fields = _stat_fields(pid)
        if not fields or fields[0] in ("Z", "X") or int(fields[2]) != pid:
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        entries = environ.split(b"\0")
        if any(e.startswith(wanted) if prefix else e == wanted for e in entries):
            found.append(ProcessIdentity(pid, int(fields[19])))
    return found
