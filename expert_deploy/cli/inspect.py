"""``validate`` and ``plan``: read an inventory, report problems, show placement and memory."""

from __future__ import annotations

import json
import sys
from collections import Counter
from typing import TYPE_CHECKING

import typer

from expert_deploy.cli._context import Planned, load_and_plan
from expert_deploy.cli._options import InventoryOpt, JsonOpt, WorkdirOpt
from expert_deploy.errors import Problem
from expert_deploy.inventory import LoadedInventory
from expert_deploy.plan.planner import Plan

if TYPE_CHECKING:
    from expert_deploy.runtime.diff import Change


def _print_warnings(loaded: LoadedInventory, plan: Plan) -> None:
    for finding in plan.warnings:
        problem: Problem = loaded.source.problem(finding.path, finding.message)
        print(f"warning: {problem}", file=sys.stderr)


def validate(inventory: InventoryOpt, workdir: WorkdirOpt = None) -> None:
    """Check an inventory: schema, cross-field rules, placement, ports and memory fit."""
    planned = load_and_plan(inventory, workdir)
    loaded, plan = planned.loaded, planned.plan
    _print_warnings(loaded, plan)
    inv = loaded.inventory
    print(
        f"{loaded.path}: valid — {len(inv.experts)} experts on {len(plan.servers)} servers, "
        f"{len(inv.hosts)} host(s), {len(plan.gateways)} gateway replicas"
    )


def _check_lock(planned: Planned) -> None:
    """Fail when the inventory asks for what its ``<inventory>.lock`` does not record.

    Raises:
        LockError: one line per disagreement (no lock yet: nothing to check).
    """
    from expert_deploy.artifacts.lockfile import (
        inventory_disagreements,
        lock_path,
        read_lock,
        refuse,
    )

    path = lock_path(planned.loaded.path)
    lock = read_lock(path)
    if lock is not None:
        engines_dir = planned.settings.engines_dir
        refuse(path, inventory_disagreements(planned.loaded, planned.plan, lock, engines_dir))


def _state_changes(planned: Planned) -> list[Change] | None:
    """What ``up`` would change in this work dir's deployment; ``None`` when none runs here."""
    from expert_deploy.runtime.diff import diff, spec_hashes
    from expert_deploy.runtime.state import StateStore

    state = StateStore(planned.settings.workdir).load()
    if state is None or state.deployment != planned.plan.name:
        return None
    desired = spec_hashes(planned.loaded, planned.plan, planned.settings.data_dir)
    return diff(desired, state)


def plan(inventory: InventoryOpt, workdir: WorkdirOpt = None, as_json: JsonOpt = False) -> None:
    """Show where every expert runs, its ports, whether it fits in GPU memory, and — when it
    is deployed from this work dir — what `up` would change (exit 2 when something would)."""
    planned = load_and_plan(inventory, workdir)
    _check_lock(planned)
    loaded, the_plan = planned.loaded, planned.plan
    changes = _state_changes(planned)
    if as_json:
        document = the_plan.to_json()
        if changes is not None:
            document["changes"] = [
                {"action": c.action, "component": c.name, "reason": c.reason} for c in changes
            ]
        print(json.dumps(document, indent=2))
        raise typer.Exit(2 if changes else 0)
    _print_warnings(loaded, the_plan)
    from expert_deploy.cli._plan_table import print_plan

    print_plan(loaded, the_plan)
    if changes is None:
        raise typer.Exit(0)
    if not changes:
        print(f"deployed from {planned.settings.workdir}: no changes; it matches the inventory")
        raise typer.Exit(0)
    print(f"changes against the deployment in {planned.settings.workdir}:")
    width = max(len(c.action) for c in changes)
    for change in changes:
        print(f"  {change.action:<{width}}  {change.name}  ({change.reason})")
    counts = Counter(c.action for c in changes)
    summary = ", ".join(f"{counts[a]} {_WORDS[a]}" for a in ("+", "~", "-/+", "-") if counts[a])
    print(f"{summary}; `expert-deploy up` applies them (or `swap` for one expert)")
    raise typer.Exit(2)


_WORDS = {"+": "to add", "~": "to update in place", "-/+": "to replace", "-": "to remove"}
