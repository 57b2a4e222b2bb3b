"""The ansible launcher: real ansible-runner running playbooks/ against localhost.

Nothing is a stand-in here: ansible-playbook (ansible-core from PyPI) with
``ansible_connection=local`` runs the triton role, which starts the nvidia-pytriton wheel's
real ``tritonserver`` for a synthetic expert rendered from ``local-synthetic``; readiness is a
real one-token inference. The unreachable host is a real SSH attempt to a loopback address
where nothing listens.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from expert_deploy.artifacts.prepare import prepare
from expert_deploy.errors import LaunchError
from expert_deploy.inventory import load_inventory
from expert_deploy.plan.planner import make_plan
from expert_deploy.runtime.ansible_launcher import AnsibleLauncher, Target
from expert_deploy.runtime.components import Component, components_for
from expert_deploy.runtime.launcher import Handle
from expert_deploy.runtime.readiness import probe_triton
from expert_deploy.settings import Settings
from tests.support.inventories import materialize

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
#: Values the tests put in the environment and then look for in every artifact.
HF_TOKEN = "hf_ansibleTestToken0123456789"
ADMIN_TOKEN = "admin-token-never-in-artifacts-42"


@dataclass
class Deployment:
    settings: Settings
    components: dict[str, Component]
    launcher: AnsibleLauncher
    progress: list[tuple[str, str]]


def _deploy(tmp_path: Path, **overrides: object) -> Deployment:
    environ = {
        **os.environ,
        "HF_TOKEN": HF_TOKEN,
        "EXPERT_DEPLOY_ADMIN_TOKEN": ADMIN_TOKEN,
    }
    settings = replace(
        Settings.from_environ(environ), workdir=tmp_path / "work", data_dir=REPO, environ=environ
    )
    loaded = load_inventory(
        materialize("local-synthetic", tmp_path, runtime="ansible", **overrides), REPO / "engines"
    )
    plan = make_plan(loaded)
    prepared = prepare(settings, loaded, plan)
    progress: list[tuple[str, str]] = []
    launcher = AnsibleLauncher(
        settings,
        progress=lambda name, message: progress.append((name, message)),
        ssh_port=1,
        connect_timeout_s=3,
        run_timeout_s=240,
    )
    components = {c.name: c for c in components_for(plan, prepared.rendered)}
    return Deployment(settings, components, launcher, progress)


def _pid_of(handle: Handle) -> int | None:
    pid_file = Path(Target.parse(handle.ref).run_dir) / f"{Target.parse(handle.ref).slug}.pid"
    try:
        return int(pid_file.read_text().split(":")[0])
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _artifact_text(root: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in sorted(root.rglob("*")) if p.is_file())


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    deployed = _deploy(tmp_path)
    yield deployed
    # Whatever a failed test left running: every pid file under the local host folders.
    for pid_file in (tmp_path / "work" / "ansible" / "hosts").rglob("*.pid"):
        pid = int(pid_file.read_text().split(":")[0])
        if _alive(pid):
            subprocess.run(["kill", "-KILL", f"-{pid}"], check=False)


def test_playbook_starts_a_real_triton_that_answers_then_teardown_leaves_nothing(
    deployment: Deployment,
) -> None:
    component = deployment.components["triton/expert-0-0"]
    launcher = deployment.launcher

    handle = launcher.launch(component)
    assert handle.launcher == "ansible"
    target = Target.parse(handle.ref)
    assert target.host.name == "localhost" and target.slug == "triton-expert-0-0"
    artifacts = deployment.settings.workdir.resolve() / "ansible" / "artifacts"
    assert (artifacts / "launch-triton-expert-0-0" / "status").read_text() == "successful"
    # Events became progress lines: the role's tasks started and came back ok.
    messages = [m for name, m in deployment.progress if name == component.name]
    assert any(m.startswith("task: ") and "Start the server detached" in m for m in messages)
    assert any(m.startswith("ok: ") for m in messages)

    launcher.wait_ready(component, handle, budget_s=120)
    assert probe_triton(component.address, component.ports["http"]).ok

    # A later CLI process knows only the state's record: a fresh launcher reads the same ref.
    later = AnsibleLauncher(deployment.settings)
    status = later.status(handle)
    assert status.liveness == "running", status
    assert "Started HTTPService" in later.logs(handle, tail=200)
    pid = _pid_of(handle)
    assert pid is not None and _alive(pid)

    later.stop(handle, grace_s=3)
    assert not _alive(pid)
    assert later.status(handle).liveness == "missing"
    assert not probe_triton(component.address, component.ports["http"], timeout_s=2).ok
    later.stop(handle, grace_s=3)  # stopping what is gone is a no-op

    # Neither the HF token nor the admin token from the environment reached any artifact.
    text = _artifact_text(artifacts)
    assert "launch-triton-expert-0-0" in {p.name for p in artifacts.iterdir()}
    assert HF_TOKEN not in text and ADMIN_TOKEN not in text
    assert "HF_TOKEN" not in text


def test_gateway_gets_its_admin_token_in_memory_and_it_never_reaches_the_artifacts(
    deployment: Deployment,
) -> None:
    launcher = deployment.launcher
    triton = [c for n, c in deployment.components.items() if n.startswith("triton/")]
    gateway = deployment.components["gateway/0"]
    handles = []
    try:
        for component in triton:
            handles.append(launcher.launch(component))
        for component, handle in zip(triton, handles, strict=True):
            launcher.wait_ready(component, handle, budget_s=120)
        handle = launcher.launch(gateway)
        handles.append(handle)
        launcher.wait_ready(gateway, handle, budget_s=120)
        # The admin API accepts exactly the token that travelled through the pipe.
        admin = f"http://127.0.0.1:{gateway.ports['admin']}/admin/experts"
        import urllib.error
        import urllib.request

        request = urllib.request.Request(admin, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
        wrong = urllib.request.Request(admin, headers={"Authorization": "Bearer wrong"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(wrong, timeout=10)
        assert refused.value.code in (401, 403)
    finally:
        for handle in reversed(handles):
            launcher.stop(handle, grace_s=3)
    artifacts = deployment.settings.workdir.resolve() / "ansible" / "artifacts"
    text = _artifact_text(artifacts)
    assert "launch-gateway-0" in {p.name for p in artifacts.iterdir()}
    assert ADMIN_TOKEN not in text and HF_TOKEN not in text
    rendered = deployment.settings.workdir.resolve() / "rendered"
    assert ADMIN_TOKEN not in _artifact_text(rendered)


def test_unreachable_host_names_component_host_and_artifacts_and_starts_nothing(
    tmp_path: Path,
) -> None:
    deployed = _deploy(
        tmp_path, hosts=[{"name": "far", "address": "127.0.0.2", "ssh_user": "nobody"}]
    )
    component = deployed.components["triton/expert-0-0"]
    with pytest.raises(LaunchError) as raised:
        deployed.launcher.launch(component)
    message = str(raised.value)
    artifacts = deployed.settings.workdir.resolve() / "ansible" / "artifacts"
    assert "triton/expert-0-0" in message
    assert "far (127.0.0.2)" in message and "unreachable" in message
    assert str(artifacts / "launch-triton-expert-0-0") in message
    assert "log on the host: /opt/expert-deploy/" in message
    assert (artifacts / "launch-triton-expert-0-0" / "status").read_text() == "failed"
    # Nothing was started anywhere: no run folder on this machine, no server on its port.
    assert not (deployed.settings.workdir / "ansible" / "hosts").exists()
    assert not probe_triton("127.0.0.1", component.ports["http"], timeout_s=2).ok
