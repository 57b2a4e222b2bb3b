"""The ``Launcher`` interface: how a component is started, watched and stopped.

Three implementations, chosen by the inventory's ``runtime``:

* ``process`` (``process_launcher.py``): child processes in their own sessions, PIDs in state;
* ``docker`` (``docker_launcher.py``): one container per component through the Docker SDK;
* ``ansible`` (``ansible_launcher.py``): playbooks/ roles run through ansible-runner.

A launcher knows nothing about the deployment as a whole: ``apply.py`` decides what to start
and stop, in which order, and records every ``Handle`` in the state as soon as it exists, so an
interrupted ``up`` can be converged by the next one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from expert_deploy.runtime.components import Component

Liveness = Literal["running", "exited", "missing"]


@dataclass(frozen=True)
class Handle:
    """What a launcher needs to find a component again, possibly from another CLI process.

    ``ref`` is launcher-specific and opaque to everyone else: ``"<pid>:<start ticks>"`` for a
    process (the start time guards against a recycled PID), a container id for docker, the
    host plus the unit or container name for ansible.
    """

    launcher: str
    ref: str
    log_path: Path | None = None


@dataclass(frozen=True)
class ComponentStatus:
    """What a launcher sees of one component right now (no inference: see ``readiness``)."""

    liveness: Liveness
    detail: str = ""
    exit_code: int | None = None


class Launcher(Protocol):
    """Starts and stops components; every method raises ``LaunchError`` naming the component."""

    kind: str

    def launch(self, component: Component) -> Handle:
        """Start ``component`` and return at once (readiness is ``wait_ready``'s job).

        Raises:
            LaunchError: it could not be started (binary missing, port taken, image absent);
                the message names the component and its log file.
        """
        ...

    def wait_ready(self, component: Component, handle: Handle, *, budget_s: float) -> None:
        """Block until a real inference through ``component`` succeeds.

        Raises:
            LaunchError: the component exited while starting (with its log's last lines).
            ReadinessTimeoutError: ``budget_s`` passed without a successful inference.
        """
        ...

    def stop(self, handle: Handle, *, grace_s: float) -> None:
        """Stop what ``handle`` names and everything it spawned; a no-op when already gone."""
        ...

    def status(self, handle: Handle) -> ComponentStatus:
        """Whether what ``handle`` names is still running."""
        ...

    def logs(self, handle: Handle, *, tail: int) -> str:
        """The last ``tail`` lines the component printed (empty when it has no log)."""
        ...
