"""``fetch``: download and verify every expert's checkpoint, record what each revision is."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated

import typer

from expert_deploy.cli._context import load
from expert_deploy.cli._options import InventoryOpt, WorkdirOpt
from expert_deploy.errors import ExpertDeployError, UsageError
from expert_deploy.inventory import Expert
from expert_deploy.inventory.messages import did_you_mean

if TYPE_CHECKING:
    from expert_deploy.checkpoints import Checkpoint

ExpertOpt = Annotated[
    list[str] | None,
    typer.Option("--expert", "-e", help="Fetch only this expert (repeat for several)."),
]


def fetch(inventory: InventoryOpt, expert: ExpertOpt = None, workdir: WorkdirOpt = None) -> None:
    """Download and verify each expert's checkpoint; write <workdir>/checkpoints.json."""
    settings, loaded = load(inventory, workdir)
    chosen = _select(loaded.inventory.experts, expert or [])
    for skipped in (e for e in chosen if e.model is None or e.engine == "synthetic"):
        print(f"note: {skipped.id} is synthetic (no weights); nothing to fetch", file=sys.stderr)
    try:
        from expert_deploy.checkpoints import (
            DownloadProgress,
            FetchFailedError,
            fetch_all,
            read_record,
            write_record,
        )
    except ModuleNotFoundError as error:
        raise ExpertDeployError(
            f"fetch needs {error.name}: pip install 'expert-deploy[build]'"
        ) from None
    failure: FetchFailedError | None = None
    with DownloadProgress() as progress:
        try:
            done = fetch_all(chosen, settings, progress=progress)
        except FetchFailedError as error:
            done, failure = error.completed, error
    failed = failure.failures if failure else {}
    dropped = {f"{e.model.repo}@{e.model.revision}" for e in chosen if e.id in failed and e.model}
    # A failed checkpoint loses its old entry: the record must not vouch for it any more.
    if done or dropped & read_record(settings.workdir).keys():
        write_record(settings.workdir, done.values(), drop=dropped)
    _print_summary(chosen, done, set(failed))
    if failure is not None:
        raise failure


def _select(experts: Sequence[Expert], wanted: list[str]) -> list[Expert]:
    """The experts named by ``--expert`` (all when none is named), in inventory order."""
    known = {e.id for e in experts}
    for name in wanted:
        if name not in known:
            raise UsageError(
                f"no expert {name!r} in the inventory{did_you_mean(name, sorted(known))}; "
                f"known: {', '.join(sorted(known))}"
            )
    return [e for e in experts if not wanted or e.id in wanted]


def _print_summary(
    experts: Sequence[Expert], done: dict[str, Checkpoint], failed: set[str]
) -> None:
    from rich.console import Console
    from rich.table import Table

    probe = Console()
    # Piped output (logs, CI) would otherwise be cut to 80 columns and lose the commit ids.
    console = probe if probe.is_terminal else Console(width=max(probe.width, 160))
    table = Table(title="checkpoints")
    for column in ("expert", "repo", "revision → commit", "files", "size", "status"):
        table.add_column(column, justify="right" if column in ("files", "size") else "left")
    for expert in experts:
        model = expert.model
        if expert.id in done:
            cp = done[expert.id]
            status = "[dim]cached[/dim]" if cp.cached else "[green]downloaded[/green]"
            arrow = cp.revision if cp.revision == cp.commit else f"{cp.revision} → {cp.commit}"
            row = (cp.repo, arrow, str(len(cp.files)), _size(cp.size_bytes), status)
        elif expert.id in failed and model is not None:
            row = (model.repo, model.revision, "", "", "[red]failed[/red]")
        else:
            row = ("", "", "", "", "[dim]synthetic[/dim]")
        table.add_row(expert.id, *row)
    console.print(table)


def _size(size_bytes: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size_bytes >= scale:
            return f"{size_bytes / scale:.1f} {unit}"
    return f"{size_bytes} B"
