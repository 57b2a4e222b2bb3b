"""``prepare``: every artifact a plan needs, in order, then the rendered files.

One entry point for ``build`` and ``up`` (and ``swap`` for one expert): the router model,
then render. Each step reuses what its inputs say is already there.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from expert_deploy.artifacts.router import RouterArtifact, prepare_router
from expert_deploy.inventory.loader import LoadedInventory
from expert_deploy.plan.planner import Plan
from expert_deploy.render.deployment import RenderResult, render_deployment
from expert_deploy.settings import Settings


@dataclass(frozen=True)
class Prepared:
    """What ``prepare`` produced: the rendered files and the identities the state records."""

    rendered: RenderResult
    router: RouterArtifact
    #: expert id → engine or checkpoint hash, for experts that have one.
    artifact_hashes: Mapping[str, str] = field(default_factory=dict)


def prepare(settings: Settings, loaded: LoadedInventory, plan: Plan) -> Prepared:
    """Router model, then every rendered file of ``plan``.

    Raises:
        RouterError, RenderError: a step failed; nothing already rendered is lost.
    """
    router = prepare_router(loaded.inventory.router, settings.workdir)
    rendered = render_deployment(loaded, plan, settings, router_dir=router.path)
    return Prepared(rendered, router)
