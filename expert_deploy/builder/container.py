"""Run one build command inside the toolchain container, through the Docker seam.

The spec of a run is a pure dataclass; :func:`run_kwargs` turns it into Docker SDK arguments
(GPU device request, shared memory, ulimits, bind mounts, labels, host networking) and
:func:`run_container` starts it, streams its log line by line and returns the exit code.
The SDK itself, the client and the translation of Docker's errors live in
``expert_deploy/docker_engine.py``, so callers see expert_deploy errors only.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from expert_deploy import docker_engine
from expert_deploy.docker_engine import open_client

__all__ = [
    "BindMount",
    "ContainerExit",
    "ContainerRun",
    "open_client",
    "run_container",
    "run_kwargs",
]

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
    kwargs: dict[str, Any] = {
        "image": run.image,
        "command": list(run.argv),
        "working_dir": run.working_dir,
        "labels": dict(run.labels),
        "network_mode": "host",
        "shm_size": SHM_SIZE,
        "ulimits": [
            docker_engine.ulimit("memlock", run.memlock_bytes, run.memlock_bytes),
            docker_engine.ulimit("stack", STACK_BYTES, STACK_BYTES),
        ],
        "mounts": [
            docker_engine.bind_mount(m.source, m.target, read_only=m.read_only) for m in run.mounts
        ],
        "detach": True,
    }
    if run.gpu_ids is not None:
        kwargs["device_requests"] = [docker_engine.device_request(run.gpu_ids)]
    return kwargs


def image_identity(client: Any, image: str) -> str | None:
    """The image's registry digest (``repo@sha256:…``) when it was pulled, else its local id.

    The tag alone can move; the lockfile records this so a later build can tell whether it
    runs the same toolchain image. None when Docker does not know the image.
    """
    found = docker_engine.find_image(client, image)
    if found is None:
        return None
    digests = found.attrs.get("RepoDigests") or []
    return str(digests[0]) if digests else str(found.id)


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
    with docker_engine.translated("the build container", image=run.image):
        container = client.containers.create(**run_kwargs(run))
    timed_out = threading.Event()

    def kill() -> None:
        timed_out.set()
        # An error here means it exited on its own meanwhile.
        with docker_engine.ignoring_errors():
            container.kill()

    timer = threading.Timer(timeout_s, kill)
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    try:
        with docker_engine.translated("the build container"):
            container.start()
            timer.start()
            with log_path.open("a", encoding="utf-8") as log:
                for line in _lines(container.logs(stream=True, follow=True)):
                    log.write(line + "\n")
                    log.flush()
                    tail.append(line)
                    on_line(line)
            status = container.wait()
    finally:
        timer.cancel()
        with docker_engine.ignoring_errors():  # already gone: nothing to clean
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
