"""The ansible launcher's pure parts: environment, inventory, refs, events, errors, secret pipe.

No ansible-playbook runs here (tests/integration/test_runtime_ansible.py does that).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path, PurePosixPath

import pytest
import yaml

from expert_deploy.errors import LaunchError
from expert_deploy.runtime.ansible_launcher import (
    AnsibleLauncher,
    HostAccess,
    RunOutcome,
    Target,
    _SecretPipe,
    runner_environment,
)
from expert_deploy.runtime.components import Component
from expert_deploy.settings import Settings

REPO = Path(__file__).resolve().parents[2]
PLAYBOOKS = REPO / "playbooks"


def _launcher(tmp_path: Path, environ: dict[str, str] | None = None) -> AnsibleLauncher:
    settings = Settings(workdir=tmp_path / "work", data_dir=REPO, environ=environ or {})
    return AnsibleLauncher(settings, progress=lambda *_: None, ssh_port=2222, connect_timeout_s=4)


def _component(kind: str, name: str, config_path: Path, host: str = "gpu-1") -> Component:
    return Component(
        name=name,
        kind=kind,  # type: ignore[arg-type]
        host=host,
        address="10.0.0.5",
        config_path=config_path,
        config_hash="x",
        ports={"http": 8000},
    )


def test_runner_environment_keeps_only_the_allow_list_with_the_venv_first() -> None:
    env = {
        "PATH": "/usr/bin:/venv/bin:/bin",
        "HOME": "/root",
        "HF_TOKEN": "hf_secret",
        "EXPERT_DEPLOY_ADMIN_TOKEN": "admin",
        "AWS_SECRET_ACCESS_KEY": "aws",
        "ANSIBLE_STDOUT_CALLBACK": "awx_display",
        "RUNNER_OMIT_EVENTS": "False",
        "LC_ALL": "C.UTF-8",
    }
    kept = runner_environment(env, Path("/venv/bin"))
    assert kept == {
        "PATH": "/venv/bin:/usr/bin:/bin",
        "HOME": "/root",
        "ANSIBLE_STDOUT_CALLBACK": "awx_display",
        "RUNNER_OMIT_EVENTS": "False",
        "LC_ALL": "C.UTF-8",
    }


def test_target_ref_round_trips_and_a_foreign_ref_is_a_clear_error() -> None:
    target = Target(HostAccess("gpu-1", "10.0.0.5", "ops"), "/opt/expert-deploy/d/nginx", "nginx")
    assert Target.parse(target.ref()) == target
    assert target.log_path == Path("/opt/expert-deploy/d/nginx/nginx.log")
    with pytest.raises(LaunchError, match="not an ansible target; was it written by another"):
        Target.parse("1234:5678")


def test_loopback_host_runs_locally_and_any_other_over_ssh_with_a_short_timeout(
    tmp_path: Path,
) -> None:
    launcher = _launcher(tmp_path)
    local = launcher._inventory(HostAccess("localhost", "127.0.0.1"))["all"]["hosts"]["localhost"]
    assert local["ansible_connection"] == "local"
    remote = launcher._inventory(HostAccess("gpu-1", "10.0.0.5", "ops"))["all"]["hosts"]["gpu-1"]
    assert remote["ansible_connection"] == "ssh"
    assert remote["ansible_user"] == "ops" and remote["ansible_port"] == 2222
    assert remote["ansible_ssh_timeout"] == 4
    assert "ConnectTimeout=4" in remote["ansible_ssh_common_args"]
    # Loopback with an SSH user is a real SSH target (how the unreachable test reaches it).
    assert not HostAccess("x", "127.0.0.1", "ops").is_local


def test_events_become_progress_lines_failures_and_helper_reports(tmp_path: Path) -> None:
    lines: list[tuple[str, str]] = []
    launcher = AnsibleLauncher(
        Settings(workdir=tmp_path, data_dir=REPO), progress=lambda n, m: lines.append((n, m))
    )
    outcome = RunOutcome("running", None, tmp_path)
    events = [
        {"event": "playbook_on_task_start", "event_data": {"task": "Copy the repository"}},
        {
            "event": "runner_on_ok",
            "event_data": {
                "task": "Report the server's liveness",
                "host": "gpu-1",
                "role": "service",
                "res": {"stdout": json.dumps({"liveness": "running", "detail": "pid 7"})},
            },
        },
        {
            "event": "runner_on_failed",
            "event_data": {
                "task": "Start the server detached",
                "host": "gpu-1",
                "res": {"msg": "non-zero return code", "stderr": "x\nport 8000 in use"},
            },
        },
        {
            "event": "runner_on_unreachable",
            "event_data": {
                "task": "Create the run folder",
                "host": "gpu-1",
                "res": {"msg": "ssh: refused"},
            },
        },
    ]
    for event in events:
        assert launcher._on_event("triton/e-0", outcome, event) is True
    assert lines == [
        ("triton/e-0", "task: Copy the repository"),
        ("triton/e-0", "ok: Report the server's liveness (gpu-1)"),
        ("triton/e-0", "failed: Start the server detached (gpu-1)"),
        ("triton/e-0", "unreachable: Create the run folder (gpu-1)"),
    ]
    assert outcome.reports == [{"liveness": "running", "detail": "pid 7"}]
    assert outcome.failed == [
        "Start the server detached on gpu-1: non-zero return code port 8000 in use"
    ]
    assert outcome.unreachable == ["gpu-1: ssh: refused"]


def test_failure_message_names_component_host_log_and_artifacts(tmp_path: Path) -> None:
    target = Target(
        HostAccess("gpu-1", "10.0.0.5"), "/opt/expert-deploy/d/triton-e-0", "triton-e-0"
    )
    outcome = RunOutcome(
        "failed", 4, tmp_path / "launch-triton-e-0", unreachable=["gpu-1: refused"]
    )
    message = AnsibleLauncher._failure("triton/e-0", target, outcome, "could not start")
    assert message == (
        "triton/e-0 could not start: host gpu-1 (10.0.0.5) is unreachable: gpu-1: refused; "
        "log on the host: /opt/expert-deploy/d/triton-e-0/triton-e-0.log; "
        f"Ansible artifacts: {tmp_path / 'launch-triton-e-0'}"
    )
    timed_out = RunOutcome("timeout", None, tmp_path)
    assert "timed out" in AnsibleLauncher._failure("nginx", target, timed_out, "could not start")


def test_remote_hosts_use_role_defaults_and_a_folder_per_deployment(tmp_path: Path) -> None:
    launcher = _launcher(tmp_path)
    launcher.vars_file.parent.mkdir(parents=True)
    launcher.vars_file.write_text(
        yaml.safe_dump(
            {
                "deployment": "lab",
                "hosts": [{"name": "gpu-1", "address": "10.0.0.5", "ssh_user": "ops"}],
            }
        )
    )
    triton = _component("triton", "triton/e-0-0", tmp_path)
    host = launcher._host(triton)
    assert host == HostAccess("gpu-1", "10.0.0.5", "ops")
    assert launcher._run_dir(host, triton) == "/opt/expert-deploy/lab/triton-e-0-0"
    assert launcher._install_vars(triton, host) == {}
    nginx = _component("nginx", "nginx", tmp_path)
    assert launcher._install_vars(nginx, host) == {
        "nginx_prefix": str((tmp_path / "work").resolve() / "run" / "nginx")
    }
    assert launcher._server_key(triton) == "e-0-0"
    assert launcher._server_key(nginx) == "nginx"
    with pytest.raises(LaunchError, match=r"host 'gpu-9' is not in .*run `expert-deploy render`"):
        launcher._host(_component("triton", "triton/e-0-0", tmp_path, host="gpu-9"))


def test_missing_rendered_vars_says_to_render(tmp_path: Path) -> None:
    with pytest.raises(
        LaunchError, match=r"triton/e-0-0: cannot read .*vars.yaml; run `expert-deploy render`"
    ):
        _launcher(tmp_path)._host(_component("triton", "triton/e-0-0", tmp_path))


def test_gateway_secrets_come_from_the_environment_by_the_names_its_config_gives(
    tmp_path: Path,
) -> None:
    config = tmp_path / "gateway-0.yaml"
    config.write_text(
        yaml.safe_dump({"auth": {"api_keys_env": "MY_KEYS", "admin_token_env": "MY_ADMIN"}})
    )
    launcher = _launcher(tmp_path, {"MY_KEYS": "k1,k2", "MY_ADMIN": "adm", "HF_TOKEN": "hf"})
    gateway = _component("gateway", "gateway/0", config)
    assert launcher._secret_env(gateway) == {"MY_KEYS": "k1,k2", "MY_ADMIN": "adm"}
    assert launcher._secret_env(_component("triton", "triton/e", config)) == {}


def test_secret_pipe_serves_its_document_once_and_leaves_no_file(tmp_path: Path) -> None:
    path = tmp_path / "secrets.json"
    with _SecretPipe.serving(path, {"expert_deploy_secret_env": {"A": "s3cret"}}) as pipe:
        assert pipe.path.is_fifo()
        received: list[str] = []
        reader = threading.Thread(target=lambda: received.append(path.read_text()))
        reader.start()
        reader.join(timeout=30)
        assert json.loads(received[0]) == {"expert_deploy_secret_env": {"A": "s3cret"}}
    assert not path.exists()
    # A pipe nobody reads is abandoned cleanly when the run ends.
    with _SecretPipe.serving(tmp_path / "unread.json", {"x": 1}):
        pass
    assert not (tmp_path / "unread.json").exists()


def test_every_role_declares_its_arguments_and_deploy_sets_the_required_ones() -> None:
    deploy = (PLAYBOOKS / "deploy.yml").read_text()
    for role in ("triton", "gateway", "nginx", "service"):
        specs = yaml.safe_load(
            (PLAYBOOKS / "roles" / role / "meta" / "argument_specs.yml").read_text()
        )
        options = specs["argument_specs"]["main"]["options"]
        required = [name for name, spec in options.items() if spec.get("required")]
        assert required, role
        if role == "service":
            continue
        # nginx_prefix comes from the launcher's extra vars (the conf's prefix), not vars.yaml.
        for name in required:
            assert f"{name}:" in deploy or name == "nginx_prefix", (role, name)


def test_remote_root_is_configurable(tmp_path: Path) -> None:
    launcher = AnsibleLauncher(
        Settings(workdir=tmp_path, data_dir=REPO), remote_root=PurePosixPath("/srv/ed")
    )
    host = HostAccess("gpu-1", "10.0.0.5")
    launcher.vars_file.parent.mkdir(parents=True)
    launcher.vars_file.write_text("deployment: lab\n")
    assert (
        launcher._run_dir(host, _component("gateway", "gateway/1", tmp_path))
        == "/srv/ed/lab/gateway-1"
    )
