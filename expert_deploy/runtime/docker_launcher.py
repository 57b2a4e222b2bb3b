"""The ``docker`` launcher: one container per component through the Docker SDK.

Every container runs with host networking (the plan's ports are the host's ports), its config
mounted read-only at the same path it has on the host (rendered files hold absolute paths),
labels naming the deployment, component, expert and config hash, a health check and a restart
policy. A Triton container gets exactly its GPUs (a device request by id), the shared memory
and ulimits NVIDIA documents for TensorRT-LLM, and read-only mounts of everything its model
repository points at (engine, tokenizer, symlinked model sources).

What runs inside is a ``ContainerProfile`` per kind (``container_spec.py``: image, entry
command, HTTP check), so production (the toolchain's NGC image, an NGINX image, a gateway
image) and the tests (a stand-in image plus read-only mounts of this machine's Triton and
Python) share every other line. Docker itself is reached through ``docker_engine.py`` only.

A container that exits (or that the restart policy restarts) while starting is a
``LaunchError`` with its exit code and last log lines; its log is copied to
``<workdir>/logs/<component slug>.log`` and the container is removed, so nothing is left
running or restarting that the deployment state does not know about.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from expert_deploy import docker_engine
from expert_deploy.errors import LaunchError
from expert_deploy.render.trtllm import BACKEND_MOUNT
from expert_deploy.runtime.components import Component, ComponentKind
from expert_deploy.runtime.container_spec import (
    ContainerProfile,
    DockerOptions,
    Mount,
    deduplicated,
    health_url,
    links_into,
    production_profiles,
    referenced_paths,
    triton_command,
)
from expert_deploy.runtime.gateway_auth import probe_key, read_gateway_auth
from expert_deploy.runtime.launcher import ComponentStatus, Handle
from expert_deploy.runtime.readiness import wait_until_ready
from expert_deploy.settings import Settings

if TYPE_CHECKING:
    from expert_deploy.inventory.loader import LoadedInventory

LABEL_PREFIX = "expert-deploy."
#: Serving containers carry ``role=serve``; engine builds (builder/) carry ``engine-build``.
ROLE = "serve"
TAIL_LINES = 20


@dataclass(frozen=True)
class DeployedContainer:
    """One serving container of a deployment, as Docker reports it."""

    id: str
    name: str
    component: str
    status: str
    config_hash: str


#: How the gateway image is made: no registry has it (images/gateway.Dockerfile).
GATEWAY_IMAGE_BUILD = (
    "build it first, in an expert-deploy checkout: "
    "docker build -f images/gateway.Dockerfile -t {image} ."
)


def container_prefix(deployment: str) -> str:
    """``ed-<deployment>-``: how every container name of ``deployment`` begins."""
    return f"ed-{deployment}-"


def container_name(deployment: str, component: Component) -> str:
    """``ed-<deployment>-<component slug>``: stable, so a second launch finds a stale one."""
    return container_prefix(deployment) + component.slug


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
        # apply.py stops a start-order group from a thread pool: one client, made once.
        self._client_lock = threading.Lock()

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
        obtain = (
            GATEWAY_IMAGE_BUILD.format(image=kwargs["image"]) if component.kind == "gateway" else ""
        )
        with docker_engine.translated(what, image=kwargs["image"], obtain=obtain):
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

        wait_until_ready(
            component,
            budget_s=budget_s,
            still_running=still_running,
            api_key=probe_key(component, self.workdir, self.settings),
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
        state."""
        return [
            DeployedContainer(
                c.id,
                c.name,
                c.labels.get(f"{LABEL_PREFIX}component", ""),
                c.status,
                c.labels.get(f"{LABEL_PREFIX}config-hash", ""),
            )
            for c in self._containers(deployment or self.deployment)
        ]

    def unrecorded(self, recorded: Collection[str]) -> int:
        """How many containers of this work dir exist that no ``recorded`` id names."""
        found = self._containers(self.deployment, this_workdir=True)
        return sum(1 for c in found if c.id not in recorded)

    def stop_unrecorded(self, *, grace_s: float = 10.0) -> int:
        """Stop and remove this work dir's containers of its deployment; return how many.

        For ``down``, after the recorded components are stopped: what is left was started by
        an ``up`` killed before it could record it. Only containers labelled with this
        deployment *and* this work dir are touched; their logs are kept like any other's.
        """
        found = self._containers(self.deployment, this_workdir=True)
        prefix = container_prefix(self.deployment)
        for container in found:
            slug = str(container.name).removeprefix(prefix)
            self.stop(
                Handle(self.kind, container.id, self._log_path(slug)),
                grace_s=grace_s,
            )
        return len(found)

    def _containers(self, deployment: str, *, this_workdir: bool = False) -> list[Any]:
        """Serving containers labelled with ``deployment`` (and this work dir), in any state."""
        if not deployment:
            return []
        labels = [f"{LABEL_PREFIX}deployment={deployment}", f"{LABEL_PREFIX}role={ROLE}"]
        if this_workdir:
            labels.append(f"{LABEL_PREFIX}workdir={self.workdir}")
        with docker_engine.translated(f"listing the containers of {deployment}"):
            found: list[Any] = self._docker().containers.list(all=True, filters={"label": labels})
        return found

    def log_path(self, component: Component) -> Path:
        """Where the container's log is copied when it stops or fails."""
        return self._log_path(component.slug)

    def _log_path(self, slug: str) -> Path:
        return self.workdir / "logs" / f"{slug}.log"

    def close(self) -> None:
        """Close the Docker client (a later call opens a new one)."""
        with self._client_lock:
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
        cpus: tuple[int, ...] = ()
        if component.kind == "triton":
            command, mounts = self._triton(component, profile)
        elif component.kind == "gateway":
            command, mounts, cpus = self._gateway(component, profile)
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
            # Which work dir started it: `down` sweeps only its own unrecorded containers.
            f"{LABEL_PREFIX}workdir": str(self.workdir),
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
                for m in deduplicated([*mounts, *self.extra_mounts])
            ],
            "healthcheck": docker_engine.healthcheck(
                [*profile.http_check, health_url(component)],
                interval_s=options.health_interval_s,
                timeout_s=options.health_timeout_s,
                start_period_s=component.startup_budget_s,
                retries=options.health_retries,
            ),
            "restart_policy": {"Name": options.restart_policy},
            "detach": True,
        }
        if cpus:
            # The replica pins itself to its config's cpus, which must lie inside the
            # container's cpuset: giving the container exactly those CPUs keeps the two equal
            # (and a narrower default cpuset from failing the pin at start-up).
            kwargs["cpuset_cpus"] = ",".join(map(str, cpus))
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
        mounts += referenced_paths(repository)
        if links_into(repository, BACKEND_MOUNT):
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
    ) -> tuple[list[str], list[Mount], tuple[int, ...]]:
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
        return command, mounts, config.cpus

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

    def _docker(self) -> Any:
        with self._client_lock:
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
    from expert_deploy.inventory.models import DockerRuntime
    from expert_deploy.render.gateway import read_ansible_vars

    values = read_ansible_vars(settings.workdir)
    spec = DockerRuntime()
    triton_image = values.get("triton_image")
    deployment = values.get("deployment")
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
