"""``validate`` and ``plan``: read an inventory, report problems, show placement and memory."""

from __future__ import annotations

import json
import sys

import typer

from expert_deploy.cli._context import settings_for
from expert_deploy.cli._options import InventoryOpt, JsonOpt, WorkdirOpt
from expert_deploy.errors import InventoryError, Problem
from expert_deploy.inventory import LoadedInventory, load_inventory, resolve_inventory_path
from expert_deploy.plan.planner import Plan, make_plan


def _load_and_plan(inventory: str, workdir: WorkdirOpt) -> tuple[LoadedInventory, Plan]:
    """Load, check and plan; raise one InventoryError holding every problem found."""
    settings = settings_for(workdir)
    path = resolve_inventory_path(inventory, settings.inventories_dir)
    loaded = load_inventory(path, settings.engines_dir)
    plan = make_plan(loaded, settings.hf_home)
    if plan.errors:
        problems = [loaded.source.problem(f.path, f.message) for f in plan.errors]
        raise InventoryError(sorted(problems, key=lambda p: p.line or 0))
    return loaded, plan


def _print_warnings(loaded: LoadedInventory, plan: Plan) -> None:
    for finding in plan.warnings:
        problem: Problem = loaded.source.problem(finding.path, finding.message)
        print(f"warning: {problem}", file=sys.stderr)


def validate(inventory: InventoryOpt, workdir: WorkdirOpt = None) -> None:
    """Check an inventory: schema, cross-field rules, placement, ports and memory fit."""
    loaded, plan = _load_and_plan(inventory, workdir)
    _print_warnings(loaded, plan)
    inv = loaded.inventory
    print(
        f"{loaded.path}: valid — {len(inv.experts)} experts on {len(plan.servers)} servers, "
        f"{len(inv.hosts)} host(s), {len(plan.gateways)} gateway replicas"
    )


def plan(inventory: InventoryOpt, workdir: WorkdirOpt = None, as_json: JsonOpt = False) -> None:
    """Show where every expert runs, its ports, and whether it fits in GPU memory."""
    loaded, the_plan = _load_and_plan(inventory, workdir)
    if as_json:
        print(json.dumps(the_plan.to_json(), indent=2))
        return
    _print_warnings(loaded, the_plan)
    from expert_deploy.cli._plan_table import print_plan

    print_plan(loaded, the_plan)
    raise typer.Exit(0)
