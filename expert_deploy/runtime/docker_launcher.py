"""The ``docker`` launcher: one container per component through the Docker SDK.

Every container runs with host networking (the plan's ports are the host's ports), its config
mounted read-only at the same path it has on the host (rendered files hold absolute paths),
labels naming the deployment, component, expert and config hash, a health check and a restart
policy. A Triton container gets exactly its GPUs (a device request by id), the shared memory
and ulimits NVIDIA documents for TensorRT-LLM, and read-only mounts of everything its model
repository points at (engine, tokenizer, symlinked model sources).

What runs inside is a :class:`ContainerProfile` per kind (image, entry command, HTTP check),
so production (the toolchain's NGC image, an NGINX image, a gateway image) and the tests (a
stand-in image plus read-only mounts of this machine's Triton and Python) share every other
line. Docker itself is reached through ``expert_deploy/docker_engine.py`` only.

A container that exits (or that the restart policy restarts) while starting is a
``LaunchError`` with its exit code and last log lines; its log is copied to
``<workdir>/logs/<component slug>.log`` and the container is removed, so nothing is left
running or restarting that the deployment state does not know about.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from expert_deploy import docker_engine
from expert_deploy.errors import LaunchError
from expert_deploy.render.trtllm import BACKEND_MOUNT
from expert_deploy.runtime.components import Component, ComponentKind
from expert_deploy.runtime.gateway_auth import gateway_config_path, read_gateway_auth
from expert_deploy.runtime.launcher import ComponentStatus, Handle
from expert_deploy.runtime.readiness import wait_until_ready
from expert_deploy.settings import Secret, Settings

if TYPE_CHECKING:
    from expert_deploy.inventory.loader import LoadedInventory

LABEL_PREFIX = "expert-deploy."
#: Serving containers carry ``role=serve``; engine builds (builder/) carry ``engine-build``.
ROLE = "serve"
TAIL_LINES = 20
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


@dataclass(frozen=True)
class DeployedContainer:
    """One serving container of a deployment, as Docker reports it."""

    id: str
    name: str
    component: str
    status: str
    config_hash: str


def container_name(deployment: str, component: Component) -> str:
    """``ed-<deployment>-<component slug>``: stable, so a second launch finds a stale one."""
    return f"ed-{deployment}-{component.slug}"


class DockerLauncher:
    """Starts components as containers on one Docker daemon (the local one, or ``base_url``)."""

    kind = "docker"

    def __init__(
        self,
        settings: Settings,
        *,
        deployment: str,
        profiles: Mapping[ComponentKind, ContainerProfile],
        options: DockerOptions | None = None,
        extra_mounts: Sequence[Mount] = (),
    ) -> None:
        """``settings`` give the workdir, ``DOCKER_HOST`` and the environment the gateways'
        secrets come from; ``extra_mounts`` go into every container (the tests' Python and
        Triton)."""
        self.settings = settings
        self.deployment = deployment
        self.workdir = settings.workdir.resolve()
        self.profiles = dict(profiles)
        self.options = options or DockerOptions()
        self.base_url = settings.docker_host
        self.extra_mounts = tuple(extra_mounts)
        self._client: Any = None

    # -- the Launcher protocol ------------------------------------------------------------

    def launch(self, component: Component) -> Handle:
        """Create and start ``component``'s container; a stale one of ours is replaced.

        Raises:
            LaunchError: image missing, daemon unreachable, a foreign container holds the
                name, or Docker refused to start it (nothing is left behind).
        """
        kwargs = self.create_kwargs(component)
        client = self._docker()
        name = kwargs["name"]
        log_path = self.log_path(component)
        self._remove_stale(component, name)
        what = f"{component.name} (container {name})"
        with docker_engine.translated(what, image=kwargs["image"]):
            container = client.containers.create(**kwargs)
        try:
            with docker_engine.translated(what, log_hint=f"its log: {log_path}"):
                container.start()
        except LaunchError:
            self._save_log(container, log_path)
            with docker_engine.ignoring_errors():
                container.remove(force=True)
            raise
        return Handle(self.kind, container.id, log_path)

    def wait_ready(self, component: Component, handle: Handle, *, budget_s: float) -> None:
        """Wait for a real inference through the component while its container stays up.

        Raises:
            LaunchError: the container exited or was restarted while starting.
            ReadinessTimeoutError: no successful inference within ``budget_s``.
        """

        def still_running() -> None:
            self._check_running(component, handle)

        key = self._probe_key(component)
        wait_until_ready(
            component,
            budget_s=budget_s,
            still_running=still_running,
            api_key=key.reveal() if key else None,
        )

    def stop(self, handle: Handle, *, grace_s: float) -> None:
        """Stop (SIGTERM, then SIGKILL after ``grace_s``), keep its log, remove the container."""
        container = docker_engine.find_container(self._docker(), handle.ref)
        if container is None:
            return
        if handle.log_path is not None:
            self._save_log(container, handle.log_path)
        with docker_engine.translated(f"container {container.name}"):
            container.stop(timeout=max(1, math.ceil(grace_s)))
        with docker_engine.ignoring_errors():  # removed meanwhile: already what we want
            container.remove(force=True)

    def status(self, handle: Handle) -> ComponentStatus:
        """Docker's view: running (with its health), exited (with its code), or missing."""
        container = docker_engine.find_container(self._docker(), handle.ref)
        if container is None:
            return ComponentStatus("missing", "no such container")
        state = container.attrs.get("State", {})
        status = str(state.get("Status", container.status))
        health = (state.get("Health") or {}).get("Status")
        restarts = int(container.attrs.get("RestartCount", 0))
        if status == "running":
            parts = [
                f"health {health}" if health else "",
                f"{restarts} restarts" if restarts else "",
            ]
            return ComponentStatus("running", ", ".join(p for p in parts if p))
        code = state.get("ExitCode")
        return ComponentStatus(
            "exited", f"container {status}", int(code) if code is not None else None
        )

    def logs(self, handle: Handle, *, tail: int) -> str:
        """The container's last ``tail`` lines; the saved copy once it has been removed."""
        container = docker_engine.find_container(self._docker(), handle.ref)
        if container is not None:
            with docker_engine.translated(f"container {container.name}"):
                data: bytes = container.logs(tail=tail)
            return data.decode("utf-8", errors="replace")
        if handle.log_path is not None and handle.log_path.is_file():
            lines = handle.log_path.read_text(errors="replace").splitlines()
            return "\n".join(lines[-tail:]) + ("\n" if lines else "")
        return ""

    # -- beyond the protocol ----------------------------------------------------------------

    def list_deployment(self, deployment: str | None = None) -> list[DeployedContainer]:
        """Every serving container labelled with ``deployment`` (this one by default), any
        state: what ``status`` and ``down`` compare with the state to find strays."""
        name = deployment or self.deployment
        filters = {"label": [f"{LABEL_PREFIX}deployment={name}", f"{LABEL_PREFIX}role={ROLE}"]}
        with docker_engine.translated(f"listing the containers of {name}"):
            found = self._docker().containers.list(all=True, filters=filters)
        return [
            DeployedContainer(
                c.id,
                c.name,
                c.labels.get(f"{LABEL_PREFIX}component", ""),
                c.status,
                c.labels.get(f"{LABEL_PREFIX}config-hash", ""),
            )
            for c in found
        ]

    def log_path(self, component: Component) -> Path:
        """Where the container's log is copied when it stops or fails."""
        return self.workdir / "logs" / f"{component.slug}.log"

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def create_kwargs(self, component: Component) -> dict[str, Any]:
        """The exact ``containers.create`` arguments for ``component`` (no daemon needed).

        Raises:
            LaunchError: no profile for its kind, or its repository needs a mount that is
                not configured (the tensorrtllm_backend checkout).
        """
        profile = self.profiles.get(component.kind)
        if profile is None:
            raise LaunchError(
                f"{component.name}: no container image known for {component.kind}; "
                "run expert-deploy render first"
            )
        options = self.options
        if component.kind == "triton":
            command, mounts = self._triton(component, profile)
        elif component.kind == "gateway":
            command, mounts = self._gateway(component, profile)
        else:
            command, mounts = self._nginx(component, profile)
        environment = dict(profile.environment)
        if component.kind == "gateway":
            # Exactly the variables its config's auth names. The values stay out of our files
            # and logs, but dockerd keeps a container's environment in its own config (root
            # only); an inventory's gateway.auth.api_keys_file avoids even that.
            auth = read_gateway_auth(component.config_path)
            for name in (auth.api_keys_env, auth.admin_token_env):
                secret = self.settings.secret(name)
                if name and secret is not None:
                    environment[name] = secret.reveal()
        labels = {
            f"{LABEL_PREFIX}deployment": self.deployment,
            f"{LABEL_PREFIX}component": component.name,
            f"{LABEL_PREFIX}kind": component.kind,
            f"{LABEL_PREFIX}role": ROLE,
            f"{LABEL_PREFIX}config-hash": component.config_hash,
        }
        if component.expert_id is not None:
            labels[f"{LABEL_PREFIX}expert"] = component.expert_id
        kwargs: dict[str, Any] = {
            "image": profile.image,
            "command": command,
            "name": container_name(self.deployment, component),
            "labels": labels,
            "network_mode": "host",
            "environment": environment,
            "mounts": [
                docker_engine.bind_mount(m.source, m.target, read_only=m.read_only)
                for m in _deduplicated([*mounts, *self.extra_mounts])
            ],
            "healthcheck": docker_engine.healthcheck(
                [*profile.http_check, _health_url(component)],
                interval_s=options.health_interval_s,
                timeout_s=options.health_timeout_s,
                start_period_s=component.startup_budget_s,
                retries=options.health_retries,
            ),
            "restart_policy": {"Name": options.restart_policy},
            "detach": True,
        }
        if component.kind == "triton":
            kwargs["shm_size"] = options.shm_size
            kwargs["ulimits"] = [
                docker_engine.ulimit("memlock", options.memlock_bytes, options.memlock_bytes),
                docker_engine.ulimit("stack", options.stack_bytes, options.stack_bytes),
            ]
            if component.device == "gpu" and component.gpus:
                kwargs["device_requests"] = [docker_engine.device_request(component.gpus)]
        return kwargs

    # -- per kind -----------------------------------------------------------------------------

    def _triton(
        self, component: Component, profile: ContainerProfile
    ) -> tuple[list[str], list[Mount]]:
        repository = component.config_path.resolve()
        mounts = [Mount(repository, str(repository))]
        mounts += _referenced_paths(repository)
        if _links_into(repository, BACKEND_MOUNT):
            backend = self.options.tensorrtllm_backend_dir
            if backend is None:
                raise LaunchError(
                    f"{component.name}: its model repository links into {BACKEND_MOUNT}; set "
                    "runtime.docker.tensorrtllm_backend_dir to a tensorrtllm_backend checkout "
                    "of the toolchain's backend tag"
                )
            mounts.append(Mount(backend.resolve(), str(BACKEND_MOUNT)))
        return triton_command(component, profile.command, self.options, self.deployment), mounts

    def _gateway(
        self, component: Component, profile: ContainerProfile
    ) -> tuple[list[str], list[Mount]]:
        from router_service.config import ConfigError, load_config

        config_path = component.config_path.resolve()
        try:
            config = load_config(config_path)
        except ConfigError as error:
            raise LaunchError(f"{component.name}: {error}; re-run expert-deploy render") from None
        mounts = [
            Mount(config_path, str(config_path)),
            Mount(config.router_dir, str(config.router_dir)),
        ]
        if config.auth.api_keys_file is not None:
            keys = config.auth.api_keys_file.resolve()
            mounts.append(Mount(keys, str(keys)))
        command = [*profile.command, "-m", "router_service", "--config", str(config_path)]
        return command, mounts

    def _nginx(
        self, component: Component, profile: ContainerProfile
    ) -> tuple[list[str], list[Mount]]:
        conf = component.config_path.resolve()
        # The rendered conf writes only under <workdir>/run/nginx (render/nginx.py); the
        # runtime creates logs/ and temp/ there before the first start.
        runtime_dir = self.workdir / "run" / "nginx"
        for sub in ("logs", "temp"):
            (runtime_dir / sub).mkdir(parents=True, exist_ok=True)
        mounts = [Mount(conf, str(conf)), Mount(runtime_dir, str(runtime_dir), read_only=False)]
        for line in conf.read_text(encoding="utf-8").splitlines():
            words = line.split()
            if len(words) == 2 and words[0] in ("ssl_certificate", "ssl_certificate_key"):
                path = Path(words[1].rstrip(";"))
                mounts.append(Mount(path, str(path)))
        command = [
            *profile.command,
            "-c",
            str(conf),
            "-p",
            f"{runtime_dir}/",
            # Errors before the conf is read would go to the image's default path; stderr
            # lands in the container log instead.
            "-e",
            "stderr",
            "-g",
            "daemon off;",
        ]
        return command, mounts

    # -- helpers ------------------------------------------------------------------------------

    def _probe_key(self, component: Component) -> Secret | None:
        """An API key for probes through a gateway (NGINX passes to gateway 0's config)."""
        if component.kind == "triton":
            return None
        config = (
            component.config_path
            if component.kind == "gateway"
            else gateway_config_path(self.workdir, 0)
        )
        return read_gateway_auth(config).api_key(self.settings)

    def _docker(self) -> Any:
        if self._client is None:
            self._client = docker_engine.open_client(self.base_url)
        return self._client

    def _remove_stale(self, component: Component, name: str) -> None:
        """Remove a leftover container of this component (an interrupted ``up``), refuse others."""
        existing = docker_engine.find_container(self._docker(), name)
        if existing is None:
            return
        labels = existing.labels or {}
        ours = (
            labels.get(f"{LABEL_PREFIX}deployment") == self.deployment
            and labels.get(f"{LABEL_PREFIX}component") == component.name
        )
        if not ours:
            raise LaunchError(
                f"{component.name}: a container named {name} exists and is not one of ours; "
                f"remove or rename it (docker rm -f {name})"
            )
        self._save_log(existing, self.log_path(component))
        with docker_engine.translated(f"{component.name} (stale container {name})"):
            existing.remove(force=True)

    def _check_running(self, component: Component, handle: Handle) -> None:
        """Raise when the container is gone, exited or was restarted since ``launch``."""
        container = docker_engine.find_container(self._docker(), handle.ref)
        log_path = handle.log_path or self.log_path(component)
        if container is None:
            raise LaunchError(
                f"{component.name}: its container {handle.ref[:12]} disappeared while starting"
            )
        with docker_engine.translated(f"{component.name} (container {container.name})"):
            container.reload()
        state = container.attrs.get("State", {})
        restarts = int(container.attrs.get("RestartCount", 0))
        if state.get("Running") and not state.get("Restarting") and restarts == 0:
            return
        code = state.get("ExitCode")
        how = ""
        if restarts:
            # A restart resets State.ExitCode; the daemon's "die" event keeps the real one.
            code = self._last_exit_code(container)
            how = f" (restarted {restarts} time{'s' if restarts != 1 else ''} by its policy)"
        tail = self._save_log(container, log_path)
        with docker_engine.ignoring_errors():
            container.remove(force=True)
        raise LaunchError(
            f"{component.name} (container {container.name}) exited with code {code}{how} "
            f"while starting; its log: {log_path}\n{tail}".rstrip()
        )

    def _last_exit_code(self, container: Any) -> int | None:
        """The exit code of the container's latest ``die`` event (None when there is none)."""
        code = None
        with docker_engine.ignoring_errors():
            events = self._docker().api.events(
                since=0,
                until=int(time.time()) + 1,
                filters={"container": container.id, "event": "die"},
                decode=True,
            )
            for event in events:
                code = (event.get("Actor") or {}).get("Attributes", {}).get("exitCode", code)
        return int(code) if code is not None else None

    def _save_log(self, container: Any, path: Path) -> str:
        """Copy the container's whole log to ``path``; return its last lines."""
        with docker_engine.ignoring_errors():
            data: bytes = container.logs()
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            lines = data.decode("utf-8", errors="replace").splitlines()
            return "\n".join(lines[-TAIL_LINES:])
        return ""


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


def docker_launcher_for(settings: Settings, loaded: LoadedInventory) -> DockerLauncher:
    """The launcher an inventory with ``runtime: docker`` asks for (its ``runtime.docker``)."""
    spec = loaded.inventory.runtime.docker
    return DockerLauncher(
        settings,
        deployment=loaded.inventory.name,
        profiles=production_profiles(
            triton_image=loaded.toolchain.triton_image,
            gateway_image=spec.gateway_image,
            nginx_image=spec.nginx_image,
        ),
        options=DockerOptions(
            shm_size=spec.shm_size,
            memlock_bytes=spec.memlock_bytes,
            stack_bytes=spec.stack_bytes,
            restart_policy=spec.restart_policy,
            tensorrtllm_backend_dir=spec.tensorrtllm_backend_dir,
        ),
    )


def docker_launcher(settings: Settings) -> DockerLauncher:
    """The launcher ``launcher_for("docker", settings)`` builds, from the settings alone.

    ``status``, ``logs`` and ``stop`` need only the daemon and the recorded container ids.
    ``launch`` takes the deployment name and the toolchain's Triton image from the rendered
    ``ansible/vars.yaml`` (render always runs before launch) and the ``runtime.docker``
    defaults; :func:`docker_launcher_for` honours an inventory's own ``runtime.docker`` block.
    """
    import yaml

    from expert_deploy.inventory.models import DockerRuntime

    rendered = settings.workdir / "rendered" / "ansible" / "vars.yaml"
    try:
        values = yaml.safe_load(rendered.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        values = {}
    spec = DockerRuntime()
    triton_image = values.get("triton_image") if isinstance(values, dict) else None
    deployment = values.get("deployment") if isinstance(values, dict) else None
    profiles = (
        production_profiles(
            triton_image=str(triton_image),
            gateway_image=spec.gateway_image,
            nginx_image=spec.nginx_image,
        )
        if triton_image
        else {}
    )
    return DockerLauncher(settings, deployment=str(deployment or ""), profiles=profiles)


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


def _health_url(component: Component) -> str:
    address = "127.0.0.1" if component.address in ("0.0.0.0", "") else component.address  # noqa: S104
    if component.kind == "triton":
        return f"http://{address}:{component.ports['http']}/v2/health/ready"
    port = component.ports["http"] if component.kind == "gateway" else component.ports["listen"]
    return f"http://{address}:{port}/healthz"


def _referenced_paths(repository: Path) -> list[Mount]:
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


def _links_into(repository: Path, prefix: PurePosixPath) -> bool:
    for dirpath, _, filenames in os.walk(repository):
        for name in filenames:
            path = Path(dirpath) / name
            if path.is_symlink() and PurePosixPath(path.readlink()).is_relative_to(prefix):
                return True
    return False


def _deduplicated(mounts: Sequence[Mount]) -> list[Mount]:
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
