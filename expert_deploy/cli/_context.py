"""What every command needs from its environment, resolved once per invocation."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from expert_deploy.errors import InventoryError
from expert_deploy.inventory import LoadedInventory, load_inventory, resolve_inventory_path
from expert_deploy.plan.planner import Plan, make_plan
from expert_deploy.settings import Settings


def settings_for(workdir: Path | None) -> Settings:
    """Settings from the environment, with ``--workdir`` taking precedence when given."""
    settings = Settings.from_environ()
    return settings if workdir is None else replace(settings, workdir=workdir)


def load(inventory: str, workdir: Path | None) -> tuple[Settings, LoadedInventory]:
    """Settings plus the named inventory, loaded and checked.

    Raises:
        UsageError: no such inventory; InventoryError: it has problems.
    """
    settings = settings_for(workdir)
    path = resolve_inventory_path(inventory, settings.inventories_dir)
    return settings, load_inventory(path, settings.engines_dir)


@dataclass(frozen=True)
class Planned:
    settings: Settings
    loaded: LoadedInventory
    plan: Plan


def load_and_plan(inventory: str, workdir: Path | None) -> Planned:
    """Load, check and plan; every schema, semantic and plan error in one InventoryError."""
    settings, loaded = load(inventory, workdir)
    plan = make_plan(loaded, settings.hf_home)
    if plan.errors:
        problems = [loaded.source.problem(f.path, f.message) for f in plan.errors]
        raise InventoryError(sorted(problems, key=lambda p: p.line or 0))
    return Planned(settings, loaded, plan)
