"""``render``: write every deployment file into ``<workdir>/rendered/`` without building."""

from __future__ import annotations

import sys

from expert_deploy.cli._context import settings_for
from expert_deploy.cli._options import InventoryOpt, WorkdirOpt
from expert_deploy.errors import InventoryError
from expert_deploy.inventory import load_inventory, resolve_inventory_path
from expert_deploy.plan.planner import make_plan


def render(inventory: InventoryOpt, workdir: WorkdirOpt = None) -> None:
    """Render Triton model repositories, nginx.conf, gateway configs and Ansible variables.

    Engine and checkpoint paths not built yet are the ones the workdir implies (say so).
    """
    from expert_deploy.render import render_deployment

    settings = settings_for(workdir)
    path = resolve_inventory_path(inventory, settings.inventories_dir)
    loaded = load_inventory(path, settings.engines_dir)
    plan = make_plan(loaded, settings.hf_home)
    if plan.errors:
        problems = [loaded.source.problem(f.path, f.message) for f in plan.errors]
        raise InventoryError(sorted(problems, key=lambda p: p.line or 0))
    result = render_deployment(
        loaded, plan, settings, router_dir=settings.workdir.resolve() / "router"
    )
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"rendered {len(result.files)} files into {result.root}")
    for component, count in sorted(result.by_component().items()):
        print(f"  {component}: {count} file{'s' if count != 1 else ''}")
