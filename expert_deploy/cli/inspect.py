"""``validate`` and ``plan``: read an inventory, report problems, show placement and memory."""

from __future__ import annotations

import json
import sys

import typer

from expert_deploy.cli._context import Planned, load_and_plan
from expert_deploy.cli._options import InventoryOpt, JsonOpt, WorkdirOpt
from expert_deploy.errors import Problem
from expert_deploy.inventory import LoadedInventory
from expert_deploy.plan.planner import Plan


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


def plan(inventory: InventoryOpt, workdir: WorkdirOpt = None, as_json: JsonOpt = False) -> None:
    """Show where every expert runs, its ports, and whether it fits in GPU memory."""
    planned = load_and_plan(inventory, workdir)
    _check_lock(planned)
    loaded, the_plan = planned.loaded, planned.plan
    if as_json:
        print(json.dumps(the_plan.to_json(), indent=2))
        return
    _print_warnings(loaded, the_plan)
    from expert_deploy.cli._plan_table import print_plan

    print_plan(loaded, the_plan)
    raise typer.Exit(0)
