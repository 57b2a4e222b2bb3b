"""``doctor``: is this machine ready for a deployment?"""

from __future__ import annotations

import json

import typer

from expert_deploy.cli._context import settings_for
from expert_deploy.cli._options import JsonOpt, WorkdirOpt
from expert_deploy.doctor import Needs, exit_code, run_checks

_MARK = {"pass": "ok  ", "warn": "warn", "fail": "FAIL"}


def doctor(
    inventory: str | None = typer.Option(
        None, "--inventory", "-i", help="Check what this inventory needs (else only warn)."
    ),
    workdir: WorkdirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Check python, extras, docker, GPUs, disk, HF token, nginx and tritonserver.

    Exit 0 when nothing failed (warnings allowed), 1 when a check failed, 2 on usage errors.
    """
    settings = settings_for(workdir)
    needs = Needs()
    if inventory is not None:
        from expert_deploy.inventory import load_inventory, resolve_inventory_path

        path = resolve_inventory_path(inventory, settings.inventories_dir)
        needs = Needs.of(load_inventory(path, settings.engines_dir).inventory)
    results = run_checks(settings, needs)
    if as_json:
        print(json.dumps([r.__dict__ for r in results], indent=2))
    else:
        for result in results:
            print(f"{_MARK[result.status]}  {result.name:<15} {result.detail}")
    raise typer.Exit(exit_code(results))
