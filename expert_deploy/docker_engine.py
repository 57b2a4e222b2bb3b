"""The Docker engine seam: the only module that imports the Docker SDK (``docker``).

Two users: ``builder/container.py`` (one-shot engine-build containers) and
``runtime/docker_launcher.py`` (long-running serving containers). Both get their client from
:func:`open_client`, build ``containers.create`` arguments with the small constructors here, and
see only ``LaunchError``: Docker's own exceptions are translated in :func:`translated`.

The SDK is imported inside functions, so importing this module (and the CLI) stays cheap.
"""

from __future__ import annotations

import contextlib
import gc
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from expert_deploy.errors import LaunchError

#: The API version we speak. A fixed version, because with "auto" the SDK asks the daemon in
#: its constructor and leaks the socket when that fails; 1.41 (Docker 20.10) has device
#: requests (1.40) and health-check start periods (1.29).
API_VERSION = "1.41"
_DEFAULT_HOST = "unix:///var/run/docker.sock"
_NANOSECONDS = 1_000_000_000


def sdk() -> ModuleType:
    """The ``docker`` package.

    Raises:
        LaunchError: the Docker SDK is not installed (names the extra to install).
    """
    try:
        import docker
    except ModuleNotFoundError:
        raise LaunchError(
            "the docker runtime and container builds need the Docker SDK: "
            "pip install 'expert-deploy[docker]'"
        ) from None
    module: ModuleType = docker
    return module


def open_client(base_url: str | None, *, timeout_s: float = 60.0) -> Any:
    """A client for the daemon at ``base_url`` (``DOCKER_HOST`` form), the default socket if None.

    Raises:
        LaunchError: the SDK is missing, or the daemon does not answer (says how to start it).
    """
    docker = sdk()
    where = base_url or _DEFAULT_HOST
    client = None
    reason = ""
    socket = Path(where.removeprefix("unix://")) if where.startswith("unix://") else None
    if socket is not None and not socket.exists():
        raise LaunchError(
            f"cannot reach the Docker daemon: no socket at {socket}; start it (systemctl start "
            "docker, or dockerd as root) or set DOCKER_HOST to the daemon's socket"
        )
    try:
        client = docker.DockerClient(base_url=where, version=API_VERSION, timeout=int(timeout_s))
        client.ping()
    except Exception as error:  # the SDK raises requests, urllib3 and its own errors here
        reason = _first_line(error)
    if not reason:
        return client
    if client is not None:
        client.close()
    # docker-py leaks the socket of a failed unix connect; collect it now (outside the except
    # block, whose traceback still holds it), quietly, rather than let its ResourceWarning
    # surface somewhere unrelated later.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
    raise LaunchError(
        f"cannot reach the Docker daemon at {where} ({reason}); start it (systemctl start "
        "docker, or dockerd as root) or set DOCKER_HOST to the daemon's socket"
    )


@contextlib.contextmanager
def translated(
    what: str, *, image: str | None = None, obtain: str = "", log_hint: str = ""
) -> Iterator[None]:
    """Turn Docker errors raised inside the block into one-line ``LaunchError``\\ s about ``what``.

    ``image`` names the image for the "not on this machine" message, ``obtain`` the command
    that makes it (default: pull or import); ``log_hint`` is added to daemon refusals (where
    the component's log is).
    """
    docker = sdk()
    import requests  # the SDK's transport, installed with it

    try:
        yield
    except docker.errors.ImageNotFound:
        shown = image or "the image"
        how = obtain or f"docker pull {shown} (or docker import it) first"
        raise LaunchError(f"{what}: image {shown} is not on this machine; {how}") from None
    except docker.errors.APIError as error:
        suffix = f"; {log_hint}" if log_hint else ""
        raise LaunchError(f"{what}: docker refused: {_explanation(error)}{suffix}") from None
    except docker.errors.DockerException as error:
        raise LaunchError(f"{what}: docker failed: {_first_line(error)}") from None
    except requests.exceptions.RequestException as error:  # the daemon went away mid-call
        raise LaunchError(
            f"{what}: lost the Docker daemon ({_first_line(error)}); is dockerd still running?"
        ) from None


def find_container(client: Any, ref: str) -> Any | None:
    """The container with id or name ``ref``, or None when Docker has no such container.

    Raises:
        LaunchError: any other Docker error.
    """
    docker = sdk()
    with translated(f"container {ref}"):
        try:
            return client.containers.get(ref)
        except docker.errors.NotFound:
            return None


def find_image(client: Any, ref: str) -> Any | None:
    """The local image ``ref`` (tag or id), or None when Docker does not know it or will not say."""
    docker = sdk()
    try:
        return client.images.get(ref)
    except docker.errors.DockerException:
        return None


@contextlib.contextmanager
def ignoring_errors() -> Iterator[None]:
    """For clean-up paths: a container that is already gone or refuses is not worth an error."""
    docker = sdk()
    with contextlib.suppress(docker.errors.APIError):
        yield


def device_request(gpu_ids: Sequence[int]) -> Any:
    """``--gpus '"device=<ids>"'``: exactly these GPUs (never ``count`` and ids together)."""
    return sdk().types.DeviceRequest(device_ids=[str(i) for i in gpu_ids], capabilities=[["gpu"]])


def ulimit(name: str, soft: int, hard: int) -> Any:
    """``--ulimit name=soft:hard`` (-1 means unlimited)."""
    return sdk().types.Ulimit(name=name, soft=soft, hard=hard)


def bind_mount(source: Path, target: str, *, read_only: bool) -> Any:
    """``--mount type=bind,source=…,target=…[,readonly]``."""
    return sdk().types.Mount(target=target, source=str(source), type="bind", read_only=read_only)


def healthcheck(
    test: Sequence[str],
    *,
    interval_s: float,
    timeout_s: float,
    start_period_s: float,
    retries: int,
) -> Any:
    """A health check; the API takes its durations in nanoseconds (deploy.md §5)."""
    return sdk().types.Healthcheck(
        test=["CMD", *test],
        interval=int(interval_s * _NANOSECONDS),
        timeout=int(timeout_s * _NANOSECONDS),
        start_period=int(start_period_s * _NANOSECONDS),
        retries=retries,
    )


def _explanation(error: Any) -> str:
    explanation = getattr(error, "explanation", None)
    return _first_line(explanation if explanation else error)


def _first_line(error: object) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:300] if text else type(error).__name__
