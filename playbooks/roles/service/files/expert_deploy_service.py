#!/usr/bin/env python3
"""Start, stop and inspect one long-running server on this host, under a pid file.

Copied to every host by the ``service`` role and run with the host's Python (standard library
only). Ansible has no builtin module that starts a detached server and remembers it, so this
script does the few things ``community.general``/systemd would otherwise do:

    start  --run-dir D --name N [--secret-env-stdin] -- ARGV...
           start ARGV in a new session (its own process group) with stdout and stderr appended
           to D/N.log, record "<pid>:<start ticks>" in D/N.pid; with --secret-env-stdin, a JSON
           object on stdin adds environment variables (credentials travel in memory only).
           A second start while the recorded process lives changes nothing.
    stop   --run-dir D --name N --grace-s S
           SIGTERM the group, SIGKILL it after S seconds (tritonserver lingers after SIGTERM).
    status --run-dir D --name N     one JSON line: liveness running | exited | missing
    logs   --run-dir D --name N --tail K

The start ticks (field 22 of /proc/<pid>/stat) guard against signalling a recycled PID.
Every command prints one JSON object on stdout, which the playbooks register.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path

#: A server that dies within this many seconds failed to start (bad flag, port in use, ...).
SETTLE_S = 1.0


def _start_ticks(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces; fields after the last ')' are fixed.
    return stat.rsplit(")", 1)[1].split()[19]


def _recorded(pid_file: Path) -> tuple[int, str] | None:
    try:
        pid_text, _, ticks = pid_file.read_text().strip().partition(":")
        return int(pid_text), ticks
    except (OSError, ValueError):
        return None


def _alive(record: tuple[int, str] | None) -> bool:
    if record is None:
        return False
    state = Path(f"/proc/{record[0]}/stat")
    try:
        # A zombie is dead for our purposes.
        if state.read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return False
    except OSError:
        return False
    return _start_ticks(record[0]) == record[1]


def _tail(path: Path, count: int) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-count:]) if count > 0 else ""


def start(run_dir: Path, name: str, argv: list[str], secret_stdin: bool) -> dict[str, object]:
    pid_file, log_file = run_dir / f"{name}.pid", run_dir / f"{name}.log"
    record = _recorded(pid_file)
    if _alive(record):
        assert record is not None
        return {"changed": False, "pid": record[0], "log": str(log_file)}
    env = dict(os.environ)
    if secret_stdin:
        env.update({str(k): str(v) for k, v in json.load(sys.stdin).items()})
    run_dir.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        log.write(f"=== expert-deploy: starting {name} at {stamp}: {argv[0]}\n".encode())
    pid = os.fork()
    if pid == 0:  # the server: its own session, output to the log, nothing else inherited
        try:
            os.setsid()
            fd = os.open(log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            os.closerange(3, 65536)
            os.execve(argv[0], argv, env)  # noqa: S606 (argv list, no shell)
        except OSError as error:
            os.write(2, f"expert-deploy: cannot execute {argv[0]}: {error.strerror}\n".encode())
        os._exit(127)
    ticks = _start_ticks(pid) or ""
    pid_file.write_text(f"{pid}:{ticks}\n")
    deadline = time.monotonic() + SETTLE_S
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            pid_file.unlink()
            code = os.waitstatus_to_exitcode(status)
            sys.stderr.write(f"{name} exited with code {code} at start; log: {log_file}\n")
            sys.stderr.write(_tail(log_file, 15) + "\n")
            raise SystemExit(1)
        time.sleep(0.05)
    return {"changed": True, "pid": pid, "log": str(log_file)}


def stop(run_dir: Path, name: str, grace_s: float) -> dict[str, object]:
    pid_file = run_dir / f"{name}.pid"
    record = _recorded(pid_file)
    if not _alive(record):
        pid_file.unlink(missing_ok=True)
        return {"changed": False}
    assert record is not None
    pid = record[0]
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and _alive(record):
        time.sleep(0.1)
    # Whatever is left of the group (tritonserver's backend stubs) goes now.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline and _alive(record):
        time.sleep(0.1)
    if _alive(record):
        sys.stderr.write(f"{name} (pid {pid}) survived SIGKILL\n")
        raise SystemExit(1)
    pid_file.unlink(missing_ok=True)
    return {"changed": True, "pid": pid}


def status(run_dir: Path, name: str) -> dict[str, object]:
    pid_file = run_dir / f"{name}.pid"
    record = _recorded(pid_file)
    if record is None:
        return {"changed": False, "liveness": "missing", "detail": f"no pid file {pid_file}"}
    if _alive(record):
        return {"changed": False, "liveness": "running", "detail": f"pid {record[0]}"}
    return {"changed": False, "liveness": "exited", "detail": f"pid {record[0]} is gone"}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("start", "stop", "status", "logs"))
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--grace-s", type=float, default=10.0)
    parser.add_argument("--tail", type=int, default=50)
    parser.add_argument("--secret-env-stdin", action="store_true")
    # The server's argv follows "--" verbatim (its flags must not reach argparse).
    split = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:split])
    command = argv[split + 1 :]
    if args.command == "start":
        if not command or not Path(command[0]).is_absolute():
            parser.error("start needs an absolute program path after --")
        result = start(args.run_dir, args.name, command, args.secret_env_stdin)
    elif args.command == "stop":
        result = stop(args.run_dir, args.name, args.grace_s)
    elif args.command == "status":
        result = status(args.run_dir, args.name)
    else:
        log_file = args.run_dir / f"{args.name}.log"
        result = {"changed": False, "log": str(log_file), "text": _tail(log_file, args.tail)}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
