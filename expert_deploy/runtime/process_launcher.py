"""The ``process`` launcher: every component is a child process of this machine.

* Triton: a system ``tritonserver`` when one is installed, else the one in the nvidia-pytriton
  wheel, with the wheel's recipe (a backend directory holding the Python backend and the stub
  for this interpreter's version, the wheel's libraries on ``LD_LIBRARY_PATH``, this
  interpreter's bin first on ``PATH`` so model.py imports from the same environment);
* gateway replicas: ``<this python> -m router_service --config <rendered yaml>``;
* NGINX: ``nginx -c <rendered conf> -p <workdir>/run/nginx/`` in the foreground.

Each child leads its own session (``proc.spawn``) and logs to ``<workdir>/logs/<slug>.log``;
its handle ref is ``"<pid>:<start ticks>"`` so a recycled PID is never signalled. Runtime
scratch (backend directory, NGINX temp and logs) lives under ``<workdir>/run/``.

Children get this CLI's environment minus credentials they have no use for: Triton and NGINX
see no token or key at all; a gateway gets back exactly the variables its config's ``auth``
names. Values are never written anywhere.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import importlib.util
import re
import shutil
import socket
import sys
import time
from collections.abc import Collection
from pathlib import Path

from expert_deploy import binaries, proc
from expert_deploy.errors import LaunchError, ReadinessTimeoutError
from expert_deploy.runtime.components import Component
from expert_deploy.runtime.gateway_auth import probe_key, read_gateway_auth
from expert_deploy.runtime.launcher import ComponentStatus, Handle
from expert_deploy.runtime.readiness import wait_until_ready
from expert_deploy.settings import Settings

KIND = "process"
#: Lines of a component's log quoted in an error.
ERROR_TAIL_LINES = 15
#: Triton's own wait for in-flight requests on SIGTERM; the group is SIGKILLed after ``grace_s``.
TRITON_EXIT_TIMEOUT_S = 5
#: Set in every child's environment to ``<workdir>::<component>``: how a server that was
#: spawned but never recorded (its CLI killed in between) is found again.
MARKER_ENV = "EXPERT_DEPLOY_COMPONENT"
#: An orphan serves nobody: stop it quickly.
ORPHAN_GRACE_S = 3.0
#: Variable names that hold credentials; children get none unless their config names them.
_SECRET_NAME = re.compile(r"(TOKEN|KEYS?|SECRETS?|PASSWORD|PASSWD|CREDENTIALS?)$", re.I)
#: Where a port comes from in the inventory, for the "port in use" message.
_PORT_FIELDS = {
    ("triton", "http"): "triton.http_base_port (or experts[].ports.http)",
    ("triton", "grpc"): "triton.grpc_base_port (or experts[].ports.grpc)",
    ("triton", "metrics"): "triton.metrics_base_port (or experts[].ports.metrics)",
    ("gateway", "http"): "gateway.http_base_port",
    ("gateway", "grpc"): "gateway.grpc_base_port",
    ("gateway", "admin"): "gateway.admin_base_port",
    ("nginx", "listen"): "nginx.listen_port",
    ("nginx", "grpc"): "nginx.grpc_listen_port (default listen_port + 1)",
}
_INSTALL_HINT = {
    "triton": "install Triton (NGC image, /opt/tritonserver) or "
    "`pip install 'expert-deploy[local]'`",
    "nginx": "install NGINX (`apt-get install nginx-light`) or set nginx.enabled: false",
}


def child_environment(settings: Settings, keep: tuple[str | None, ...] = ()) -> dict[str, str]:
    """The CLI's environment without credentials, plus the variables named in ``keep``."""
    env = {k: v for k, v in settings.environ.items() if not _SECRET_NAME.search(k)}
    for name in keep:
        if name and name in settings.environ:
            env[name] = settings.environ[name]
    return env


class ProcessLauncher:
    """Starts components as local child processes (see the module docstring)."""

    kind = KIND

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.workdir = settings.workdir.resolve()
        self.run_dir = self.workdir / "run"
        self.logs_dir = self.workdir / "logs"

    # --- Launcher -----------------------------------------------------------------------------

    def launch(self, component: Component) -> Handle:
        """Check binary and ports, then spawn ``component``; returns as soon as it runs.

        Raises:
            LaunchError: the binary is missing, a port is taken, or the exec failed.
        """
        argv, env = self.command(component)
        env[MARKER_ENV] = self._marker(component.name)
        # Under the deployment lock nothing may run under this component's name unless the
        # state records it; one that does was spawned by a CLI killed before it saved.
        for orphan in proc.leaders_with_env(MARKER_ENV, env[MARKER_ENV]):
            proc.stop_group(orphan, grace_s=ORPHAN_GRACE_S)
        if component.kind == "triton":
            remove_shared_memory(self._shm_prefix(component.slug))
        check_ports_free(component)
        log_path = self.log_path(component)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("a", encoding="utf-8") as log:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            log.write(f"=== expert-deploy: starting {component.name} at {stamp}: {argv[0]}\n")
        try:
            identity = proc.spawn(argv, env=env, log_path=log_path)
        except OSError as error:
            raise LaunchError(
                f"{component.name}: cannot execute {argv[0]} ({error.strerror}); log: {log_path}"
            ) from None
        return Handle(KIND, identity.ref, log_path)

    def wait_ready(self, component: Component, handle: Handle, *, budget_s: float) -> None:
        """Probe with a real one-token inference until it succeeds or ``budget_s`` passes.

        Raises:
            LaunchError: the process exited while starting (exit code, log, last lines).
            ReadinessTimeoutError: no successful inference within ``budget_s``.
        """
        identity = _identity(handle)

        def still_running() -> None:
            code = proc.reap(identity.pid)
            if code is not None or not proc.is_alive(identity):
                raise LaunchError(self._exit_message(component, handle, code))

        key = probe_key(component, self.workdir, self.settings)
        try:
            wait_until_ready(component, budget_s=budget_s, still_running=still_running, api_key=key)
        except ReadinessTimeoutError as error:
            raise ReadinessTimeoutError(f"{error}: {handle.log_path}") from None

    def stop(self, handle: Handle, *, grace_s: float) -> None:
        """SIGTERM the component's process group, SIGKILL it after ``grace_s``.

        Raises:
            LaunchError: something of the group survived SIGKILL (names the PID and log).
        """
        identity = _identity(handle)
        if not proc.stop_group(identity, grace_s=grace_s):
            raise LaunchError(
                f"process group {identity.pid} survived SIGKILL; log: {handle.log_path}"
            )
        self._remove_shared_memory(handle)

    def status(self, handle: Handle) -> ComponentStatus:
        identity = _identity(handle)
        code = proc.reap(identity.pid)
        if proc.is_alive(identity):
            return ComponentStatus("running", f"pid {identity.pid}")
        if proc.start_ticks(identity.pid) is None and code is None:
            return ComponentStatus("missing", f"pid {identity.pid} is gone")
        return ComponentStatus("exited", f"pid {identity.pid} exited", code)

    def logs(self, handle: Handle, *, tail: int) -> str:
        return proc.tail_lines(handle.log_path, tail) if handle.log_path else ""

    def unrecorded(self, recorded: Collection[str]) -> int:
        """How many servers of this work dir run that no ``recorded`` ref names (for status)."""
        return sum(1 for identity in self._spawned_here() if identity.ref not in recorded)

    def stop_unrecorded(self) -> int:
        """Stop every server this work dir spawned that is still running; return how many.

        For ``down``, after the recorded components are stopped: what is left was spawned by
        a CLI killed before it could record it. Only processes carrying this work dir's
        marker are touched, never anything another deployment or anyone else started.
        """
        orphans = self._spawned_here()
        for orphan in orphans:
            proc.stop_group(orphan, grace_s=ORPHAN_GRACE_S)
        # Every server of this work dir is stopped now (recorded ones first), so whatever
        # Python-backend region still carries its prefix belongs to a dead Triton.
        remove_shared_memory(self._shm_workdir_prefix())
        return len(orphans)

    # --- helpers ------------------------------------------------------------------------------

    def _marker(self, name: str) -> str:
        return f"{self.workdir}::{name}"

    def _spawned_here(self) -> list[proc.ProcessIdentity]:
        """Running servers that carry this work dir's marker, recorded in its state or not."""
        return proc.leaders_with_env(MARKER_ENV, self._marker(""), prefix=True)

    def log_path(self, component: Component) -> Path:
        return self.logs_dir / f"{component.slug}.log"

    def missing_binary(self, component: Component) -> str | None:
        """Why ``component`` cannot be started here (its program is absent), or None."""
        if component.kind == "triton" and binaries.find_tritonserver() is None:
            return f"{component.name}: tritonserver not found; {_INSTALL_HINT['triton']}"
        if component.kind == "nginx" and binaries.find_nginx() is None:
            return f"{component.name}: nginx not found; {_INSTALL_HINT['nginx']}"
        return None

    def command(self, component: Component) -> tuple[list[str], dict[str, str]]:
        """The argv and environment ``component`` is started with (prepares run/ folders)."""
        if component.kind == "triton":
            return self._triton(component)
        if component.kind == "gateway":
            return self._gateway(component)
        return self._nginx(component)

    def _triton(self, component: Component) -> tuple[list[str], dict[str, str]]:
        binary = binaries.find_tritonserver()
        if binary is None:
            raise LaunchError(
                f"{component.name}: tritonserver not found; {_INSTALL_HINT['triton']}"
            )
        env = child_environment(self.settings)
        argv = [
            str(binary),
            f"--model-repository={component.config_path}",
            f"--http-address={component.address}",
            f"--http-port={component.ports['http']}",
            f"--grpc-address={component.address}",
            f"--grpc-port={component.ports['grpc']}",
            f"--metrics-address={component.address}",
            f"--metrics-port={component.ports['metrics']}",
            f"--exit-timeout-secs={TRITON_EXIT_TIMEOUT_S}",
            f"--backend-config=python,shm-region-prefix-name={self._shm_prefix(component.slug)}",
        ]
        if binaries.is_wheel_triton(binary):
            root = binaries.pytriton_root()
            assert root is not None
            argv.insert(2, f"--backend-directory={self._wheel_backend_dir(root)}")
            libs = binaries.wheel_triton_library_path(root)
            env["LD_LIBRARY_PATH"] = ":".join(p for p in (libs, env.get("LD_LIBRARY_PATH")) if p)
            env["PATH"] = ":".join(
                p for p in (str(Path(sys.executable).parent), env.get("PATH")) if p
            )
        if component.device == "gpu":
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in component.gpus)
        return argv, env

    def _gateway(self, component: Component) -> tuple[list[str], dict[str, str]]:
        if importlib.util.find_spec("uvicorn") is None:
            raise LaunchError(
                f"{component.name}: the gateway's dependencies are not installed in "
                f"{sys.prefix}; `pip install 'expert-deploy[router]'`"
            )
        auth = read_gateway_auth(component.config_path)
        env = child_environment(self.settings, keep=(auth.api_keys_env, auth.admin_token_env))
        argv = [sys.executable, "-m", "router_service", "--config", str(component.config_path)]
        # uvloop is part of the router extra; the gateway's measured overhead assumes it.
        if importlib.util.find_spec("uvloop") is not None:
            argv += ["--loop", "uvloop"]
        return argv, env

    def _nginx(self, component: Component) -> tuple[list[str], dict[str, str]]:
        binary = binaries.find_nginx()
        if binary is None:
            raise LaunchError(f"{component.name}: nginx not found; {_INSTALL_HINT['nginx']}")
        prefix = self.run_dir / "nginx"
        # The rendered conf writes its logs and temp files here (render notes); nginx does not
        # create folders itself.
        for folder in ("logs", "temp"):
            (prefix / folder).mkdir(parents=True, exist_ok=True)
        argv = [
            str(binary),
            "-c",
            str(component.config_path),
            "-p",
            f"{prefix}/",
            # Errors before the conf's own error_log is read go here, not /var/log/nginx.
            "-e",
            str(prefix / "logs" / "error.log"),
        ]
        if not _says_daemon(component.config_path):
            argv += ["-g", "daemon off;"]
        return argv, child_environment(self.settings)

    def _wheel_backend_dir(self, root: Path) -> Path:
        """A backend directory for the wheel's Triton, made once per work dir."""
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        target = self.run_dir / "triton-backends" / version
        python_dir = target / "python"
        python_dir.mkdir(parents=True, exist_ok=True)
        for name, source in binaries.python_backend_files(root, version).items():
            path = python_dir / name
            if path.exists() or path.is_symlink():
                continue
            if not source.is_file():
                raise LaunchError(
                    f"the nvidia-pytriton wheel has no {source.name} for Python {version}; "
                    "use a Python version the wheel supports or a system Triton"
                )
            if name.endswith("_stub"):
                # The stub finds its Python through its own location: a copy, not a link.
                shutil.copy2(source, path)
            else:
                path.symlink_to(source)
        return target

    def _shm_workdir_prefix(self) -> str:
        """The part of every shared-memory prefix that is unique to this work dir."""
        tag = hashlib.sha256(str(self.workdir).encode()).hexdigest()[:8]
        return f"ed{tag}_"

    def _shm_prefix(self, slug: str) -> str:
        """Unique per work dir and component, so stale regions can be found and removed."""
        return f"{self._shm_workdir_prefix()}{slug}_"

    def _remove_shared_memory(self, handle: Handle) -> None:
        if handle.log_path is not None and handle.log_path.stem.startswith("triton-"):
            remove_shared_memory(self._shm_prefix(handle.log_path.stem))

    def _exit_message(self, component: Component, handle: Handle, code: int | None) -> str:
        how = f"exited with code {code}" if code is not None else "exited"
        tail = self.logs(handle, tail=ERROR_TAIL_LINES)
        return (
            f"{component.name} {how} while starting; log: {handle.log_path}\n"
            + "\n".join(f"  | {line}" for line in tail.splitlines())
        ).rstrip()


def remove_shared_memory(prefix: str) -> None:
    """Drop the /dev/shm regions named ``prefix*`` that killed Python backends left behind.

    Only call it when no live tritonserver uses ``prefix``.
    """
    shm = Path("/dev/shm")  # noqa: S108 (where POSIX shared memory lives, not a temp dir)
    if not shm.is_dir():
        return
    for leftover in shm.glob(f"{prefix}*"):
        with contextlib.suppress(OSError):
            leftover.unlink()


def check_ports_free(component: Component) -> None:
    """Refuse to start when a port ``component`` will listen on already has a listener.

    Binds with ``SO_REUSEADDR`` as the servers do, so only a live listener (not a socket in
    TIME_WAIT from a previous run) counts as taken.

    Raises:
        LaunchError: names the port, the component and the inventory field to change.
    """
    host = component.address or "127.0.0.1"
    ports = dict(component.ports)
    for name, port in ports.items():
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError as error:
                if error.errno != errno.EADDRINUSE:
                    raise LaunchError(
                        f"{component.name}: cannot bind {host}:{port} ({error.strerror}); "
                        f"check the host's address in the inventory"
                    ) from None
                field = _PORT_FIELDS.get((component.kind, name), "the inventory's ports")
                raise LaunchError(
                    f"port {port} ({component.name} {name}) is in use; free it or change {field}"
                ) from None


def _identity(handle: Handle) -> proc.ProcessIdentity:
    try:
        return proc.ProcessIdentity.parse(handle.ref)
    except ValueError:
        raise LaunchError(
            f"state names a process as {handle.ref!r}, not <pid>:<start ticks>; "
            "was it written by another launcher?"
        ) from None


def _says_daemon(conf: Path) -> bool:
    """Whether the conf sets ``daemon`` itself (then ``-g 'daemon off;'`` would clash)."""
    try:
        text = conf.read_text(encoding="utf-8")
    except OSError:
        return False
    return re.search(r"^\s*daemon\s+\w+\s*;", text, re.MULTILINE) is not None
