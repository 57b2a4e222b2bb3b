"""Unit-tier helpers for the runtime: hand-built components and a recording stand-in launcher.

``RecordingLauncher`` stands in for a real launcher only in the unit tier (no processes here);
the process launcher itself is exercised against real servers in
tests/integration/test_runtime_process.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from expert_deploy.runtime.components import Component, ComponentKind
from expert_deploy.runtime.launcher import ComponentStatus, Handle, Liveness
from expert_deploy.runtime.state import DeploymentState


def component(
    name: str, kind: ComponentKind, *, config_hash: str = "h1", expert_id: str | None = None
) -> Component:
    ports = {"triton": {"http": 1, "grpc": 2, "metrics": 3}, "gateway": {"http": 4}}.get(
        kind, {"listen": 5}
    )
    return Component(
        name=name,
        kind=kind,
        host="localhost",
        address="127.0.0.1",
        config_path=Path("/nonexistent") / name,
        config_hash=config_hash,
        ports=ports,
        expert_id=expert_id,
        startup_budget_s=1.0,
    )


def deployment() -> list[Component]:
    """Two experts, two gateway replicas and NGINX, in start order."""
    return [
        component("triton/e0-0", "triton", expert_id="e0"),
        component("triton/e1-0", "triton", expert_id="e1"),
        component("gateway/0", "gateway"),
        component("gateway/1", "gateway"),
        component("nginx", "nginx"),
    ]


def empty_state() -> DeploymentState:
    return DeploymentState(
        deployment="d", inventory="d.yaml", runtime="stand-in", started_at=0.0, updated_at=0.0
    )


@dataclass
class RecordingLauncher:
    """Records every call; ``fail_on`` maps a component name to the error its wait raises."""

    kind: str = "stand-in"
    calls: list[tuple[str, str]] = field(default_factory=list)
    live: dict[str, Liveness] = field(default_factory=dict)
    fail_on: dict[str, Exception] = field(default_factory=dict)
    stop_fails: set[str] = field(default_factory=set)
    #: Called inside ``wait_ready`` (e.g. to look at the state file at that moment).
    on_wait: Callable[[Component], None] | None = None
    counter: int = 0

    def launch(self, component: Component) -> Handle:
        self.counter += 1
        ref = f"{component.name}#{self.counter}"
        self.calls.append(("launch", component.name))
        self.live[ref] = "running"
        return Handle(self.kind, ref, None)

    def wait_ready(self, component: Component, handle: Handle, *, budget_s: float) -> None:
        self.calls.append(("wait", component.name))
        if self.on_wait is not None:
            self.on_wait(component)
        if component.name in self.fail_on:
            raise self.fail_on[component.name]

    def stop(self, handle: Handle, *, grace_s: float) -> None:
        name = handle.ref.split("#")[0]
        self.calls.append(("stop", name))
        if name in self.stop_fails:
            from expert_deploy.errors import LaunchError

            raise LaunchError(f"{name} would not stop")
        self.live[handle.ref] = "exited"

    def status(self, handle: Handle) -> ComponentStatus:
        return ComponentStatus(self.live.get(handle.ref, "missing"))

    def logs(self, handle: Handle, *, tail: int) -> str:
        return ""
