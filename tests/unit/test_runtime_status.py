"""``status`` and the other read-only commands against hand-written states (no servers)."""

from __future__ import annotations

import http.server
import json
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from expert_deploy.cli import main
from expert_deploy.runtime.apply import record_for
from expert_deploy.runtime.launcher import Handle
from expert_deploy.runtime.state import DeploymentState, StateStore
from expert_deploy.runtime.status import ComponentReport, endpoint_of, reconcile
from expert_deploy.settings import Settings
from tests.unit.runtime_support import RecordingLauncher, deployment, empty_state

#: A PID above Linux's pid_max (4194304): never a running process.
GONE = "4194400:1"


def _report(**changes: object) -> ComponentReport:
    base = ComponentReport(
        name="gateway/0",
        kind="gateway",
        ref="1:1",
        address="127.0.0.1",
        ports={"http": 1},
        liveness="running",
        ready=True,
        detail="",
        phase="ready",
        log_path=None,
        generation=2,
        expected_generation=2,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_health_needs_running_ready_and_the_expected_generation() -> None:
    assert _report().healthy and _report().state_word == "ready"
    assert _report(generation=1).state_word == "stale" and not _report(generation=1).healthy
    assert _report(generation=None).state_word == "stale"
    assert _report(ready=False).state_word == "unready"
    assert _report(liveness="exited", ready=None).state_word == "exited"
    assert _report(kind="triton", generation=None, expected_generation=None).healthy


def test_endpoint_prefers_nginx_then_the_first_gateway() -> None:
    components = deployment()
    assert endpoint_of(components) == "http://127.0.0.1:5/v1/chat/completions"
    assert endpoint_of(components[:4]) == "http://127.0.0.1:4/v1/chat/completions"
    assert endpoint_of(components[:2]) is None


def test_endpoint_is_the_front_end_address_loopback_for_all_interfaces() -> None:
    components = deployment()
    nginx = components[-1]
    remote = [*components[:-1], replace(nginx, address="10.1.2.3")]
    assert endpoint_of(remote) == "http://10.1.2.3:5/v1/chat/completions"
    wildcard = [*components[:-1], replace(nginx, address="0.0.0.0")]
    assert endpoint_of(wildcard) == "http://127.0.0.1:5/v1/chat/completions"


def test_status_probes_the_address_a_component_listens_on(tmp_path: Path) -> None:
    """A Triton bound to the host's address (here 127.0.0.2) is probed there, not on 127.0.0.1."""

    class NotReady(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(503)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.2", 0), NotReady)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        triton = replace(deployment()[0], address="127.0.0.2", ports={"http": port})
        launcher = RecordingLauncher()
        state = empty_state()
        state.components[triton.name] = record_for(triton, launcher.launch(triton), "ready")
        settings = replace(Settings(), workdir=tmp_path)

        [seen] = reconcile(state, settings, lambda _kind: launcher).components
    finally:
        server.shutdown()
        server.server_close()
    assert state.components[triton.name].address == "127.0.0.2"
    assert seen.liveness == "running" and seen.ready is False
    assert seen.detail == "/v2/health/ready: Service Unavailable"  # not "connection refused"


def test_reconcile_reports_dead_components_without_probing(tmp_path: Path) -> None:
    launcher = RecordingLauncher()
    state = empty_state()
    for c in deployment():
        state.components[c.name] = record_for(c, Handle("stand-in", f"{c.name}#0"), "ready")
    settings = replace(Settings(), workdir=tmp_path)
    report = reconcile(state, settings, lambda _kind: launcher)
    assert [c.name for c in report.components] == [c.name for c in deployment()]
    assert {c.liveness for c in report.components} == {"missing"}
    assert all(c.ready is None for c in report.components)
    assert not report.healthy
    data = report.to_json()
    assert data["healthy"] is False and data["endpoint"].endswith(":5/v1/chat/completions")
    assert data["components"][2]["expected_generation"] == 1


def _write_state(workdir: Path, *, log_lines: int = 3) -> DeploymentState:
    state = DeploymentState(
        deployment="local-synthetic",
        inventory="x.yaml",
        runtime="process",
        started_at=0.0,
        updated_at=0.0,
    )
    for c in deployment():
        log = workdir / "logs" / f"{c.slug}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("".join(f"{c.name} line {i}\n" for i in range(log_lines)))
        state.components[c.name] = record_for(c, Handle("process", GONE, log), "ready")
    StateStore(workdir).save(state)
    return state


def test_status_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "-w", str(tmp_path)]) == 1
    assert "nothing deployed" in capsys.readouterr().out
    _write_state(tmp_path)
    assert main(["status", "-w", str(tmp_path), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["healthy"] is False
    assert {c["state"] for c in report["components"]} == {"missing"}


def test_logs_selects_by_name_expert_or_kind(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _write_state(tmp_path)
    assert main(["logs", "-w", str(tmp_path), "gateway/1", "--tail", "2"]) == 0
    assert capsys.readouterr().out == "gateway/1 line 1\ngateway/1 line 2\n"
    assert main(["logs", "-w", str(tmp_path), "e1", "-n", "1"]) == 0
    assert capsys.readouterr().out == "triton/e1-0 line 2\n"
    assert main(["logs", "-w", str(tmp_path), "gateway", "-n", "1"]) == 0
    out = capsys.readouterr().out
    assert "==> gateway/0" in out and "==> gateway/1" in out and "triton" not in out
    assert main(["logs", "-w", str(tmp_path), "expert-9"]) == 2
    err = capsys.readouterr().err
    assert "no component 'expert-9' in this deployment; valid: triton/e0-0, " in err
    assert err.rstrip().endswith("nginx, e0, e1")


def test_inventory_must_match_the_deployment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _write_state(tmp_path)
    assert main(["logs", "-w", str(tmp_path), "-i", "local-synthetic", "nginx"]) == 0
    capsys.readouterr()
    assert main(["status", "-w", str(tmp_path), "-i", "dgx"]) == 1
    assert "runs deployment 'local-synthetic', not 'dgx'" in capsys.readouterr().err


def test_down_forgets_components_whose_processes_are_gone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _write_state(tmp_path)
    assert main(["down", "-w", str(tmp_path)]) == 0
    assert "stopped 5 components of deployment local-synthetic" in capsys.readouterr().out
    assert StateStore(tmp_path).load() is None
    assert main(["down", "-w", str(tmp_path)]) == 0
    assert "nothing deployed" in capsys.readouterr().out


def test_chat_needs_a_gateway(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["chat", "-w", str(tmp_path), "hi"]) == 1
    assert "nothing deployed" in capsys.readouterr().err
    state = _write_state(tmp_path)
    for name in [n for n in state.components if not n.startswith("triton/")]:
        del state.components[name]
    StateStore(tmp_path).save(state)
    assert main(["chat", "-w", str(tmp_path), "hi"]) == 1
    assert "no gateway or NGINX is running" in capsys.readouterr().err
