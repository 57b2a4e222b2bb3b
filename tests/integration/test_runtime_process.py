"""`up`, `status`, `chat`, `logs`, `down` with the process runtime: real tritonserver (the
nvidia-pytriton wheel's), real gateway replicas, real NGINX, all on loopback.

Every test runs the CLI as a separate process (as a user would, and so that the interrupted
`up` can be SIGKILLed) with its own --workdir and an inventory on free ports. A finalizer
stops whatever a test left behind, so a failure never leaks servers into other runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from expert_deploy.binaries import find_nginx, find_tritonserver
from expert_deploy.runtime.state import StateStore
from tests.support.inventories import REPO_ROOT, materialize
from tests.support.processes import wait_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        find_tritonserver() is None, reason="needs tritonserver (expert-deploy[local])"
    ),
]

HAS_NGINX = find_nginx() is not None
API_KEY = "key-integration-one"
ADMIN_TOKEN = "admin-integration-secret"
CLI_TIMEOUT_S = 600


def cli(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``expert-deploy ARGS`` to completion in a fresh interpreter."""
    return subprocess.run(
        [sys.executable, "-m", "expert_deploy", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        env=env if env is not None else dict(os.environ),
        cwd=REPO_ROOT,
        check=False,
    )


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rfind(")") + 2 :].split()


def is_running(pid: int) -> bool:
    """Alive and not a zombie (a killed server's zombie may wait for init to reap it)."""
    fields = _stat(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def processes_mentioning(text: str) -> dict[int, int]:
    """pid → process group of every live process whose command line contains ``text``."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = _stat(int(entry.name))
        if text in cmdline and fields is not None and fields[0] not in ("Z", "X"):
            found[int(entry.name)] = int(fields[2])
    return found


def _cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")


def group_alive(pgid: int) -> bool:
    return any(
        (f := _stat(int(e.name))) is not None and f[0] not in ("Z", "X") and int(f[2]) == pgid
        for e in Path("/proc").iterdir()
        if e.name.isdigit()
    )


def state_of(workdir: Path) -> dict[str, Any]:
    return json.loads((workdir / "state.json").read_text())


def pids_of(state: dict[str, Any]) -> dict[str, int]:
    return {name: int(c["ref"].split(":")[0]) for name, c in state["components"].items()}


def refs_of(state: dict[str, Any]) -> dict[str, str]:
    return {name: c["ref"] for name, c in state["components"].items()}


def assert_nothing_unrecorded(workdir: Path) -> None:
    """Every live process started from ``workdir`` belongs to a group the state records."""
    recorded = (
        set(pids_of(state_of(workdir)).values()) if (workdir / "state.json").exists() else set()
    )
    strays = {pid: g for pid, g in processes_mentioning(str(workdir)).items() if g not in recorded}
    assert not strays, f"processes not in the state: {strays}"


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    """The test's work dir; afterwards `down`, then SIGKILL any group still mentioning it."""
    path = tmp_path / "work"
    yield path
    if path.exists():
        cli("down", "-w", path)
    for pgid in set(processes_mentioning(str(path)).values()):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)


@pytest.fixture
def inventory(tmp_path: Path) -> Path:
    return materialize("local-synthetic", tmp_path / "inventory")


def secret_env() -> dict[str, str]:
    return {
        **os.environ,
        "EXPERT_DEPLOY_API_KEYS": f"{API_KEY},key-integration-two",
        "EXPERT_DEPLOY_ADMIN_TOKEN": ADMIN_TOKEN,
    }


def test_up_chat_noop_status_kill_restart_down(inventory: Path, workdir: Path) -> None:
    env = secret_env()
    first = cli("up", "-i", inventory, "-w", workdir, env=env)
    assert first.returncode == 0, first.stderr
    data = yaml.safe_load(inventory.read_text())
    expected = {
        "triton/expert-0-0",
        "triton/expert-1-0",
        "triton/expert-2-0",
        "gateway/0",
        "gateway/1",
    }
    if HAS_NGINX:
        expected.add("nginx")
        port = data["nginx"]["listen_port"]
        assert f"send requests to http://127.0.0.1:{port}/v1/chat/completions" in first.stdout
    state = state_of(workdir)
    assert set(state["components"]) == expected
    assert all(c["phase"] == "ready" for c in state["components"].values())
    pids = pids_of(state)
    assert all(is_running(pid) for pid in pids.values())
    # Each server leads its own process group (one signal reaches Triton's backend stubs).
    assert all(int(_stat(pid)[2]) == pid for pid in pids.values())  # type: ignore[index]

    chat = cli(
        "chat", "-w", workdir, "-i", inventory, "roast garlic onion", "--max-tokens", "4", env=env
    )
    assert chat.returncode == 0, chat.stderr
    assert chat.stdout.strip(), "no tokens streamed"
    assert "served by expert-" in chat.stderr and "(cluster " in chat.stderr

    second = cli("up", "-i", inventory, "-w", workdir, env=env)
    assert second.returncode == 0, second.stderr
    assert f"nothing to do: {len(expected)} components running and ready" in second.stdout
    assert refs_of(state_of(workdir)) == refs_of(state)

    status = cli("status", "-w", workdir, "--json", env=env)
    assert status.returncode == 0, status.stdout + status.stderr
    report = json.loads(status.stdout)
    assert report["healthy"] is True
    gateways = [c for c in report["components"] if c["kind"] == "gateway"]
    assert [g["generation"] for g in gateways] == [1, 1]
    assert all(c["ready"] and c["liveness"] == "running" for c in report["components"])

    # The keys reach the gateways (a request without one is refused) but no file.
    assert "401" in cli("chat", "-w", workdir, "hello", "--max-tokens", "1").stderr
    for path in workdir.rglob("*"):
        if path.is_file() and not path.is_symlink() and path.stat().st_size < 50_000_000:
            content = path.read_bytes()
            assert API_KEY.encode() not in content, path
            assert ADMIN_TOKEN.encode() not in content, path

    victim = pids["triton/expert-1-0"]
    os.kill(victim, signal.SIGKILL)
    assert wait_until(lambda: not is_running(victim), timeout_s=60)
    down_report = cli("status", "-w", workdir, "--json", env=env)
    assert down_report.returncode == 1
    by_name = {c["name"]: c for c in json.loads(down_report.stdout)["components"]}
    assert by_name["triton/expert-1-0"]["liveness"] != "running"
    assert by_name["triton/expert-1-0"]["healthy"] is False

    third = cli("up", "-i", inventory, "-w", workdir, env=env)
    assert third.returncode == 0, third.stderr
    assert "triton/expert-1-0: restarting (not running)" in third.stderr
    after = refs_of(state_of(workdir))
    changed = {name for name in after if after[name] != refs_of(state)[name]}
    assert changed == {"triton/expert-1-0"}
    assert cli("status", "-w", workdir, env=env).returncode == 0
    assert_nothing_unrecorded(workdir)

    logs = cli("logs", "-w", workdir, "expert-1", "--tail", "5")
    assert logs.returncode == 0 and "expert-deploy: starting triton/expert-1-0" not in logs.stderr

    final_pids = pids_of(state_of(workdir))
    down = cli("down", "-w", workdir, "-i", inventory)
    assert down.returncode == 0, down.stderr
    assert f"stopped {len(expected)} components" in down.stdout
    assert not (workdir / "state.json").exists()
    assert not any(is_running(pid) or group_alive(pid) for pid in final_pids.values())
    assert processes_mentioning(str(workdir)) == {}
    assert "nothing deployed" in cli("down", "-w", workdir).stdout


def test_port_in_use_is_refused_and_nothing_is_left(inventory: Path, workdir: Path) -> None:
    data = yaml.safe_load(inventory.read_text())
    port = data["triton"]["grpc_base_port"] + data["triton"]["port_stride"]  # expert-1's gRPC
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        result = cli("up", "-i", inventory, "-w", workdir)
    assert result.returncode == 1
    assert (
        f"port {port} (triton/expert-1-0 grpc) is in use; free it or change "
        "triton.grpc_base_port" in result.stderr
    )
    assert not (workdir / "state.json").exists()
    assert processes_mentioning(str(workdir)) == {}


def test_triton_crashing_at_start_names_component_and_log(
    inventory: Path, workdir: Path, tmp_path: Path
) -> None:
    # A data folder like the repository's, except that the synthetic model raises on load.
    data_dir = tmp_path / "data"
    for name in ("engines", "templates", "inventories"):
        (data_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (data_dir / name).symlink_to(REPO_ROOT / name)
    model = data_dir / "triton_models" / "synthetic" / "1" / "model.py"
    model.parent.mkdir(parents=True)
    model.write_text(
        "class TritonPythonModel:\n"
        "    def initialize(self, args):\n"
        "        raise RuntimeError('broken model for the crash test')\n"
    )
    env = {**os.environ, "EXPERT_DEPLOY_DATA_DIR": str(data_dir)}
    result = cli("up", "-i", inventory, "-w", workdir, env=env)
    assert result.returncode == 1
    log = workdir.resolve() / "logs" / "triton-expert-0-0.log"
    assert f"triton/expert-0-0 exited with code 1 while starting; log: {log}" in result.stderr
    assert "broken model for the crash test" in log.read_text()
    assert not (workdir / "state.json").exists()
    assert processes_mentioning(str(workdir)) == {}


def test_second_command_refuses_while_the_lock_is_held(inventory: Path, workdir: Path) -> None:
    with StateStore(workdir).locked("swap"):
        result = cli("up", "-i", inventory, "-w", workdir)
    assert result.returncode == 1
    assert (
        "`expert-deploy swap`" in result.stderr and "is changing this deployment" in result.stderr
    )
    assert processes_mentioning(str(workdir)) == {}


def test_interrupted_up_is_converged_without_leaks(inventory: Path, workdir: Path) -> None:
    argv = [sys.executable, "-m", "expert_deploy", "up", "-i", str(inventory), "-w", str(workdir)]
    interrupted = subprocess.Popen(
        argv, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:

        def recorded():
            return (workdir / "state.json").exists() and bool(state_of(workdir)["components"])

        assert wait_until(recorded, timeout_s=300, interval_s=0.02)
    finally:
        interrupted.kill()
        interrupted.wait(timeout=60)
    before = refs_of(state_of(workdir))
    # The servers live on in their own sessions: SIGKILL of the CLI does not reach them.
    assert any(is_running(int(ref.split(":")[0])) for ref in before.values())

    again = cli("up", "-i", inventory, "-w", workdir)
    assert again.returncode == 0, again.stderr
    state = state_of(workdir)
    assert all(c["phase"] == "ready" for c in state["components"].values())
    # Recorded servers that were still starting are kept, not started twice.
    after = refs_of(state)
    assert all(after[name] == ref for name, ref in before.items() if name.startswith("triton/"))
    assert_nothing_unrecorded(workdir)
    running = processes_mentioning(str(workdir))
    tritons = sorted(p for p in running if "tritonserver" in _cmdline(p))
    assert tritons == sorted(
        pid for name, pid in pids_of(state).items() if name.startswith("triton/")
    )

    down = cli("down", "-w", workdir)
    assert down.returncode == 0, down.stderr
    assert processes_mentioning(str(workdir)) == {}


def test_status_logs_chat_without_a_deployment(workdir: Path) -> None:
    status = cli("status", "-w", workdir)
    assert status.returncode == 1 and "nothing deployed" in status.stdout
    assert json.loads(cli("status", "-w", workdir, "--json").stdout)["deployed"] is False
    chat = cli("chat", "-w", workdir, "hello")
    assert chat.returncode == 1 and "nothing deployed" in chat.stderr
    assert "nothing deployed" in cli("down", "-w", workdir).stdout


def _accepts(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _spawn_orphan(workdir: Path, name: str, port: int | None = None) -> int:
    """A process as a killed `up` leaves it: spawned with the component's marker, unrecorded."""
    from expert_deploy import proc
    from expert_deploy.runtime.process_launcher import MARKER_ENV

    code = "import time\n"
    if port is not None:
        code += (
            "import socket\ns = socket.socket()\n"
            "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
            f"s.bind(('127.0.0.1', {port}))\ns.listen()\n"
        )
    code += "time.sleep(600)\n"
    env = {**os.environ, MARKER_ENV: f"{workdir.resolve()}::{name}"}
    identity = proc.spawn(
        [sys.executable, "-c", code, str(workdir)], env=env, log_path=workdir / "orphan.log"
    )
    return identity.pid


def test_unrecorded_servers_of_a_killed_up_are_stopped(inventory: Path, workdir: Path) -> None:
    data = yaml.safe_load(inventory.read_text())
    port = data["triton"]["http_base_port"]  # expert-0's HTTP port, held by the orphan
    orphan = _spawn_orphan(workdir, "triton/expert-0-0", port)
    assert wait_until(lambda: _accepts(port), timeout_s=60), "the orphan never listened"
    up = cli("up", "-i", inventory, "-w", workdir)
    assert up.returncode == 0, up.stderr
    assert wait_until(lambda: not is_running(orphan), timeout_s=30)
    assert_nothing_unrecorded(workdir)
    assert json.loads(cli("status", "-w", workdir, "--json").stdout)["unrecorded"] == 0

    running = _spawn_orphan(workdir, "gateway/8")  # beside a recorded deployment
    assert json.loads(cli("status", "-w", workdir, "--json").stdout)["unrecorded"] == 1
    status = cli("status", "-w", workdir)
    assert status.returncode == 0, status.stderr  # the recorded deployment is still healthy
    assert "1 server(s) of an interrupted `up` run outside the state" in status.stderr
    down = cli("down", "-w", workdir)
    assert down.returncode == 0 and "and 1 unrecorded server(s)" in down.stdout
    assert wait_until(lambda: not is_running(running), timeout_s=30)

    stray = _spawn_orphan(workdir, "gateway/9")
    down = cli("down", "-w", workdir)
    assert "stopped 1 unrecorded server(s)" in down.stdout
    assert wait_until(lambda: not is_running(stray), timeout_s=30)
