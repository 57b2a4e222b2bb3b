"""Pre-flight checks of this machine: one result per check, pass / warn / fail.

Without an inventory every missing piece is a warning; with one, what that deployment needs
(GPUs for tensorrt_llm experts, dockerd for the docker runtime, tritonserver for the process
runtime ...) becomes a failure.
"""

from __future__ import annotations

import gc
import importlib.util
import shutil
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from expert_deploy import binaries, proc
from expert_deploy.errors import CommandError
from expert_deploy.inventory.models import Inventory
from expert_deploy.settings import Settings

Status = Literal["pass", "warn", "fail"]

#: Modules whose presence shows an extra is installed (found, not imported: doctor stays fast).
EXTRAS: dict[str, tuple[str, ...]] = {
    "router": (
        "starlette",
        "uvicorn",
        "httptools",
        "grpc",
        "tritonclient",
        "numpy",
        "prometheus_client",
    ),
    "fit": ("sklearn",),
    "build": ("huggingface_hub", "docker"),
    "docker": ("docker",),
    "ansible": ("ansible_runner",),
    "bench": ("matplotlib", "httpx"),
    "local": ("pytriton",),
}


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: Status
    detail: str


@dataclass(frozen=True)
class Needs:
    """What the deployment being checked requires of this machine."""

    gpus: bool = False
    docker: bool = False
    tritonserver: bool = False
    nginx: bool = False
    extras: tuple[str, ...] = ()
    disk_gib: float = 5.0

    @classmethod
    def of(cls, inventory: Inventory | None) -> Needs:
        if inventory is None:
            return cls()
        builds = any(e.engine == "tensorrt_llm" for e in inventory.experts)
        kind = inventory.runtime.kind
        extras = {"router"} | ({"docker"} if kind == "docker" else set())
        extras |= {"ansible"} if kind == "ansible" else set()
        extras |= {"build"} if builds else set()
        return cls(
            gpus=any(e.resolved_device == "gpu" for e in inventory.experts),
            docker=kind == "docker" or builds,
            tritonserver=kind == "process",
            nginx=inventory.nginx.enabled and kind == "process",
            extras=tuple(sorted(extras)),
            disk_gib=200.0 if builds else 5.0,
        )


def run_checks(settings: Settings, needs: Needs) -> list[CheckResult]:
    checks: list[Callable[[Settings, Needs], CheckResult]] = [
        _python,
        _extras,
        _docker,
        _nvidia_runtime,
        _gpus,
        _disk,
        _hf_token,
        _nginx,
        _tritonserver,
    ]
    return [check(settings, needs) for check in checks]


def exit_code(results: list[CheckResult]) -> int:
    return 1 if any(r.status == "fail" for r in results) else 0


def _required(required: bool) -> Status:
    return "fail" if required else "warn"


def _python(_: Settings, __: Needs) -> CheckResult:
    version = ".".join(map(str, sys.version_info[:3]))
    ok = sys.version_info >= (3, 10)
    return CheckResult("python", "pass" if ok else "fail", f"{version} ({sys.executable})")


def _extras(_: Settings, needs: Needs) -> CheckResult:
    missing = [
        name
        for name, modules in EXTRAS.items()
        if any(importlib.util.find_spec(m) is None for m in modules)
    ]
    installed = sorted(set(EXTRAS) - set(missing))
    required_missing = [m for m in missing if m in needs.extras]
    detail = f"installed: {', '.join(installed) or 'none'}"
    if missing:
        detail += (
            f"; missing: {', '.join(missing)} (pip install 'expert-deploy[{','.join(missing)}]')"
        )
    status: Status = "fail" if required_missing else ("warn" if missing else "pass")
    return CheckResult("extras", status, detail)


def _unix_socket(docker_host: str | None) -> Path | None:
    """The unix socket dockerd listens on, when it is one (the default is)."""
    host = docker_host or "unix:///var/run/docker.sock"
    return Path(host.removeprefix("unix://")) if host.startswith("unix://") else None


def _docker_info(settings: Settings) -> dict[str, object] | str:
    """``docker info`` as a dict, or why it is not available."""
    if importlib.util.find_spec("docker") is None:
        return "the docker SDK is not installed (pip install 'expert-deploy[docker]')"
    import docker  # the Docker SDK; only imported when it is there

    socket_path = _unix_socket(settings.docker_host)
    if socket_path is not None and not socket_path.exists():
        return f"dockerd not reachable: no socket at {socket_path} (is dockerd running?)"
    client = None
    try:
        # A fixed API version: with "auto" the SDK asks the daemon in its constructor and,
        # when that fails, leaks the socket it opened. 1.25 is the oldest API we rely on.
        client = docker.from_env(timeout=5, version="1.25")
        info: dict[str, object] = client.info()
    except Exception as error:  # the SDK raises many kinds; all mean "not reachable"
        # docker-py leaks the socket of a failed unix connect; collect it now, quietly,
        # rather than let its ResourceWarning surface somewhere unrelated later.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()
        return f"dockerd not reachable: {str(error).splitlines()[0][:160]}"
    finally:
        if client is not None:
            client.close()  # an unclosed socket would surface later as a ResourceWarning
    return info


def _docker(settings: Settings, needs: Needs) -> CheckResult:
    info = _docker_info(settings)
    if isinstance(info, str):
        return CheckResult("docker", _required(needs.docker), info)
    return CheckResult("docker", "pass", f"dockerd {info.get('ServerVersion', '?')} reachable")


def _nvidia_runtime(settings: Settings, needs: Needs) -> CheckResult:
    info = _docker_info(settings)
    if isinstance(info, str):
        return CheckResult(
            "nvidia runtime", _required(needs.docker and needs.gpus), "no dockerd to ask"
        )
    runtimes = info.get("Runtimes")
    found = isinstance(runtimes, dict) and "nvidia" in runtimes
    detail = "nvidia container runtime registered" if found else "no nvidia runtime in docker info"
    return CheckResult(
        "nvidia runtime", "pass" if found else _required(needs.docker and needs.gpus), detail
    )


def _gpus(_: Settings, needs: Needs) -> CheckResult:
    if shutil.which("nvidia-smi") is None:
        return CheckResult("gpus", _required(needs.gpus), "nvidia-smi not found: no NVIDIA driver")
    try:
        listed = proc.run(["nvidia-smi", "-L"], timeout_s=10).output
    except CommandError as error:
        return CheckResult(
            "gpus", _required(needs.gpus), f"nvidia-smi failed: {error.output_tail[:160]}"
        )
    gpus = [line for line in listed.splitlines() if line.startswith("GPU ")]
    status: Status = "pass" if gpus else _required(needs.gpus)
    return CheckResult("gpus", status, f"{len(gpus)} visible" + (f": {gpus[0]}" if gpus else ""))


def _disk(settings: Settings, needs: Needs) -> CheckResult:
    where = settings.workdir.resolve()
    while not where.exists():
        where = where.parent
    free_gib = shutil.disk_usage(where).free / 1024**3
    status: Status = "pass" if free_gib >= needs.disk_gib else ("fail" if free_gib < 1 else "warn")
    return CheckResult(
        "disk", status, f"{free_gib:.0f} GiB free at {where} (want {needs.disk_gib:.0f})"
    )


def _hf_token(settings: Settings, needs: Needs) -> CheckResult:
    # Only presence is checked and reported; the value is never read here.
    if settings.hf_token_present:
        return CheckResult("hf token", "pass", "found (HF_TOKEN or the HF token file)")
    return CheckResult(
        "hf token", "warn", "none: gated Llama 3 repos need one (huggingface-cli login)"
    )


def _binary(name: str, found: Path | None, required: bool, hint: str) -> CheckResult:
    if found is not None:
        return CheckResult(name, "pass", str(found))
    return CheckResult(name, _required(required), f"not found; {hint}")


def _nginx(_: Settings, needs: Needs) -> CheckResult:
    return _binary(
        "nginx",
        binaries.find_nginx(),
        needs.nginx,
        "apt-get install nginx (else clients use a gateway port)",
    )


def _tritonserver(_: Settings, needs: Needs) -> CheckResult:
    return _binary(
        "tritonserver",
        binaries.find_tritonserver(),
        needs.tritonserver,
        "pip install 'expert-deploy[local]' (ships it) or use the NGC container",
    )
