"""Converging desired components with the state: which verb, which order, what is recorded when."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from expert_deploy.errors import LaunchError, ReadinessTimeoutError
from expert_deploy.runtime.apply import apply, converge_actions, stop_components
from expert_deploy.runtime.components import Component
from expert_deploy.runtime.state import StateError, StateStore
from tests.unit.runtime_support import RecordingLauncher, component, deployment, empty_state


def _converged(tmp_path: Path) -> tuple[RecordingLauncher, StateStore, list[Component]]:
    launcher, store, desired = RecordingLauncher(), StateStore(tmp_path), deployment()
    state = empty_state()
    apply(launcher, desired, state, store)
    launcher.calls.clear()
    return launcher, store, desired


def test_actions_cover_every_case_and_stop_in_reverse_order(tmp_path: Path) -> None:
    launcher, store, desired = _converged(tmp_path)
    state = store.load()
    assert state is not None
    refs = {name: r.ref for name, r in state.components.items()}
    launcher.live[refs["triton/e1-0"]] = "exited"
    wanted = [
        replace(desired[0], config_hash="h2"),  # triton/e0-0 changed
        desired[1],  # triton/e1-0 died
        desired[2],  # gateway/0 unchanged
        component("triton/e2-0", "triton", expert_id="e2"),  # new
    ]
    liveness = {n: launcher.status(r.handle).liveness for n, r in state.components.items()}
    actions = converge_actions(wanted, state.components, liveness)
    assert [(a.verb, a.name) for a in actions] == [
        ("stop", "nginx"),
        ("stop", "gateway/1"),
        ("restart", "triton/e0-0"),
        ("restart", "triton/e1-0"),
        ("start", "triton/e2-0"),
        ("keep", "gateway/0"),
    ]
    assert actions[2].reason == "configuration changed" and actions[3].reason == "not running"


def test_apply_launches_a_kind_before_waiting_and_records_before_readiness(
    tmp_path: Path,
) -> None:
    store = StateStore(tmp_path)
    seen_in_file: dict[str, str] = {}

    def look(c: Component) -> None:
        recorded = json.loads(store.path.read_text())["components"]
        seen_in_file[c.name] = recorded[c.name]["phase"]

    launcher = RecordingLauncher(on_wait=look)
    result = apply(launcher, deployment(), empty_state(), store)
    assert launcher.calls == [
        ("launch", "triton/e0-0"),
        ("launch", "triton/e1-0"),
        ("wait", "triton/e0-0"),
        ("wait", "triton/e1-0"),
        ("launch", "gateway/0"),
        ("launch", "gateway/1"),
        ("wait", "gateway/0"),
        ("wait", "gateway/1"),
        ("launch", "nginx"),
        ("wait", "nginx"),
    ]
    # Every component was in the state file, as "starting", while its readiness was awaited.
    assert set(seen_in_file.values()) == {"starting"} and len(seen_in_file) == 5
    state = store.load()
    assert state is not None
    assert {r.phase for r in state.components.values()} == {"ready"}
    assert result.changed and result.names("start") == [c.name for c in deployment()]


def test_second_apply_keeps_everything_and_still_probes(tmp_path: Path) -> None:
    launcher, store, desired = _converged(tmp_path)
    state = store.load()
    assert state is not None
    result = apply(launcher, desired, state, store)
    assert not result.changed
    assert [verb for verb, _ in launcher.calls] == ["wait"] * 5


def test_failure_stops_only_what_this_run_started_and_did_not_get_ready(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    launcher = RecordingLauncher(fail_on={"gateway/1": LaunchError("gateway/1 exited; log: x")})
    with pytest.raises(LaunchError, match="gateway/1 exited"):
        apply(launcher, deployment(), empty_state(), store)
    state = store.load()
    assert state is not None
    assert sorted(state.components) == ["gateway/0", "triton/e0-0", "triton/e1-0"]
    assert [c for c in launcher.calls if c[0] == "stop"] == [("stop", "gateway/1")]
    assert ("launch", "nginx") not in launcher.calls


def test_a_kept_component_that_never_answers_is_not_stopped(tmp_path: Path) -> None:
    launcher, store, desired = _converged(tmp_path)
    state = store.load()
    assert state is not None
    launcher.fail_on = {"triton/e0-0": ReadinessTimeoutError("triton/e0-0 did not answer")}
    with pytest.raises(ReadinessTimeoutError):
        apply(launcher, desired, state, store)
    assert not [c for c in launcher.calls if c[0] == "stop"]
    assert "triton/e0-0" in state.components


def test_records_of_another_launcher_are_refused(tmp_path: Path) -> None:
    launcher, store, desired = _converged(tmp_path)
    state = store.load()
    assert state is not None
    with pytest.raises(StateError, match="another runtime than 'docker'"):
        apply(replace(launcher, kind="docker"), desired, state, store)


def test_stop_components_keeps_what_would_not_stop(tmp_path: Path) -> None:
    launcher, store, _ = _converged(tmp_path)
    state = store.load()
    assert state is not None
    launcher.stop_fails = {"triton/e1-0"}
    with pytest.raises(LaunchError, match="triton/e1-0 would not stop"):
        stop_components(launcher, list(state.components.values()), state, store)
    stops = [name for verb, name in launcher.calls if verb == "stop"]
    # Reverse start order between kinds; within a kind they stop side by side.
    assert stops[0] == "nginx" and set(stops[1:3]) == {"gateway/0", "gateway/1"}
    assert set(stops[3:]) == {"triton/e0-0", "triton/e1-0"}
    reloaded = store.load()
    assert reloaded is not None and list(reloaded.components) == ["triton/e1-0"]
