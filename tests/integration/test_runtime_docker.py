"""The docker launcher against a real private dockerd, with real tritonservers inside containers.

Stand-in (named as such): the NGC Triton image, the gateway image and the NGINX image cannot
exist here, so every container runs ``expert-deploy/stand-in:test`` (busybox, ``docker
import``-ed; tests/dockerd.py) with read-only bind mounts of this machine's /usr, /lib, the
Python installation and the virtualenv that holds the nvidia-pytriton wheel
(tests/support/docker_stand_in.py). What runs inside is real: the wheel's ``tritonserver``,
``python -m router_service``, Debian's ``nginx``, all on host networking; readiness is a real
one-token inference. The memlock limit is the host's: runc here refuses unlimited (see
test_unlimited_memlock_refused_here_...).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from expert_deploy.artifacts.prepare import prepare
from expert_deploy.errors import LaunchError
from expert_deploy.inventory import load_inventory
from expert_deploy.plan.planner import make_plan
from expert_deploy.runtime.components import Component, ComponentKind, components_for
from expert_deploy.runtime.container_spec import ContainerProfile, DockerOptions
from expert_deploy.runtime.docker_launcher import DockerLauncher
from expert_deploy.runtime.readiness import probe_completion
from expert_deploy.settings import Settings
from tests.dockerd import STAND_IN_TAG, Dockerd
from tests.support.docker_stand_in import MEMLOCK, WGET, stand_in_setup
from tests.support.inventories import materialize
from tests.support.processes import thread_cpu_lists

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


API_KEY = "sk-docker-test-7f3a"


@dataclass
class Deployment:
    settings: Settings
    components: dict[str, Component]
    launcher: DockerLauncher


def _deploy(
    tmp_path: Path,
    dockerd: Dockerd,
    *,
    profiles: dict[ComponentKind, ContainerProfile] | None = None,
    gateway_cpus: list[int] | None = None,
) -> Deployment:
    settings = Settings(
        workdir=tmp_path / "work",
        data_dir=REPO,
        docker_host=dockerd.base_url,
        # The gateways require this key (local-synthetic's auth names the variable).
        environ={"EXPERT_DEPLOY_API_KEYS": API_KEY},
    )
    inventory = materialize("local-synthetic", tmp_path)
    if gateway_cpus is not None:
        data = yaml.safe_load(inventory.read_text())
        data["gateway"]["cpus"] = gateway_cpus
        inventory.write_text(yaml.safe_dump(data, sort_keys=False))
    loaded = load_inventory(inventory, REPO / "engines")
    plan = make_plan(loaded)
    prepared = prepare(settings, loaded, plan)
    stand_in, options, mounts = stand_in_setup(tmp_path)
    launcher = DockerLauncher(
        settings,
        deployment=f"t{tmp_path.name[-12:]}".replace("_", "-").lower(),
        profiles=profiles or stand_in,
        options=options,
        extra_mounts=mounts,
    )
    components = {c.name: c for c in components_for(plan, prepared.rendered)}
    return Deployment(settings, components, launcher)


# The gateways of the whole-deployment test run on the last CPU of this machine, as an
# inventory's gateway.cpus puts them on cores of their own.
GATEWAY_CPU = max(os.sched_getaffinity(0))


@pytest.fixture
def deployment(tmp_path: Path, dockerd: Dockerd) -> Iterator[Deployment]:
    deployed = _deploy(tmp_path, dockerd, gateway_cpus=[GATEWAY_CPU])
    yield deployed
    client = dockerd.client()
    try:  # whatever a failed test left behind
        for found in deployed.launcher.list_deployment():
            client.containers.get(found.id).remove(force=True)
    finally:
        client.close()
        deployed.launcher.close()


def test_triton_container_serves_a_real_inference_then_stops_without_a_trace(
    deployment: Deployment, dockerd: Dockerd
) -> None:
    launcher = deployment.launcher
    component = deployment.components["triton/expert-0-0"]
    handle = launcher.launch(component)
    assert handle.launcher == "docker"
    launcher.wait_ready(component, handle, budget_s=180)

    client = dockerd.client()
    try:
        attrs = client.containers.get(handle.ref).attrs
    finally:
        client.close()
    assert attrs["Name"] == f"/ed-{launcher.deployment}-triton-expert-0-0"
    labels = attrs["Config"]["Labels"]
    assert labels["expert-deploy.deployment"] == launcher.deployment
    assert labels["expert-deploy.component"] == "triton/expert-0-0"
    assert labels["expert-deploy.expert"] == "expert-0"
    assert labels["expert-deploy.config-hash"] == component.config_hash
    host = attrs["HostConfig"]
    assert host["NetworkMode"] == "host"
    assert host["ShmSize"] == 2 * 1024**3
    assert host["RestartPolicy"]["Name"] == "unless-stopped"
    assert {u["Name"]: u["Hard"] for u in host["Ulimits"]} == {
        "memlock": MEMLOCK,
        "stack": 67_108_864,
    }
    mounts = {m["Destination"]: m["RW"] for m in attrs["Mounts"]}
    repository = str(component.config_path.resolve())
    assert mounts[repository] is False  # the model repository is read-only
    assert all(rw is False for rw in mounts.values())
    assert attrs["Config"]["Healthcheck"]["Test"][-1].endswith("/v2/health/ready")

    # Docker's own health check (busybox wget in the stand-in) turns healthy on its own.
    polls = 240  # a generous bound, not a timing assertion: it turns healthy or the test ends
    status = launcher.status(handle)
    while "healthy" not in status.detail.split() and polls:
        polls -= 1
        time.sleep(0.5)
        status = launcher.status(handle)
    assert status.liveness == "running"
    assert "health healthy" in status.detail
    assert [c.component for c in launcher.list_deployment()] == ["triton/expert-0-0"]
    assert "Started HTTPService" in launcher.logs(handle, tail=200)

    launcher.stop(handle, grace_s=5)
    assert launcher.status(handle).liveness == "missing"
    assert launcher.list_deployment() == []
    assert handle.log_path is not None
    assert "Started HTTPService" in handle.log_path.read_text()  # the log outlives the container
    assert "Started HTTPService" in launcher.logs(handle, tail=200)
    launcher.stop(handle, grace_s=5)  # already gone: a no-op


def test_triton_that_exits_while_starting_names_itself_and_its_log(
    deployment: Deployment, tmp_path: Path
) -> None:
    component = deployment.components["triton/expert-1-0"]
    broken = tmp_path / "broken-repository"
    shutil.copytree(component.config_path, broken)
    (broken / "ensemble" / "1" / "model.py").write_text(
        "raise RuntimeError('model broken on purpose by the test')\n"
    )
    component = Component(**{**component.__dict__, "config_path": broken})
    launcher = deployment.launcher
    handle = launcher.launch(component)
    with pytest.raises(LaunchError) as caught:
        launcher.wait_ready(component, handle, budget_s=180)
    message = str(caught.value)
    assert message.startswith("triton/expert-1-0 (container ed-")
    assert "exited with code 1" in message and "while starting" in message
    log_path = deployment.settings.workdir.resolve() / "logs" / "triton-expert-1-0.log"
    assert f"its log: {log_path}" in message
    assert "model broken on purpose" in log_path.read_text()
    # Removed, so the restart policy cannot bring it back behind the state's back.
    assert deployment.launcher.list_deployment() == []


def test_missing_image_says_how_to_get_it(deployment: Deployment) -> None:
    launcher = deployment.launcher
    launcher.profiles["nginx"] = ContainerProfile("nope/nginx:1", ("nginx",))
    with pytest.raises(
        LaunchError,
        match=r"nginx \(container ed-.*\): image nope/nginx:1 is not on this machine; "
        r"docker pull nope/nginx:1 \(or docker import it\) first",
    ):
        launcher.launch(deployment.components["nginx"])
    # No registry has the gateway image: the message says how to build it.
    launcher.profiles["gateway"] = ContainerProfile("nope/gateway:1", ("python3",))
    with pytest.raises(LaunchError) as missing:
        launcher.launch(deployment.components["gateway/0"])
    assert str(missing.value).endswith(
        "image nope/gateway:1 is not on this machine; build it first, in an expert-deploy "
        "checkout: docker build -f images/gateway.Dockerfile -t nope/gateway:1 ."
    )
    assert (REPO / "images" / "gateway.Dockerfile").is_file()
    assert launcher.list_deployment() == []


def test_unlimited_memlock_refused_here_is_a_clear_error_and_leaves_nothing(
    deployment: Deployment,
) -> None:
    """What this sandbox's runc does with production's memlock=-1 (the reason for MEMLOCK)."""
    launcher = deployment.launcher
    launcher.options = DockerOptions(memlock_bytes=-1)
    component = deployment.components["triton/expert-2-0"]
    try:
        handle = launcher.launch(component)
    except LaunchError as error:
        assert str(error).startswith("triton/expert-2-0 (container ed-")
        assert "docker refused" in str(error) and "its log:" in str(error)
        assert launcher.list_deployment() == []
    else:  # a daemon with CAP_SYS_RESOURCE accepts it: then it must really run
        launcher.wait_ready(component, handle, budget_s=180)
        launcher.stop(handle, grace_s=5)


def test_a_stale_container_of_ours_is_replaced_and_a_foreign_one_refused(
    tmp_path: Path, dockerd: Dockerd
) -> None:
    sleeper = ContainerProfile(STAND_IN_TAG, ("/bin/sh", "-c", "sleep 600", "sh"), WGET)
    deployed = _deploy(tmp_path, dockerd, profiles={"nginx": sleeper})
    launcher = deployed.launcher
    component = deployed.components["nginx"]
    first = launcher.launch(component)
    second = launcher.launch(component)  # as after an `up` killed before the state was saved
    try:
        assert first.ref != second.ref
        assert [c.id for c in launcher.list_deployment()] == [second.ref]
        assert launcher.status(first).liveness == "missing"
    finally:
        launcher.stop(second, grace_s=1)
    client = dockerd.client()
    try:
        client.containers.create(STAND_IN_TAG, ["true"], name=f"ed-{launcher.deployment}-nginx")
        with pytest.raises(LaunchError, match=r"nginx: a container named ed-.* is not one of ours"):
            launcher.launch(component)
    finally:
        client.containers.get(f"ed-{launcher.deployment}-nginx").remove(force=True)
        client.close()
        launcher.close()


def test_unrecorded_containers_of_this_work_dir_are_swept_and_no_others(
    tmp_path: Path, dockerd: Dockerd
) -> None:
    """What `down` does after an `up` killed between creating a container and recording it."""
    sleeper = ContainerProfile(STAND_IN_TAG, ("/bin/sh", "-c", "echo up; sleep 600", "sh"), WGET)
    ours = _deploy(tmp_path / "a", dockerd, profiles={"nginx": sleeper})
    # The same deployment name from another work dir (a second checkout of the lab).
    other = _deploy(tmp_path / "b", dockerd, profiles={"gateway": sleeper})
    other.launcher.deployment = ours.launcher.deployment
    try:
        ours.launcher.launch(ours.components["nginx"])
        other.launcher.launch(other.components["gateway/0"])
        # No state was saved; the render names the runtime and the deployment.
        workdir = ours.settings.workdir
        rendered = workdir / "rendered" / "ansible" / "vars.yaml"
        values = yaml.safe_load(rendered.read_text())
        values.update(runtime="docker", deployment=ours.launcher.deployment)
        rendered.write_text(yaml.safe_dump(values))
        assert ours.launcher.unrecorded(set()) == 1
        assert other.launcher.unrecorded(set()) == 1

        down = subprocess.run(
            [sys.executable, "-m", "expert_deploy", "down", "-w", str(workdir)],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "DOCKER_HOST": dockerd.base_url},
            check=False,
        )

        assert down.returncode == 0, down.stderr
        assert "stopped 1 unrecorded server(s) of an interrupted `up`" in down.stdout
        assert [c.component for c in ours.launcher.list_deployment()] == ["gateway/0"]
        log = ours.settings.workdir.resolve() / "logs" / "nginx.log"
        assert "up" in log.read_text()
        assert ours.launcher.stop_unrecorded(grace_s=1) == 0
        assert other.launcher.stop_unrecorded(grace_s=1) == 1
        assert ours.launcher.list_deployment() == []
    finally:
        client = dockerd.client()
        for found in ours.launcher.list_deployment():
            client.containers.get(found.id).remove(force=True)
        client.close()
        ours.launcher.close()
        other.launcher.close()


def test_whole_deployment_in_containers_answers_through_nginx(
    deployment: Deployment, dockerd: Dockerd
) -> None:
    launcher = deployment.launcher
    started = []
    try:
        for component in deployment.components.values():  # start order: triton, gateway, nginx
            handle = launcher.launch(component)
            started.append(handle)
            launcher.wait_ready(component, handle, budget_s=240)
        nginx = deployment.components["nginx"]
        port = nginx.ports["listen"]
        result = probe_completion(nginx.address, port, api_key=API_KEY, timeout_s=30)
        assert result.ok, result.detail
        assert result.expert in {"expert-0", "expert-1", "expert-2"}
        refused = probe_completion(nginx.address, port, timeout_s=30)
        assert not refused.ok and "answered 401" in refused.detail
        assert sorted(c.component for c in launcher.list_deployment()) == sorted(
            deployment.components
        )
        # gateway.cpus became each gateway container's cpuset, and the replica (every thread)
        # runs on it; Triton and NGINX keep docker's default cpuset.
        client = dockerd.client()
        for found in launcher.list_deployment():
            attrs = client.containers.get(found.id).attrs
            is_gateway = found.component.startswith("gateway/")
            expected = str(GATEWAY_CPU) if is_gateway else ""
            assert attrs["HostConfig"]["CpusetCpus"] == expected, found.component
            if is_gateway:
                allowed = thread_cpu_lists(attrs["State"]["Pid"])
                assert allowed == {str(GATEWAY_CPU)}, found.component
        client.close()
    finally:
        for handle in reversed(started):
            launcher.stop(handle, grace_s=5)
    assert launcher.list_deployment() == []
    # The key reached the gateway containers only through their environment.
    work = deployment.settings.workdir
    files = [f for f in work.rglob("*") if f.is_file() and not f.is_symlink()]
    assert any(f.parent.name == "logs" for f in files)
    assert not [f for f in files if API_KEY.encode() in f.read_bytes()]
