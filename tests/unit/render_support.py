"""Render the shipped inventories into a temporary workdir (shared by the render tests)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from expert_deploy.inventory import load_inventory
from expert_deploy.inventory.loader import LoadedInventory
from expert_deploy.plan.planner import Plan, make_plan
from expert_deploy.render import RenderResult, render_deployment
from expert_deploy.settings import Settings

REPO = Path(__file__).resolve().parents[2]


def load(name_or_path: str | Path) -> tuple[LoadedInventory, Plan]:
    path = Path(name_or_path)
    if not path.suffix:
        path = REPO / "inventories" / f"{name_or_path}.yaml"
    loaded = load_inventory(path, REPO / "engines")
    return loaded, make_plan(loaded)


def render(name_or_path: str | Path, workdir: Path, **settings: object) -> RenderResult:
    loaded, plan = load(name_or_path)
    the_settings = replace(Settings(data_dir=REPO), workdir=workdir, **settings)  # type: ignore[arg-type]
    return render_deployment(loaded, plan, the_settings, router_dir=workdir / "router")


def with_toolchain(tmp_path: Path, inventory: str, toolchain: str) -> Path:
    """A copy of a shipped inventory that names another toolchain."""
    text = (REPO / "inventories" / f"{inventory}.yaml").read_text()
    text = text.replace("toolchain: trtllm-0.11", f"toolchain: {toolchain}")
    text = text.replace("router/c4-k8", str(REPO / "inventories" / "router" / "c4-k8"))
    path = tmp_path / f"{inventory}-{toolchain}.yaml"
    path.write_text(text)
    return path
