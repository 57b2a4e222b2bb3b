"""``swap``: replace one running expert with the inventory's new definition of it."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from expert_deploy.cli._context import load_and_plan
from expert_deploy.cli._options import InventoryOpt, WorkdirOpt


def swap(
    inventory: InventoryOpt,
    expert: Annotated[str, typer.Argument(help="Id of the expert to replace.")],
    *,
    drain_timeout: Annotated[
        float,
        typer.Option("--drain-timeout", min=0, help="Seconds to wait for its in-flight requests."),
    ] = 60.0,
    workdir: WorkdirOpt = None,
) -> None:
    """Swap one expert: build, drain on every gateway, stop, start, re-admit; roll back on failure.

    The other experts, the gateways and NGINX keep running untouched.
    """
    from expert_deploy.runtime.launchers import launcher_for
    from expert_deploy.runtime.swap import swap_expert

    planned = load_and_plan(inventory, workdir)
    settings, loaded = planned.settings, planned.loaded
    console = Console(stderr=True)
    launcher = launcher_for(loaded.inventory.runtime.kind, settings, loaded)
    with console.status(f"swapping {expert}", spinner="dots") as status:
        result = swap_expert(
            settings,
            loaded,
            planned.plan,
            expert,
            launcher=launcher,
            drain_deadline_s=drain_timeout,
            progress=lambda message: status.update(f"{expert}: {message}"),
        )
    for name in result.pending:
        console.print(f"note: {name} changed in the inventory too; `expert-deploy up` applies it")
    if result.outcome == "unchanged":
        typer.echo(f"{expert}: nothing to swap, the running servers match the inventory")
        return
    if result.abandoned:
        console.print(
            f"warning: {result.abandoned} request(s) were still open on the old {expert} "
            f"after {drain_timeout:g} s and were cut off"
        )
    old = ", ".join(h[:12] for h in result.old_hashes)
    new = ", ".join(h[:12] for h in result.new_hashes)
    typer.echo(
        f"swapped {expert} in {result.seconds:.1f} s: {old} -> {new}; "
        f"routing generation {result.generation}"
    )
