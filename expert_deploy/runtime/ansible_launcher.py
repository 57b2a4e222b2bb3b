"""The ``ansible`` launcher: each component is started on its host by a playbook in playbooks/.

Every call is one ansible-runner run (the only place ``ansible_runner`` is imported):

* ``launch``  → ``deploy.yml`` with ``-e @<workdir>/rendered/ansible/vars.yaml`` plus the
  component's own variables; the roles copy the rendered files to the host and start the
  server detached under a pid file (process mode, ansible.builtin modules only: see
  playbooks/README.md for why not community.docker);
* ``stop``    → ``teardown.yml`` (SIGTERM, then SIGKILL of the process group);
* ``status`` / ``logs`` → ``inspect.yml``, whose helper prints JSON the job events carry back.

One wrapper per run: a private temporary ``private_data_dir``, ``ident`` = the step
(``launch-triton-expert-0-0``), artifacts kept under ``<workdir>/ansible/artifacts/<ident>``
for inspection, ``suppress_env_files``, ``json_mode``, ``quiet``, a timeout, events turned into
progress lines, a cancel flag set by our own SIGINT handler (the previous one restored after,
ansible-runner #1075), and ``rc``/``status`` read as data into a ``LaunchError`` naming the
component, the host and the artifact folder.

Secrets never reach the artifacts. ansible-runner dumps its whole environment into
``artifacts/<ident>/command`` even with ``suppress_env_files``, so the environment it passes
to ansible-playbook is an allow-list (no token, no key); a gateway's API keys and admin token
travel through a named pipe that ansible-playbook reads once as an extra-vars file (nothing is
written to disk) and reach the gateway on the service helper's stdin under ``no_log``.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shlex
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from expert_deploy import binaries
from expert_deploy.errors import LaunchError, ReadinessTimeoutError
from expert_deploy.runtime.components import Component
from expert_deploy.runtime.gateway_auth import probe_key, read_gateway_auth
from expert_deploy.runtime.launcher import ComponentStatus, Handle
from expert_deploy.runtime.readiness import wait_until_ready
from expert_deploy.settings import Settings

KIND = "ansible"
#: (component name, what happens to it): the same shape as ``apply.Events``.
Progress = Callable[[str, str], None]
#: Where components live on a remote host; the SSH user must be able to create it.
DEFAULT_REMOTE_ROOT = PurePosixPath("/opt/expert-deploy")
#: Addresses served with ``ansible_connection=local`` when the host names no SSH user.
_LOCAL_ADDRESSES = frozenset({"127.0.0.1", "localhost", "::1"})
#: Variables ansible-playbook may see; everything else (tokens, keys) is dropped.
_ENV_NAMES = frozenset(
    {"PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TERM", "SHELL"}
    | {"SSH_AUTH_SOCK", "ORIGINAL_STDOUT_CALLBACK", "AD_HOC_COMMAND_ID"}
)
_ENV_PREFIXES = ("ANSIBLE_", "RUNNER_", "AWX_", "LC_")
#: Seconds between liveness checks while waiting for readiness (each is a playbook run).
_LIVENESS_EVERY_S = 15.0
_EVENT_WORDS = {
    "runner_on_ok": "ok",
    "runner_on_failed": "failed",
    "runner_on_unreachable": "unreachable",
    "runner_on_skipped": "skipped",
}


@dataclass(frozen=True)
class HostAccess:
    """How Ansible reaches one inventory host."""

    name: str
    address: str
    ssh_user: str | None = None

    @property
    def is_local(self) -> bool:
        return self.address in _LOCAL_ADDRESSES and not self.ssh_user


@dataclass(frozen=True)
class Target:
    """What a handle's ref names: a host and the component's folder on it."""

    host: HostAccess
    run_dir: str
    slug: str

    def ref(self) -> str:
        data = {
            "host": self.host.name,
            "address": self.host.address,
            "ssh_user": self.host.ssh_user,
            "run_dir": self.run_dir,
            "slug": self.slug,
        }
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

    @classmethod
    def parse(cls, ref: str) -> Target:
        """Raises: LaunchError: the ref was not written by this launcher."""
        try:
            data = json.loads(ref)
            host = HostAccess(data["host"], data["address"], data.get("ssh_user"))
            return cls(host, str(data["run_dir"]), str(data["slug"]))
        except (ValueError, KeyError, TypeError):
            raise LaunchError(
                f"state names a component as {ref!r}, not an ansible target; "
                "was it written by another launcher?"
            ) from None

    @property
    def log_path(self) -> Path:
        return Path(self.run_dir) / f"{self.slug}.log"


@dataclass
class RunOutcome:
    """What one playbook run left: its status and the events that matter to us."""

    status: str
    rc: int | None
    artifacts: Path
    unreachable: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    #: JSON printed by the service helper (status, logs, start), in event order.
    reports: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "successful" and self.rc == 0


class AnsibleLauncher:
    """Starts components through playbooks/ (see the module docstring)."""

    kind = KIND

    def __init__(
        self,
        settings: Settings,
        *,
        progress: Progress | None = None,
        remote_root: PurePosixPath = DEFAULT_REMOTE_ROOT,
        ssh_port: int | None = None,
        connect_timeout_s: int = 10,
        run_timeout_s: int = 900,
    ) -> None:
        self.settings = settings
        self.workdir = settings.workdir.resolve()
        self.playbooks_dir = settings.data_dir / "playbooks"
        self.vars_file = self.workdir / "rendered" / "ansible" / "vars.yaml"
        self.artifacts_root = self.workdir / "ansible" / "artifacts"
        self.progress: Progress = progress or (lambda _name, _message: None)
        self.remote_root = remote_root
        self.ssh_port = ssh_port
        self.connect_timeout_s = connect_timeout_s
        self.run_timeout_s = run_timeout_s

    # --- Launcher -----------------------------------------------------------------------------

    def launch(self, component: Component) -> Handle:
        """Run deploy.yml for ``component`` on its host; returns once the server was spawned.

        Raises:
            LaunchError: the host is unreachable, a task failed, or the run timed out; names
                the component, the host, its log on the host and the artifact folder.
        """
        host = self._host(component)
        target = Target(host, self._run_dir(host, component), component.slug)
        extravars: dict[str, Any] = {
            "expert_deploy_kind": component.kind,
            "expert_deploy_server": self._server_key(component),
            "expert_deploy_slug": component.slug,
            "expert_deploy_run_dir": target.run_dir,
            "expert_deploy_rendered": str(self.workdir / "rendered"),
            **self._install_vars(component, host),
        }
        outcome = self._run(
            "deploy.yml",
            ident=f"launch-{component.slug}",
            host=host,
            extravars=extravars,
            subject=component.name,
            with_vars_file=True,
            secret_env=self._secret_env(component),
        )
        if not outcome.ok:
            raise LaunchError(self._failure(component.name, target, outcome, "could not start"))
        return Handle(KIND, target.ref(), target.log_path)

    def wait_ready(self, component: Component, handle: Handle, *, budget_s: float) -> None:
        """Probe with a real one-token inference; check liveness on the host now and then.

        Raises:
            LaunchError: the server exited on its host while starting (with its last lines).
            ReadinessTimeoutError: no successful inference within ``budget_s``.
        """
        target = Target.parse(handle.ref)
        next_check = 0.0

        def still_running() -> None:
            nonlocal next_check
            if time.monotonic() < next_check:
                return
            status = self.status(handle)
            if status.liveness != "running":
                tail = self.logs(handle, tail=15)
                raise LaunchError(
                    f"{component.name} {status.liveness} on {target.host.name} while starting "
                    f"({status.detail}); log on the host: {target.log_path}\n"
                    + "\n".join(f"  | {line}" for line in tail.splitlines())
                )
            next_check = time.monotonic() + _LIVENESS_EVERY_S

        try:
            wait_until_ready(
                component,
                budget_s=budget_s,
                still_running=still_running,
                api_key=probe_key(component, self.workdir, self.settings),
            )
        except ReadinessTimeoutError as error:
            raise ReadinessTimeoutError(f"{error}: {target.host.name}:{target.log_path}") from None

    def stop(self, handle: Handle, *, grace_s: float) -> None:
        """Run teardown.yml: SIGTERM the component's group, SIGKILL it after ``grace_s``.

        Raises:
            LaunchError: the host is unreachable or the group survived SIGKILL.
        """
        target = Target.parse(handle.ref)
        outcome = self._run(
            "teardown.yml",
            ident=f"stop-{target.slug}",
            host=target.host,
            extravars={
                "expert_deploy_slug": target.slug,
                "expert_deploy_run_dir": target.run_dir,
                "expert_deploy_grace_s": max(1, round(grace_s)),
            },
            subject=target.slug,
        )
        if not outcome.ok:
            raise LaunchError(self._failure(target.slug, target, outcome, "could not be stopped"))

    def status(self, handle: Handle) -> ComponentStatus:
        """Liveness as the host's pid file and /proc see it.

        Raises:
            LaunchError: the host is unreachable (nothing can be said about the component).
        """
        target = Target.parse(handle.ref)
        report = self._inspect(target, "status", {})
        if report is None:
            return ComponentStatus("missing", f"no run folder {target.run_dir} on the host")
        liveness = report.get("liveness")
        if liveness not in ("running", "exited", "missing"):
            raise LaunchError(f"{target.slug}: the service helper said {report!r}")
        return ComponentStatus(liveness, str(report.get("detail", "")))

    def logs(self, handle: Handle, *, tail: int) -> str:
        """The last ``tail`` lines of the component's log on its host ("" when there is none).

        Raises:
            LaunchError: the host is unreachable.
        """
        target = Target.parse(handle.ref)
        report = self._inspect(target, "logs", {"expert_deploy_tail": tail})
        return str(report.get("text", "")) if report else ""

    # --- one ansible-runner run ---------------------------------------------------------------

    def _run(
        self,
        playbook: str,
        *,
        ident: str,
        host: HostAccess,
        extravars: Mapping[str, Any],
        subject: str,
        with_vars_file: bool = False,
        secret_env: Mapping[str, str] | None = None,
    ) -> RunOutcome:
        """Run ``playbook`` against ``host`` alone; its status and events come back as data.

        Raises:
            LaunchError: ansible-runner is not installed, the rendered vars are missing, or
                ansible-playbook could not be executed.
        """
        try:
            from ansible_runner import Runner, RunnerConfig
        except ImportError:
            raise LaunchError(
                f"{subject}: runtime ansible needs ansible-runner; "
                "`pip install 'expert-deploy[ansible]'`"
            ) from None
        if with_vars_file and not self.vars_file.is_file():
            raise LaunchError(
                f"{subject}: {self.vars_file} is missing; run `expert-deploy render` first"
            )
        artifacts = self.artifacts_root / ident
        # One folder per step, the latest run only: a re-run must not mix old events in.
        shutil.rmtree(artifacts, ignore_errors=True)
        self.artifacts_root.mkdir(parents=True, exist_ok=True)
        outcome = RunOutcome("unstarted", None, artifacts)
        cancel = threading.Event()
        with tempfile.TemporaryDirectory(prefix="expert-deploy-ansible-") as private:
            inventory = Path(private) / "inventory" / "hosts.json"
            inventory.parent.mkdir()
            inventory.write_text(json.dumps(self._inventory(host)), encoding="utf-8")
            cmdline = ["-e", f"@{self.vars_file}"] if with_vars_file else []
            with (
                _SecretPipe.serving(
                    Path(private) / "secrets.json", {"expert_deploy_secret_env": secret_env}
                )
                if secret_env
                else contextlib.nullcontext() as pipe
            ):
                if pipe is not None:
                    cmdline += ["-e", f"@{pipe.path}"]
                config = RunnerConfig(
                    private_data_dir=private,
                    playbook=str(self.playbooks_dir / playbook),
                    inventory=str(inventory),
                    limit=host.name,
                    extravars=dict(extravars),
                    cmdline=shlex.join(cmdline) if cmdline else None,
                    ident=ident,
                    artifact_dir=str(self.artifacts_root),
                    rotate_artifacts=0,
                    suppress_env_files=True,
                    json_mode=True,
                    quiet=True,
                    timeout=self.run_timeout_s,
                )
                config.prepare()
                config.env = runner_environment(config.env, Path(sys.executable).parent)
                runner = Runner(
                    config,
                    event_handler=lambda event: self._on_event(subject, outcome, event),
                    cancel_callback=cancel.is_set,
                )
                with _sigint_sets(cancel):
                    runner.run()
        if cancel.is_set():
            raise KeyboardInterrupt
        outcome.status = str(runner.status)
        outcome.rc = runner.rc
        return outcome

    def _on_event(self, subject: str, outcome: RunOutcome, event: Mapping[str, Any]) -> bool:
        """Turn a job event into a progress line and remember failures and helper reports."""
        kind = str(event.get("event", ""))
        data = event.get("event_data") or {}
        task = str(data.get("task", "")).strip()
        raw = data.get("res")
        res: dict[str, Any] = raw if isinstance(raw, dict) else {}
        if kind == "playbook_on_task_start":
            self.progress(subject, f"task: {task}")
        elif kind in _EVENT_WORDS:
            host = str(data.get("host", ""))
            self.progress(subject, f"{_EVENT_WORDS[kind]}: {task} ({host})")
            message = _result_message(res)
            if kind == "runner_on_unreachable":
                outcome.unreachable.append(f"{host}: {message}")
            elif kind == "runner_on_failed" and not data.get("ignore_errors"):
                outcome.failed.append(f"{task} on {host}: {message}")
            elif kind == "runner_on_ok" and data.get("role") == "service":
                with contextlib.suppress(ValueError, TypeError):
                    report = json.loads(str(res.get("stdout", "")))
                    if isinstance(report, dict):
                        outcome.reports.append(report)
        return True

    def _inspect(
        self, target: Target, action: str, extravars: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        outcome = self._run(
            "inspect.yml",
            ident=f"{action}-{target.slug}",
            host=target.host,
            extravars={
                "expert_deploy_action": action,
                "expert_deploy_slug": target.slug,
                "expert_deploy_run_dir": target.run_dir,
                **extravars,
            },
            subject=target.slug,
        )
        if not outcome.ok:
            raise LaunchError(self._failure(target.slug, target, outcome, f"{action} failed"))
        return outcome.reports[-1] if outcome.reports else None

    # --- what the runs need -------------------------------------------------------------------

    def _inventory(self, host: HostAccess) -> dict[str, Any]:
        """A one-host inventory: local connection for loopback, SSH with a short timeout else."""
        variables: dict[str, Any] = {"ansible_host": host.address}
        if host.is_local:
            # The same interpreter (and virtualenv) as this CLI: roles run its router_service.
            variables |= {
                "ansible_connection": "local",
                "ansible_python_interpreter": sys.executable,
            }
        else:
            variables |= {
                "ansible_connection": "ssh",
                "ansible_python_interpreter": "/usr/bin/python3",
                "ansible_ssh_timeout": self.connect_timeout_s,
                "ansible_ssh_common_args": f"-o ConnectTimeout={self.connect_timeout_s} "
                "-o BatchMode=yes",
            }
            if host.ssh_user:
                variables["ansible_user"] = host.ssh_user
            if self.ssh_port is not None:
                variables["ansible_port"] = self.ssh_port
        return {"all": {"hosts": {host.name: variables}}}

    def _host(self, component: Component) -> HostAccess:
        """The component's host as vars.yaml lists it (address, SSH user).

        Raises:
            LaunchError: vars.yaml is missing or does not list the host.
        """
        try:
            data = self._vars()
        except (OSError, yaml.YAMLError):
            raise LaunchError(
                f"{component.name}: cannot read {self.vars_file}; run `expert-deploy render` first"
            ) from None
        for entry in data.get("hosts") or []:
            if entry.get("name") == component.host:
                return HostAccess(entry["name"], str(entry["address"]), entry.get("ssh_user"))
        raise LaunchError(
            f"{component.name}: host {component.host!r} is not in {self.vars_file}; "
            "run `expert-deploy render` again"
        )

    def _vars(self) -> dict[str, Any]:
        """The rendered vars.yaml (hosts, servers, gateways, nginx; never a secret)."""
        data = yaml.safe_load(self.vars_file.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}

    def _run_dir(self, host: HostAccess, component: Component) -> str:
        if host.is_local:
            return str(self.workdir / "ansible" / "hosts" / host.name / component.slug)
        return str(self.remote_root / self._vars().get("deployment", "default") / component.slug)

    @staticmethod
    def _server_key(component: Component) -> str:
        """The component's entry in vars.yaml: server name, gateway replica, or "nginx"."""
        if component.kind == "triton":
            return component.name.removeprefix("triton/")
        if component.kind == "gateway":
            return str(component.replica)
        return "nginx"

    def _install_vars(self, component: Component, host: HostAccess) -> dict[str, Any]:
        """Where the programs are on the host: this machine's installs for a local host.

        A remote host gets the roles' defaults (/opt/tritonserver as in the NGC image,
        /usr/sbin/nginx, /usr/bin/python3 with expert-deploy[router]).
        """
        if component.kind == "nginx":
            # The rendered conf names this prefix for its logs and temp files (render notes).
            prefix = {"nginx_prefix": str(self.workdir / "run" / "nginx")}
            nginx = binaries.find_nginx() if host.is_local else None
            return prefix | ({"nginx_binary": str(nginx)} if nginx else {})
        if not host.is_local:
            return {}
        if component.kind == "gateway":
            return {"gateway_python": sys.executable}
        binary = binaries.find_tritonserver()
        if binary is None:
            raise LaunchError(
                f"{component.name}: tritonserver not found on {host.name}; install Triton "
                "(/opt/tritonserver) or `pip install 'expert-deploy[local]'`"
            )
        result: dict[str, Any] = {"triton_binary": str(binary)}
        root = binaries.pytriton_root()
        if root is not None and binaries.is_wheel_triton(binary):
            version = f"{sys.version_info.major}.{sys.version_info.minor}"
            files = binaries.python_backend_files(root, version)
            missing = [str(p) for p in files.values() if not p.is_file()]
            if missing:
                raise LaunchError(
                    f"{component.name}: the nvidia-pytriton wheel lacks {missing[0]}; use a "
                    "Python version the wheel supports or a system Triton"
                )
            result["triton_python_backend_files"] = {k: str(v) for k, v in files.items()}
            result["triton_environment"] = {
                "LD_LIBRARY_PATH": binaries.wheel_triton_library_path(root),
                # The backend stub runs model.py with the first python on PATH: this venv's.
                "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
            }
        return result

    def _secret_env(self, component: Component) -> dict[str, str]:
        """A gateway's API keys and admin token, by the names its rendered config gives."""
        if component.kind != "gateway":
            return {}
        auth = read_gateway_auth(component.config_path)
        result: dict[str, str] = {}
        for name in (auth.api_keys_env, auth.admin_token_env):
            secret = self.settings.secret(name)
            if name and secret is not None:
                result[name] = secret.reveal()
        return result

    @staticmethod
    def _failure(subject: str, target: Target, outcome: RunOutcome, what: str) -> str:
        where = f"{target.host.name} ({target.host.address})"
        if outcome.unreachable:
            cause = f"host {where} is unreachable: {outcome.unreachable[0]}"
        elif outcome.failed:
            cause = f"on {where}, task {outcome.failed[0]}"
        elif outcome.status == "timeout":
            cause = f"the playbook run on {where} timed out"
        else:
            cause = f"ansible-playbook ended {outcome.status} (rc {outcome.rc}) on {where}"
        return (
            f"{subject} {what}: {cause}; log on the host: {target.log_path}; "
            f"Ansible artifacts: {outcome.artifacts}"
        )


def runner_environment(env: Mapping[str, str], venv_bin: Path) -> dict[str, str]:
    """ansible-playbook's environment: the allow-list, with this virtualenv's bin first.

    ansible-runner seeds its environment from ours and writes all of it to
    ``artifacts/<ident>/command``; keeping only these names keeps credentials out. A
    virtualenv that is not activated must still be on PATH, or ansible-runner cannot find
    ``ansible-playbook`` (status failed, rc 127).
    """
    kept = {
        name: value
        for name, value in env.items()
        if name in _ENV_NAMES or name.startswith(_ENV_PREFIXES)
    }
    path = [p for p in kept.get("PATH", "").split(os.pathsep) if p and p != str(venv_bin)]
    kept["PATH"] = os.pathsep.join([str(venv_bin), *path])
    return kept


def _result_message(res: Mapping[str, Any]) -> str:
    """One line from a task result: its msg, else the end of its stderr."""
    if res.get("censored"):
        return str(res["censored"])
    text = str(res.get("msg") or "").strip()
    stderr = str(res.get("stderr") or "").strip()
    if stderr:
        text = f"{text} {stderr.splitlines()[-1]}".strip()
    return " ".join(text.split())[:500] or "no message"


@contextlib.contextmanager
def _sigint_sets(flag: threading.Event) -> Iterator[None]:
    """While the run lasts, Ctrl-C sets ``flag`` (the run is cancelled, then re-raised).

    Only the main thread may install handlers; elsewhere the caller's handling stays.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, lambda _signum, _frame: flag.set())
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class _SecretPipe:
    """A named pipe that hands a JSON document to its first reader; nothing touches disk.

    ansible-playbook reads ``-e @file`` once at start, so one reader is served; an unread
    pipe is abandoned when the run ends.
    """

    def __init__(self, path: Path, document: Mapping[str, Any]) -> None:
        self.path = path
        self._data = json.dumps(document).encode()
        self._stop = threading.Event()
        os.mkfifo(path, 0o600)
        self._thread = threading.Thread(target=self._serve, name="ansible-secrets", daemon=True)
        self._thread.start()

    @classmethod
    @contextlib.contextmanager
    def serving(cls, path: Path, document: Mapping[str, Any]) -> Iterator[_SecretPipe]:
        pipe = cls(path, document)
        try:
            yield pipe
        finally:
            pipe._stop.set()
            pipe._thread.join()
            pipe._data = b""
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as error:
                if error.errno != errno.ENXIO:  # ENXIO: no reader yet
                    return
                self._stop.wait(0.02)
                continue
            try:
                os.set_blocking(fd, True)
                view = memoryview(self._data)
                while view:
                    view = view[os.write(fd, view) :]
            except BrokenPipeError:
                pass
            finally:
                os.close(fd)
            return
