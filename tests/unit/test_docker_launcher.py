"""The docker launcher's container specs: the exact ``containers.create`` arguments per component.

No daemon: ``create_kwargs`` is pure apart from reading the rendered files. The integration
tier (tests/integration/test_runtime_docker.py) runs the same specs on a real dockerd.
"""

from __future__ import annotations

import socket
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from expert_deploy.docker_engine import open_client
from expert_deploy.errors import LaunchError
from expert_deploy.inventory import load_inventory
from expert_deploy.render import render_deployment
from expert_deploy.runtime.components import Component, components_for
from expert_deploy.runtime.container_spec import (
    PYTHON_HTTP_CHECK,
    DockerOptions,
    Mount,
    production_profiles,
)
from expert_deploy.runtime.docker_launcher import DockerLauncher, docker_launcher_for
from expert_deploy.settings import Settings
from tests.unit.render_support import REPO, load

NGC = "nvcr.io/nvidia/tritonserver:24.07-trtllm-python-py3"
PROFILES = production_profiles(
    triton_image=NGC, gateway_image="example/gateway:1", nginx_image="nginx:1.27"
)
SECONDS = 1_000_000_000


def _components(
    name: str, workdir: Path, **render_kwargs: object
) -> tuple[Settings, dict[str, Component]]:
    loaded, plan = load(name)
    settings = Settings(workdir=workdir, data_dir=REPO)
    rendered = render_deployment(
        loaded,
        plan,
        settings,
        router_dir=workdir / "router",
        **render_kwargs,  # type: ignore[arg-type]
    )
    return settings, {c.name: c for c in components_for(plan, rendered)}


def _mounts(kwargs: dict[str, object]) -> dict[str, tuple[str, bool]]:
    return {m["Target"]: (m["Source"], m["ReadOnly"]) for m in kwargs["mounts"]}  # type: ignore[attr-defined]


def test_tensorrt_llm_expert_gets_its_gpu_shm_ulimits_health_restart_and_readonly_mounts(
    tmp_path: Path,
) -> None:
    work = tmp_path / "work"
    engine = tmp_path / "engines" / "e3"
    engine.mkdir(parents=True)
    # A Hugging Face snapshot: files are links into ../../blobs, so the model folder is mounted.
    model = tmp_path / "hub" / "models--meta-llama--Meta-Llama-3-70B-Instruct"
    snapshot = model / "snapshots" / ("c" * 40)
    snapshot.mkdir(parents=True)
    backend = tmp_path / "tensorrtllm_backend"
    backend.mkdir()
    settings, components = _components(
        "dgx",
        work,
        engine_dirs={"expert-3": engine},
        tokenizer_dirs={"expert-3": snapshot},
    )
    component = components["triton/expert-3-0"]
    launcher = DockerLauncher(
        settings,
        deployment="dgx",
        profiles=PROFILES,
        options=DockerOptions(tensorrtllm_backend_dir=backend),
    )
    kwargs = launcher.create_kwargs(component)
    repository = str((work / "rendered" / "triton" / "expert-3-0").resolve())
    http, grpc, metrics = (component.ports[k] for k in ("http", "grpc", "metrics"))
    assert kwargs["image"] == NGC
    assert kwargs["name"] == "ed-dgx-triton-expert-3-0"
    assert kwargs["command"] == [
        "tritonserver",
        f"--model-repository={repository}",
        "--http-address=127.0.0.1",
        f"--http-port={http}",
        "--grpc-address=127.0.0.1",
        f"--grpc-port={grpc}",
        "--metrics-address=127.0.0.1",
        f"--metrics-port={metrics}",
        "--exit-timeout-secs=10",
        "--backend-config=python,shm-region-prefix-name=ed_dgx_triton-expert-3-0_0_",
    ]
    assert kwargs["network_mode"] == "host"
    assert kwargs["shm_size"] == "2g"
    assert kwargs["restart_policy"] == {"Name": "unless-stopped"}
    (request,) = kwargs["device_requests"]
    assert request["DeviceIDs"] == [str(g) for g in component.gpus] == ["3"]
    assert request["Capabilities"] == [["gpu"]]
    assert not request.get("Count")
    limits = {u["Name"]: (u["Soft"], u["Hard"]) for u in kwargs["ulimits"]}
    assert limits == {"memlock": (-1, -1), "stack": (67_108_864, 67_108_864)}
    health = kwargs["healthcheck"]
    assert health["Test"] == [
        "CMD",
        "curl",
        "-fsS",
        "-o",
        "/dev/null",
        f"http://127.0.0.1:{http}/v2/health/ready",
    ]
    assert (health["Interval"], health["Timeout"], health["Retries"]) == (
        10 * SECONDS,
        5 * SECONDS,
        3,
    )
    assert health["StartPeriod"] == int(component.startup_budget_s * SECONDS)
    assert kwargs["labels"] == {
        "expert-deploy.deployment": "dgx",
        "expert-deploy.component": "triton/expert-3-0",
        "expert-deploy.kind": "triton",
        "expert-deploy.role": "serve",
        "expert-deploy.expert": "expert-3",
        "expert-deploy.config-hash": component.config_hash,
        "expert-deploy.workdir": str(work.resolve()),
    }
    assert _mounts(kwargs) == {
        repository: (repository, True),
        str(engine): (str(engine), True),
        str(model): (str(model), True),
        "/opt/tensorrtllm_backend": (str(backend), True),
    }
    assert kwargs["environment"] == {}


def test_gateway_container_gets_exactly_the_gateway_cpus_as_its_cpuset(tmp_path: Path) -> None:
    # dgx.yaml puts the replicas on cores 96-111; the replica pins itself there too, so the
    # container's cpuset must hold those cores (and only those: Triton keeps the others).
    settings, components = _components("dgx", tmp_path / "work")
    backend = tmp_path / "tensorrtllm_backend"
    backend.mkdir()
    launcher = DockerLauncher(
        settings,
        deployment="dgx",
        profiles=PROFILES,
        options=DockerOptions(tensorrtllm_backend_dir=backend),
    )
    gateway = launcher.create_kwargs(components["gateway/0"])
    assert gateway["cpuset_cpus"] == ",".join(str(cpu) for cpu in range(96, 112))
    config = yaml.safe_load(components["gateway/0"].config_path.read_text())
    assert config["cpus"] == list(range(96, 112))
    triton = launcher.create_kwargs(components["triton/expert-0-0"])
    assert "cpuset_cpus" not in triton


def test_tensorrt_llm_repository_without_the_backend_checkout_is_a_clear_error(
    tmp_path: Path,
) -> None:
    settings, components = _components("dgx", tmp_path / "work")
    launcher = DockerLauncher(settings, deployment="dgx", profiles=PROFILES)
    with pytest.raises(LaunchError, match=r"triton/expert-0-0: .*tensorrtllm_backend_dir"):
        launcher.create_kwargs(components["triton/expert-0-0"])


def test_tensor_parallel_expert_runs_one_mpi_rank_per_gpu(tmp_path: Path) -> None:
    settings, components = _components("dgx-baseline-tp8", tmp_path / "work")
    (component,) = (c for c in components.values() if c.kind == "triton")
    launcher = DockerLauncher(
        settings,
        deployment="tp8",
        profiles=PROFILES,
        options=DockerOptions(tensorrtllm_backend_dir=tmp_path),
    )
    kwargs = launcher.create_kwargs(component)
    assert kwargs["device_requests"][0]["DeviceIDs"] == [str(i) for i in range(8)]
    command = kwargs["command"]
    assert command[:2] == ["mpirun", "--allow-run-as-root"]
    segments = " ".join(command[2:]).split(" : ")
    assert len(segments) == 8
    assert all(s.startswith("-n 1 tritonserver --model-repository=") for s in segments)
    assert "--load-model" not in segments[0]
    assert all("--model-control-mode=explicit --load-model=tensorrt_llm" in s for s in segments[1:])
    prefixes = {s.split("shm-region-prefix-name=")[1].split()[0] for s in segments}
    assert len(prefixes) == 8  # no two ranks share Python-backend shared memory


def test_cpu_expert_gateway_and_nginx_specs(tmp_path: Path) -> None:
    work = tmp_path / "work"
    settings, components = _components("local-synthetic", work)
    settings = replace(
        settings,
        environ={"EXPERT_DEPLOY_API_KEYS": "k1,k2", "HF_TOKEN": "hf_x", "HOME": "/root"},
    )
    launcher = DockerLauncher(
        settings,
        deployment="local-synthetic",
        profiles=PROFILES,
        options=DockerOptions(memlock_bytes=8_388_608, restart_policy="no"),
    )
    triton = launcher.create_kwargs(components["triton/expert-1-0"])
    assert "device_requests" not in triton
    assert {u["Name"]: u["Soft"] for u in triton["ulimits"]}["memlock"] == 8_388_608
    assert triton["restart_policy"] == {"Name": "no"}
    assert triton["environment"] == {}  # no token or key reaches Triton

    gateway_component = components["gateway/1"]
    gateway = launcher.create_kwargs(gateway_component)
    config_path = str(gateway_component.config_path.resolve())
    assert gateway["image"] == "example/gateway:1"
    assert gateway["name"] == "ed-local-synthetic-gateway-1"
    assert gateway["command"] == ["python3", "-m", "router_service", "--config", config_path]
    assert gateway["environment"] == {"EXPERT_DEPLOY_API_KEYS": "k1,k2"}
    router_dir = yaml.safe_load(Path(config_path).read_text())["router_dir"]
    assert _mounts(gateway) == {
        config_path: (config_path, True),
        router_dir: (router_dir, True),
    }
    port = gateway_component.ports["http"]
    assert gateway["healthcheck"]["Test"] == [
        "CMD",
        *PYTHON_HTTP_CHECK,
        f"http://127.0.0.1:{port}/healthz",
    ]
    assert "shm_size" not in gateway and "ulimits" not in gateway
    assert "expert-deploy.expert" not in gateway["labels"]
    assert "cpuset_cpus" not in gateway  # no gateway.cpus: docker's default cpuset

    nginx_component = components["nginx"]
    nginx = launcher.create_kwargs(nginx_component)
    conf = str(nginx_component.config_path.resolve())
    runtime_dir = (work / "run" / "nginx").resolve()
    assert nginx["command"] == [
        "nginx",
        "-c",
        conf,
        "-p",
        f"{runtime_dir}/",
        "-e",
        "stderr",
        "-g",
        "daemon off;",
    ]
    assert _mounts(nginx) == {
        conf: (conf, True),
        str(runtime_dir): (str(runtime_dir), False),
    }
    assert (runtime_dir / "logs").is_dir() and (runtime_dir / "temp").is_dir()
    assert nginx["environment"] == {}


def test_extra_mounts_reach_every_container_once(tmp_path: Path) -> None:
    settings, components = _components("local-synthetic", tmp_path / "work")
    venv = Mount(tmp_path / "venv", str(tmp_path / "venv"))
    launcher = DockerLauncher(
        settings,
        deployment="t",
        profiles=PROFILES,
        extra_mounts=(venv, venv, Mount(Path("/usr"), "/usr")),
    )
    for component in components.values():
        mounts = _mounts(launcher.create_kwargs(component))
        assert mounts[str(tmp_path / "venv")] == (str(tmp_path / "venv"), True)
        assert mounts["/usr"] == ("/usr", True)


def test_inventory_docker_block_reaches_the_launcher(tmp_path: Path) -> None:
    data = yaml.safe_load((REPO / "inventories" / "dgx.yaml").read_text())
    data["runtime"] = {
        "kind": "docker",
        "docker": {
            "gateway_image": "registry.local/gateway:2",
            "memlock_bytes": 8_388_608,
            "restart_policy": "on-failure",
            "shm_size": "4g",
            "tensorrtllm_backend_dir": "backend",
        },
    }
    source = data["router"]["source"]
    for key in ("tfidf", "kmeans"):
        source[key] = str(REPO / "inventories" / source[key])
    path = tmp_path / "dgx.yaml"
    path.write_text(yaml.safe_dump(data))
    loaded = load_inventory(path, REPO / "engines")
    launcher = docker_launcher_for(Settings(workdir=tmp_path / "work"), loaded)
    assert launcher.deployment == "dgx"
    assert launcher.profiles["triton"].image == loaded.toolchain.triton_image == NGC
    assert launcher.profiles["gateway"].image == "registry.local/gateway:2"
    assert launcher.options.memlock_bytes == 8_388_608
    assert launcher.options.shm_size == "4g"
    assert launcher.options.restart_policy == "on-failure"
    assert launcher.options.tensorrtllm_backend_dir == tmp_path / "backend"


def test_unreachable_daemon_says_how_to_start_it(tmp_path: Path) -> None:
    with pytest.raises(
        LaunchError, match=r"cannot reach the Docker daemon: no socket at .*no.sock; start it"
    ):
        open_client(f"unix://{tmp_path / 'no.sock'}", timeout_s=2)
    # A socket file nobody listens on (a dockerd that died): refused, same advice.
    dead = tmp_path / "dead.sock"
    with socket.socket(socket.AF_UNIX) as bound:
        bound.bind(str(dead))
        with pytest.raises(
            LaunchError,
            match=r"cannot reach the Docker daemon at unix://.*dead.sock \(.*DOCKER_HOST",
        ):
            open_client(f"unix://{dead}", timeout_s=2)


def test_launcher_from_settings_reads_the_rendered_deployment(tmp_path: Path) -> None:
    """What ``launcher_for("docker", settings)`` gets: name and image from the render."""
    from expert_deploy.runtime.docker_launcher import docker_launcher

    bare = docker_launcher(Settings(workdir=tmp_path / "empty"))
    _, components = _components("local-synthetic", tmp_path / "empty-plan")
    with pytest.raises(LaunchError, match="no container image known for gateway; run expert-dep"):
        bare.create_kwargs(components["gateway/0"])

    from expert_deploy.runtime.launchers import launcher_for

    settings, components = _components("dgx", tmp_path / "work")
    launcher = launcher_for("docker", settings)
    assert isinstance(launcher, DockerLauncher)
    assert launcher.deployment == "dgx"
    assert launcher.profiles["triton"].image == NGC
    kwargs = launcher.create_kwargs(components["gateway/3"])
    assert kwargs["image"] == "expert-deploy/gateway:latest"
    assert kwargs["name"] == "ed-dgx-gateway-3"
