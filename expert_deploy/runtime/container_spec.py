"""What a component's container is made of, decided before Docker is touched (pure).

``ContainerProfile`` says what runs inside a container of one kind (image, entry command,
HTTP check), ``DockerOptions`` the settings every container shares, and the functions here
derive a Triton container's command line and the read-only mounts its model repository
needs. ``runtime/docker_launcher.py`` turns them into Docker SDK arguments.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from expert_deploy.render.trtllm import BACKEND_MOUNT
from expert_deploy.runtime.components import Component, ComponentKind
from expert_deploy.runtime.readiness import client_port, reachable

#: What the gateway image runs for its health check: no curl in a slim Python image.
PYTHON_HTTP_CHECK = (
    "python3",
    "-c",
    "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=5)",
)
CURL_HTTP_CHECK = ("curl", "-fsS", "-o", "/dev/null")
_PATH_VALUE = re.compile(r'string_value:\s*"(/[^"]*)"')


@dataclass(frozen=True)
class ContainerProfile:
    """How one kind of component runs in a container.

    ``command`` is the executable (plus fixed leading arguments) the launcher appends the
    component's own arguments to; ``http_check`` is an argv that exits 0 when the URL appended
    to it answers (the container's health check).
    """

    image: str
    command: tuple[str, ...]
    http_check: tuple[str, ...] = CURL_HTTP_CHECK
    #: Plain (non-secret) variables, e.g. LD_LIBRARY_PATH for a Triton from a wheel.
    environment: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Mount:
    """A bind mount: ``source`` on the host at ``target`` in the container."""

    source: Path
    target: str
    read_only: bool = True


@dataclass(frozen=True)
class DockerOptions:
    """Container settings shared by every component (the inventory's ``runtime.docker``)."""

    #: The TensorRT-LLM backend docs run with 2 GiB /dev/shm (the Python backend needs it too).
    shm_size: str = "2g"
    #: Unlimited locked memory and a 64 MiB stack, as NVIDIA documents for TensorRT-LLM.
    memlock_bytes: int = -1
    stack_bytes: int = 67_108_864
    restart_policy: str = "unless-stopped"
    health_interval_s: float = 10.0
    health_timeout_s: float = 5.0
    health_retries: int = 3
    #: tritonserver's own grace for in-flight requests on SIGTERM (``--exit-timeout-secs``).
    triton_exit_timeout_s: int = 10
    #: A tensorrtllm_backend checkout of the toolchain's tag: the NGC images ship only the
    #: backend libraries, and TensorRT-LLM repositories link their tokenizer models into it.
    tensorrtllm_backend_dir: Path | None = None


def production_profiles(
    *, triton_image: str, gateway_image: str, nginx_image: str
) -> dict[ComponentKind, ContainerProfile]:
    """What runs in production: the toolchain's NGC image (tritonserver and curl on PATH), a
    gateway image with expert-deploy[router], the NGINX image."""
    return {
        "triton": ContainerProfile(triton_image, ("tritonserver",)),
        "gateway": ContainerProfile(gateway_image, ("python3",), PYTHON_HTTP_CHECK),
        "nginx": ContainerProfile(nginx_image, ("nginx",)),
    }


def triton_command(
    component: Component, command: Sequence[str], options: DockerOptions, deployment: str
) -> list[str]:
    """tritonserver's argv for ``component``: one process, or ``mpirun`` for a TP group.

    A TensorRT-LLM engine over several GPUs runs one rank per GPU; ranks other than 0 load
    only the ``tensorrt_llm`` model and never reach their ports (launch_triton_server.py).
    """
    repository = component.config_path.resolve()
    address = component.address
    ports = component.ports

    def server(rank: int) -> list[str]:
        argv = [
            *command,
            f"--model-repository={repository}",
            f"--http-address={address}",
            f"--http-port={ports['http']}",
            f"--grpc-address={address}",
            f"--grpc-port={ports['grpc']}",
            f"--metrics-address={address}",
            f"--metrics-port={ports['metrics']}",
            f"--exit-timeout-secs={options.triton_exit_timeout_s}",
            # Unique per server: two servers on one host must not share Python-backend shm.
            f"--backend-config=python,shm-region-prefix-name=ed_{deployment}_{component.slug}_{rank}_",
        ]
        if rank:
            argv += ["--model-control-mode=explicit", "--load-model=tensorrt_llm"]
        return argv

    ranks = len(component.gpus)
    if ranks <= 1 or not (repository / "tensorrt_llm").is_dir():
        return server(0)
    argv = ["mpirun", "--allow-run-as-root"]
    for rank in range(ranks):
        argv += ["-n", "1", *server(rank)]
        if rank < ranks - 1:
            argv.append(":")
    return argv


def health_url(component: Component) -> str:
    address = reachable(component.address)
    if component.kind == "triton":
        return f"http://{address}:{component.ports['http']}/v2/health/ready"
    return f"http://{address}:{client_port(component.kind, component.ports)}/healthz"


def referenced_paths(repository: Path) -> list[Mount]:
    """Read-only mounts for what the repository points at on the host.

    Absolute paths in ``config.pbtxt`` parameters (engine, tokenizer, checkpoint folders) and
    absolute symlink targets that exist here. A Hugging Face snapshot's files are links into
    ``../../blobs``, so a snapshot folder brings its whole model folder. Paths that do not
    exist on the host (the backend mount, paths inside the image) are left to the image.
    """
    found: list[Path] = []
    for config in sorted(repository.rglob("config.pbtxt")):
        for value in _PATH_VALUE.findall(config.read_text(encoding="utf-8", errors="replace")):
            found.append(Path(value))
    for dirpath, dirnames, filenames in os.walk(repository):
        for name in [*dirnames, *filenames]:
            path = Path(dirpath) / name
            if path.is_symlink():
                target = path.readlink()
                if target.is_absolute():
                    found.append(target)
    mounts = []
    for path in found:
        if PurePosixPath(path).is_relative_to(BACKEND_MOUNT) or not path.exists():
            continue
        shown = path.parent.parent if path.parent.name == "snapshots" else path
        # The target path is kept (links name it); the source is what it resolves to here.
        mounts.append(Mount(shown.resolve(), str(shown)))
    return mounts


def links_into(repository: Path, prefix: PurePosixPath) -> bool:
    for dirpath, _, filenames in os.walk(repository):
        for name in filenames:
            path = Path(dirpath) / name
            if path.is_symlink() and PurePosixPath(path.readlink()).is_relative_to(prefix):
                return True
    return False


def deduplicated(mounts: Sequence[Mount]) -> list[Mount]:
    """One mount per target; a target inside another read-only mount of the same source tree
    is dropped (the outer mount already shows it)."""
    result: dict[str, Mount] = {}
    for mount in mounts:
        result.setdefault(mount.target, mount)
    kept = []
    for mount in result.values():
        covered = any(
            other is not mount
            and other.read_only
            and mount.read_only
            and Path(mount.target).is_relative_to(other.target)
            and Path(mount.source).is_relative_to(other.source)
            and Path(mount.target).relative_to(other.target)
            == Path(mount.source).relative_to(other.source)
            for other in result.values()
        )
        if not covered:
            kept.append(mount)
    return sorted(kept, key=lambda m: m.target)
