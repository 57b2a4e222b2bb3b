"""Run one build command inside the toolchain container: the only importer of ``docker``.

The spec of a run is a pure dataclass; :func:`run_kwargs` turns it into Docker SDK arguments
(GPU device request, shared memory, ulimits, bind mounts, labels, host networking) and
:func:`run_container` starts it, streams its log line by line and returns the exit code.
Docker's own errors are translated here, so callers see expert_deploy errors only.
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from expert_deploy.errors import LaunchError

#: The backend docs run TensorRT-LLM containers with 2 GiB of /dev/shm, unlimited locked
#: memory and a 64 MiB stack; builds get the same.
SHM_SIZE = "2g"
STACK_BYTES = 67_108_864
TAIL_LINES = 20


@dataclass(frozen=True)
class BindMount:
    source: Path
    target: str
    read_only: bool


@dataclass(frozen=True)
class ContainerRun:
    """Everything about one build container, decided before Docker is touched."""

    image: str
    argv: tuple[str, ...]
    mounts: tuple[BindMount, ...]
    working_dir: str
    labels: dict[str, str] = field(default_factory=dict)
    #: GPU indices for the device request; None only for the stand-in on a GPU-less machine.
    gpu_ids: tuple[int, ...] | None = ()
    #: -1 = unlimited (what TensorRT-LLM wants). Only a daemon without CAP_SYS_RESOURCE, as in
    #: some CI sandboxes, needs a finite value here (runc: "error setting rlimit type 8").
    memlock_bytes: int = -1


@dataclass(frozen=True)
class ContainerExit:
    returncode: int
    tail: str


def run_kwargs(run: ContainerRun) -> dict[str, Any]:
    """Docker SDK ``containers.create`` arguments for ``run``."""
    from docker.types import DeviceRequest, Mount, Ulimit

    kwargs: dict[str, Any] = {
        "image": run.image,
        "command": list(run.argv),
        "working_dir": run.working_dir,
        "labels": dict(run.labels),
        "network_mode": "host",
        "shm_size": SHM_SIZE,
        "ulimits": [
            Ulimit(name="memlock", soft=run.memlock_bytes, hard=run.memlock_bytes),
            Ulimit(name="stack", soft=STACK_BYTES, hard=STACK_BYTES),
        ],
        "mounts": [
            Mount(target=m.target, source=str(m.source), type="bind", read_only=m.read_only)
            for m in run.mounts
        ],
        "detach": True,
    }
    if run.gpu_ids is not None:
        kwargs["device_requests"] = [
            DeviceRequest(device_ids=[str(i) for i in run.gpu_ids], capabilities=[["gpu"]])
        ]
    return kwargs


def open_client(base_url: str | None) -> Any:
    """A Docker client for ``base_url``, or from the environment (DOCKER_HOST) when None.

    Raises:
        LaunchError: the docker SDK is missing or the daemon does not answer.
    """
    try:
        import docker
    except ModuleNotFoundError:
        raise LaunchError(
            "container builds need the docker SDK: pip install 'expert-deploy[docker]'"
        ) from None
    try:
        client = docker.DockerClient(base_url=base_url) if base_url else docker.from_env()
        client.ping()
    except docker.errors.DockerException as error:
        raise LaunchError(
            f"cannot reach the Docker daemon ({error}); is dockerd running?"
        ) from None
    return client


def run_container(
    client: Any,
    run: ContainerRun,
    *,
    log_path: Path,
    on_line: Callable[[str], None],
    timeout_s: float,
) -> ContainerExit:
    """Run ``run`` to completion, appending its output to ``log_path`` as it arrives.

    The container is removed afterwards; past ``timeout_s`` it is killed (exit code 124).

    Raises:
        LaunchError: the image is missing or Docker refused to create or start the container.
    """
    import docker

    try:
        container = client.containers.create(**run_kwargs(run))
    except docker.errors.ImageNotFound:
        raise LaunchError(
            f"image {run.image} is not on this machine; docker pull {run.image}"
        ) from None
    except docker.errors.APIError as error:
        raise LaunchError(f"docker could not create the build container: {error}") from None
    timed_out = threading.Event()

    def kill() -> None:
        timed_out.set()
        # An APIError here means it exited on its own meanwhile.
        with contextlib.suppress(docker.errors.APIError):
            container.kill()

    timer = threading.Timer(timeout_s, kill)
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    try:
        container.start()
        timer.start()
        with log_path.open("a", encoding="utf-8") as log:
            for line in _lines(container.logs(stream=True, follow=True)):
                log.write(line + "\n")
                log.flush()
                tail.append(line)
                on_line(line)
        status = container.wait()
    except docker.errors.APIError as error:
        raise LaunchError(f"docker failed while running the build container: {error}") from None
    finally:
        timer.cancel()
        with contextlib.suppress(docker.errors.APIError):  # already gone: nothing to clean
            container.remove(force=True)
    code = 124 if timed_out.is_set() else int(status.get("StatusCode", 1))
    if timed_out.is_set():
        tail.append(f"killed after {timeout_s:g} s")
    return ContainerExit(code, "\n".join(tail))


def _lines(chunks: Any) -> Any:
    """Whole lines from Docker's log stream, whose chunks split lines anywhere."""
    pending = ""
    for chunk in chunks:
        pending += chunk.decode("utf-8", errors="replace")
        *complete, pending = pending.split("\n")
        yield from (line.rstrip("\r") for line in complete)
    if pending:
        yield pending.rstrip("\r")
