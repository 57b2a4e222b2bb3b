"""Swap one expert without a full redeploy: drain, stop, start, re-admit — or roll back.

A GPU cannot hold an expert and its replacement at once (deploy.md §1.4), so a swap is
replace-destroy-first (``-/+``), made invisible to clients by the gateways:

1. build the new artifacts while the old server still serves (``prepare``);
2. drain the expert on every gateway replica: its clusters go to the next-nearest expert;
3. wait for its in-flight requests, up to a deadline;
4. stop its server(s), start the new one(s) on the same GPUs, wait for a real inference;
5. undrain it everywhere and install the routing table at the next generation.

If the new server does not become ready, the old one is started again from a copy of its
model repository taken before rendering, and the swap reports the failure. The other
experts, the gateways and NGINX are never touched.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import yaml

from expert_deploy.artifacts.prepare import prepare
from expert_deploy.errors import ExpertDeployError, UsageError
from expert_deploy.inventory.loader import LoadedInventory
from expert_deploy.plan.planner import Plan
from expert_deploy.runtime.apply import Phase, start_component, wait_component
from expert_deploy.runtime.components import Component, components_for
from expert_deploy.runtime.diff import spec_hashes
from expert_deploy.runtime.gateway_admin import (
    ADMIN_ADDRESS,
    GatewayAdmin,
    wait_drained,
    wait_healthy,
)
from expert_deploy.runtime.gateway_auth import gateway_config_path
from expert_deploy.runtime.launcher import Launcher
from expert_deploy.runtime.state import ComponentRecord, DeploymentState, StateError, StateStore
from expert_deploy.settings import Settings

Progress = Callable[[str], None]
#: How long to wait for the gateways' health probes to see a (re)started server.
HEALTHY_DEADLINE_S = 30.0


class SwapError(ExpertDeployError):
    """The new expert did not start; says whether the old one serves again."""


@dataclass(frozen=True)
class SwapResult:
    expert_id: str
    outcome: Literal["swapped", "unchanged"]
    old_hashes: tuple[str, ...]
    new_hashes: tuple[str, ...]
    generation: int
    seconds: float
    #: Requests still open on the old server when the drain deadline passed (0 normally).
    abandoned: int = 0
    #: Other components whose inventory changed too: ``up`` applies those, not ``swap``.
    pending: tuple[str, ...] = ()


def swap_expert(
    settings: Settings,
    loaded: LoadedInventory,
    plan: Plan,
    expert_id: str,
    *,
    launcher: Launcher,
    drain_deadline_s: float = 60.0,
    grace_s: float = 10.0,
    progress: Progress = lambda _message: None,
) -> SwapResult:
    """Replace the running servers of ``expert_id`` with the inventory's new definition.

    Raises:
        StateError: nothing is deployed here, or another command holds the lock.
        UsageError: no such expert, or its replica count changed (use ``up``).
        SwapError: the new server failed to start; the old one was restored (or not: says so).
    """
    started = time.monotonic()
    store = StateStore(settings.workdir)
    with store.locked("swap"):
        state = store.load()
        if state is None:
            raise StateError(f"nothing is deployed from {settings.workdir}; run `expert-deploy up`")
        old = _old_records(state, loaded, expert_id)
        rollback = _keep_repositories(settings.workdir, old)
        progress(f"building {expert_id}'s artifacts while it serves")
        prepared = prepare(settings, loaded, plan)
        budgets = {e.id: e.startup_budget_s for e in loaded.inventory.experts}
        desired = components_for(
            plan,
            prepared.rendered,
            budgets=budgets,
            artifact_hashes=prepared.artifact_hashes,
            spec_hashes=spec_hashes(loaded, plan, settings.data_dir),
        )
        new = [c for c in desired if c.kind == "triton" and c.expert_id == expert_id]
        if sorted(c.name for c in new) != sorted(r.name for r in old):
            raise UsageError(
                f"expert {expert_id!r} now has {len(new)} replica(s) instead of {len(old)}; "
                "swap replaces servers one for one: run `expert-deploy up` to add or remove them"
            )
        pending = tuple(
            c.name
            for c in desired
            if c.expert_id != expert_id
            and c.name in state.components
            and state.components[c.name].config_hash != c.config_hash
        )
        old_hashes = tuple(r.config_hash for r in old)
        new_hashes = tuple(c.config_hash for c in sorted(new, key=lambda c: c.name))
        if old_hashes == new_hashes:
            return SwapResult(
                expert_id, "unchanged", old_hashes, new_hashes, state.generation,
                time.monotonic() - started, pending=pending,
            )  # fmt: skip
        admins = _admins(state, loaded, settings)
        progress(f"draining {expert_id} on {len(admins)} gateway replica(s)")
        for admin in admins:
            admin.drain(expert_id)
        _set_phase(store, state, old, "draining")
        abandoned = wait_drained(admins, expert_id, deadline_s=drain_deadline_s)
        progress(f"stopping {', '.join(r.name for r in old)}")
        for record in old:
            launcher.stop(record.handle, grace_s=grace_s)
        _set_phase(store, state, old, "swapping")
        try:
            _start_all(launcher, store, state, new, progress)
        except ExpertDeployError as failure:
            _roll_back(
                launcher, store, state,
                new=new, old=old, kept=rollback, progress=progress, grace_s=grace_s,
            )  # fmt: skip
            wait_healthy(admins, expert_id, deadline_s=HEALTHY_DEADLINE_S)
            for admin in admins:
                admin.undrain(expert_id)
            raise SwapError(
                f"swap of {expert_id} failed and was rolled back; the previous version serves "
                f"again. Cause: {failure}"
            ) from failure
        # Re-admit once every replica's own probes see the new server: until then a replica's
        # breaker may still hold the downtime against it and send the cluster elsewhere anyway.
        lagging = wait_healthy(admins, expert_id, deadline_s=HEALTHY_DEADLINE_S)
        if lagging:
            progress(f"{', '.join(lagging)} still probing {expert_id}; re-admitting anyway")
        for admin in admins:
            admin.undrain(expert_id)
        generation = state.generation + 1
        table = _routing_table(settings.workdir, generation)
        progress(f"installing routing table generation {generation}")
        for admin in admins:
            admin.replace_table(table)
        state.generation = generation
        state.updated_at = time.time()
        store.save(state)
        shutil.rmtree(settings.workdir / "rollback", ignore_errors=True)
        return SwapResult(
            expert_id, "swapped", old_hashes, new_hashes, generation,
            time.monotonic() - started, abandoned=abandoned, pending=pending,
        )  # fmt: skip


def _old_records(
    state: DeploymentState, loaded: LoadedInventory, expert_id: str
) -> list[ComponentRecord]:
    if loaded.inventory.expert(expert_id) is None:
        known = ", ".join(e.id for e in loaded.inventory.experts)
        raise UsageError(f"no expert {expert_id!r} in {loaded.path.name}; experts: {known}")
    if state.deployment != loaded.inventory.name:
        raise StateError(
            f"this work dir runs deployment {state.deployment!r}, not {loaded.inventory.name!r}; "
            "pass the inventory it was started with, or another --workdir"
        )
    old = sorted(
        (r for r in state.components.values() if r.kind == "triton" and r.expert_id == expert_id),
        key=lambda r: r.name,
    )
    if not old:
        raise StateError(f"expert {expert_id!r} is not running; `expert-deploy up` starts it")
    return old


def _keep_repositories(workdir: Path, old: Sequence[ComponentRecord]) -> dict[str, Path]:
    """Copy each old server's model repository aside: render replaces ``rendered/`` whole."""
    kept: dict[str, Path] = {}
    for record in old:
        server = record.name.split("/", 1)[1]
        # The repository the running server was started from, as recorded at its start.
        source = (
            Path(record.config_path)
            if record.config_path
            else workdir / "rendered" / "triton" / server
        )
        target = workdir / "rollback" / server
        shutil.rmtree(target, ignore_errors=True)
        if source.is_dir():
            shutil.copytree(source, target, symlinks=True)
            kept[record.name] = target.resolve()
    return kept


def _admins(
    state: DeploymentState, loaded: LoadedInventory, settings: Settings
) -> list[GatewayAdmin]:
    token = settings.secret(loaded.inventory.gateway.auth.admin_token_env)
    return [
        GatewayAdmin(r.name, ADMIN_ADDRESS, r.ports["admin"], token)
        for r in sorted(state.components.values(), key=lambda r: r.name)
        if r.kind == "gateway"
    ]


def _set_phase(
    store: StateStore, state: DeploymentState, records: Sequence[ComponentRecord], phase: Phase
) -> None:
    for record in records:
        state.components[record.name] = record.model_copy(update={"phase": phase})
    state.updated_at = time.time()
    store.save(state)


def _start_all(
    launcher: Launcher,
    store: StateStore,
    state: DeploymentState,
    components: Sequence[Component],
    progress: Progress,
) -> None:
    """Launch each component, record it at once, then wait for a real inference."""
    for component in components:
        progress(f"starting {component.name}")
        record = start_component(launcher, component, state, store)
        wait_component(launcher, component, record, state, store)


def _roll_back(
    launcher: Launcher,
    store: StateStore,
    state: DeploymentState,
    *,
    new: Sequence[Component],
    old: Sequence[ComponentRecord],
    kept: dict[str, Path],
    progress: Progress,
    grace_s: float,
) -> None:
    """Stop whatever of the new version started, then start the old version again."""
    for component in new:
        record = state.components.get(component.name)
        if record is not None and record.config_hash == component.config_hash:
            launcher.stop(record.handle, grace_s=grace_s)
    previous = []
    for component, record in zip(sorted(new, key=lambda c: c.name), old, strict=True):
        if record.name not in kept:
            raise SwapError(
                f"swap of {component.expert_id} failed and its old model repository is gone; "
                "it stays drained: run `expert-deploy up` with the previous inventory"
            )
        previous.append(
            replace(
                component,
                config_path=kept[record.name],
                config_hash=record.config_hash,
                spec_hash=record.spec_hash,
                ports=dict(record.ports),
                extra_hashes={"artifact": record.artifact_hash} if record.artifact_hash else {},
            )
        )
    progress("rolling back to the previous version")
    try:
        _start_all(launcher, store, state, previous, progress)
    except ExpertDeployError as error:
        raise SwapError(
            f"swap of {new[0].expert_id} failed and so did the rollback ({error}); the expert "
            "stays drained (its clusters go to the next-nearest expert): see `expert-deploy logs`"
        ) from error


def _routing_table(workdir: Path, generation: int) -> dict[str, object]:
    """The rendered gateway routing table, at ``generation``."""
    config = yaml.safe_load(gateway_config_path(workdir, 0).read_text(encoding="utf-8"))
    table = dict(config["routing"])
    table["generation"] = generation
    return table


def sync_generation(
    state: DeploymentState, loaded: LoadedInventory, settings: Settings
) -> list[str]:
    """Bring every gateway replica to the state's routing generation; return those moved.

    A replica (re)started by ``up`` after a swap reads generation 1 from its rendered config;
    the table is the same, only the generation is behind, so it gets the table again at the
    state's generation instead of a restart.
    """
    if state.generation <= 1:
        return []
    moved = []
    for admin in _admins(state, loaded, settings):
        if admin.generation() < state.generation:
            admin.replace_table(_routing_table(settings.workdir, state.generation))
            moved.append(admin.name)
    return moved
