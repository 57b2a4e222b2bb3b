"""``render``: write every deployment file into ``<workdir>/rendered/`` without building."""

from __future__ import annotations

import sys

from expert_deploy.cli._context import load_and_plan
from expert_deploy.cli._options import InventoryOpt, WorkdirOpt


def render(inventory: InventoryOpt, workdir: WorkdirOpt = None) -> None:
    """Render Triton model repositories, nginx.conf, gateway configs and Ansible variables.

    Engine and checkpoint paths not built yet are the ones the workdir implies (say so).
    """
    from expert_deploy.render import render_deployment

    planned = load_and_plan(inventory, workdir)
    settings, loaded, plan = planned.settings, planned.loaded, planned.plan
    result = render_deployment(
        loaded, plan, settings, router_dir=settings.workdir.resolve() / "router"
    )
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"rendered {len(result.files)} files into {result.root}")
    for component, count in sorted(result.by_component().items()):
        print(f"  {component}: {count} file{'s' if count != 1 else ''}")
