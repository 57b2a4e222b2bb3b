"""Converge: make what runs match the desired components, recording every step in the state.

``converge_actions`` is pure: desired components against the state and each recorded
component's liveness give, per component, one of

    start     not in the state
    keep      recorded, running, same config_hash (still probed: it must answer)
    restart   recorded but dead, or running with another config_hash
    stop      recorded, no longer desired

``apply`` carries them out: stops first (NGINX, then gateways, then Triton), then starts kind
by kind in ``START_ORDER``: every component of a kind is launched (and saved in the state at
once, before readiness), then each is waited for, so servers of one kind load side by side.
The state is saved after every spawn and stop, so a ``up`` killed at any point leaves a state
that names everything running, and the next ``up`` converges from it. When something fails,
the components this run started that are not ready are stopped again before the error
propagates: the state then records exactly what is running.

``start_component``, ``wait_component`` and ``stop_component`` are public for ``swap``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

from expert_deploy.errors import LaunchError
from expert_deploy.runtime.components import START_ORDER, Component, ComponentKind
from expert_deploy.runtime.launcher import Handle, Launcher, Liveness
from expert_deploy.runtime.state import ComponentRecord, DeploymentState, StateError, StateStore

Verb = Literal["start", "keep", "restart", "stop"]
Phase = Literal["starting", "ready", "draining", "swapping"]
#: (component name, what happens to it): progress for the CLI's display.
Events = Callable[[str, str], None]
#: How long a stopped server may take after SIGTERM before its group is SIGKILLed.
DEFAULT_GRACE_S = 10.0
#: Grace for a server this run started that never became ready: nothing to drain.
FAILED_START_GRACE_S = 3.0


@dataclass(frozen=True)
class Action:
    verb: Verb
    name: str
    reason: str


@dataclass(frozen=True)
class ApplyResult:
    actions: tuple[Action, ...]

    @property
    def changed(self) -> bool:
        """Whether anything was started, restarted or stopped."""
        return any(a.verb != "keep" for a in self.actions)

    def names(self, verb: Verb) -> list[str]:
        return [a.name for a in self.actions if a.verb == verb]


def _rank(kind: ComponentKind) -> int:
    return START_ORDER.index(kind)


def converge_actions(
    desired: Sequence[Component],
    recorded: Mapping[str, ComponentRecord],
    liveness: Mapping[str, Liveness],
) -> list[Action]:
    """What to do with each component: stops (reverse start order) first, then the rest."""
    wanted = {c.name for c in desired}
    stops = sorted(
        (r for r in recorded.values() if r.name not in wanted),
        key=lambda r: (-_rank(r.kind), r.name),
    )
    actions = [Action("stop", r.name, "no longer in the inventory") for r in stops]
    for component in sorted(desired, key=lambda c: _rank(c.kind)):
        record = recorded.get(component.name)
        if record is None:
            actions.append(Action("start", component.name, "new"))
        elif liveness.get(component.name, "missing") != "running":
            actions.append(Action("restart", component.name, "not running"))
        elif record.config_hash != component.config_hash:
            actions.append(Action("restart", component.name, "configuration changed"))
        else:
            actions.append(Action("keep", component.name, "running with the same configuration"))
    return actions


def record_for(component: Component, handle: Handle, phase: Phase) -> ComponentRecord:
    """The state's record of ``component`` started as ``handle``."""
    return ComponentRecord(
        name=component.name,
        kind=component.kind,
        host=component.host,
        address=component.address,
        launcher=handle.launcher,
        ref=handle.ref,
        log_path=str(handle.log_path) if handle.log_path else None,
        config_path=str(component.config_path),
        ports=dict(component.ports),
        expert_id=component.expert_id,
        gpus=list(component.gpus),
        config_hash=component.config_hash,
        spec_hash=component.spec_hash,
        artifact_hash=component.extra_hashes.get("artifact"),
        phase=phase,
        started_at=time.time(),
    )


def _save(store: StateStore, state: DeploymentState) -> None:
    state.updated_at = time.time()
    store.save(state)


def start_component(
    launcher: Launcher, component: Component, state: DeploymentState, store: StateStore
) -> ComponentRecord:
    """Launch ``component`` and record it (phase ``starting``) before anything else happens.

    Raises:
        LaunchError: it could not be started; the state is unchanged.
    """
    handle = launcher.launch(component)
    record = record_for(component, handle, "starting")
    state.components[component.name] = record
    _save(store, state)
    return record


def wait_component(
    launcher: Launcher,
    component: Component,
    record: ComponentRecord,
    state: DeploymentState,
    store: StateStore,
) -> ComponentRecord:
    """Wait for a real inference through ``component``, then record it as ``ready``.

    Raises:
        LaunchError: it exited while starting; ReadinessTimeoutError: its budget passed.
    """
    launcher.wait_ready(component, record.handle, budget_s=component.startup_budget_s)
    ready = record.model_copy(update={"phase": "ready"})
    state.components[component.name] = ready
    _save(store, state)
    return ready


def stop_component(
    launcher: Launcher,
    record: ComponentRecord,
    state: DeploymentState,
    store: StateStore,
    *,
    grace_s: float = DEFAULT_GRACE_S,
) -> None:
    """Stop what ``record`` names and drop it from the state.

    Raises:
        LaunchError: it would not stop; it stays in the state so a later command retries.
    """
    launcher.stop(record.handle, grace_s=grace_s)
    state.components.pop(record.name, None)
    _save(store, state)


def stop_components(
    launcher: Launcher,
    records: Sequence[ComponentRecord],
    state: DeploymentState,
    store: StateStore,
    *,
    grace_s: float = DEFAULT_GRACE_S,
    on_event: Events = lambda _name, _message: None,
) -> None:
    """Stop ``records`` kind by kind in reverse start order; those of one kind side by side.

    Triton waits out its exit timeout on SIGTERM, so stopping eight experts one after the
    other would take eight grace periods; in parallel it takes one.

    Raises:
        LaunchError: some would not stop (all are tried; the survivors stay in the state).
    """
    failures: list[str] = []
    for kind in reversed(START_ORDER):
        group = [r for r in records if r.kind == kind]
        if not group:
            continue
        with ThreadPoolExecutor(max_workers=len(group)) as pool:
            futures = {r.name: pool.submit(launcher.stop, r.handle, grace_s=grace_s) for r in group}
        for record in group:
            error = futures[record.name].exception()
            if error is None:
                state.components.pop(record.name, None)
                on_event(record.name, "stopped")
            else:
                failures.append(f"{record.name}: {error}")
        _save(store, state)
    if failures:
        raise LaunchError("; ".join(failures))


def liveness_of(launcher: Launcher, state: DeploymentState) -> dict[str, Liveness]:
    """What the launcher sees of every recorded component right now."""
    return {name: launcher.status(r.handle).liveness for name, r in state.components.items()}


def apply(
    launcher: Launcher,
    desired: Sequence[Component],
    state: DeploymentState,
    store: StateStore,
    *,
    grace_s: float = DEFAULT_GRACE_S,
    on_event: Events = lambda _name, _message: None,
) -> ApplyResult:
    """Converge what runs to ``desired``; see the module docstring.

    Raises:
        StateError: the state holds components of another launcher.
        LaunchError, ReadinessTimeoutError: a component failed; what this run started and
            did not get ready was stopped again, and the state says what still runs.
    """
    foreign = sorted(r.name for r in state.components.values() if r.launcher != launcher.kind)
    if foreign:
        raise StateError(
            f"{', '.join(foreign)} were started by another runtime than {launcher.kind!r}; "
            "run `expert-deploy down` first"
        )
    actions = converge_actions(desired, state.components, liveness_of(launcher, state))
    by_name = {c.name: c for c in desired}
    stopping = [state.components[a.name] for a in actions if a.verb == "stop"]
    if stopping:
        stop_components(launcher, stopping, state, store, grace_s=grace_s, on_event=on_event)
    started: list[str] = []
    try:
        for kind in START_ORDER:
            step = [a for a in actions if a.verb != "stop" and by_name[a.name].kind == kind]
            for action in step:
                component = by_name[action.name]
                if action.verb == "restart":
                    on_event(component.name, f"restarting ({action.reason})")
                    stop_component(
                        launcher, state.components[component.name], state, store, grace_s=grace_s
                    )
                if action.verb in ("start", "restart"):
                    record = start_component(launcher, component, state, store)
                    started.append(component.name)
                    on_event(component.name, f"started ({record.ref.split(':')[0]})")
            for action in step:
                component = by_name[action.name]
                on_event(component.name, "waiting for a real inference")
                wait_component(launcher, component, state.components[component.name], state, store)
                on_event(component.name, "ready")
    except BaseException:
        _stop_unready(launcher, started, state, store)
        raise
    return ApplyResult(tuple(actions))


def _stop_unready(
    launcher: Launcher, started: Sequence[str], state: DeploymentState, store: StateStore
) -> None:
    """After a failure, stop what this run started that never answered (best effort)."""
    unready = [
        state.components[name]
        for name in started
        if name in state.components and state.components[name].phase != "ready"
    ]
    if unready:
        # Survivors stay in the state; the original error is the one to report.
        with contextlib.suppress(LaunchError):
            stop_components(launcher, unready, state, store, grace_s=FAILED_START_GRACE_S)
