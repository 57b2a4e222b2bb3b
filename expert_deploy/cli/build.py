"""``build``: the engines step — build or reuse a TensorRT-LLM engine per expert.

Shows one rich status line while it works and a summary table at the end.
"""

from __future__ import annotations

import threading
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from expert_deploy.cli._context import load_and_plan
from expert_deploy.cli._options import InventoryOpt, WorkdirOpt
from expert_deploy.errors import EngineBuildError

if TYPE_CHECKING:
    from expert_deploy.builder.engines import EngineResult

_STYLE = {"built": "green", "cached": "cyan", "failed": "red", "skipped": "dim"}


class RichProgress:
    """A single live status line naming the latest event of any expert."""

    def __init__(self, console: Console | None = None) -> None:
        self._console = console or Console(stderr=True)
        self._status = self._console.status("checking engine cache", spinner="dots")
        self._lock = threading.Lock()

    def __enter__(self) -> RichProgress:
        self._status.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._status.stop()

    def update(self, expert_id: str, message: str) -> None:
        with self._lock:  # builds report from several threads
            self._status.update(f"{expert_id}: {message}")


def print_results(results: list[EngineResult], console: Console | None = None) -> None:
    """Expert, key prefix, status, seconds (and a note) per expert."""
    table = Table(title="engines", title_justify="left")
    for column in ("expert", "key", "status", "seconds", "note"):
        table.add_column(column, justify="right" if column == "seconds" else "left")
    for r in results:
        note = r.message.splitlines()[0][:100] if r.message else (str(r.engine_dir or ""))
        table.add_row(
            r.expert_id,
            (r.key or "")[:12],
            f"[{_STYLE[r.status]}]{r.status}[/]",
            f"{r.seconds:.1f}",
            note,
        )
    (console or Console()).print(table)


def build(
    inventory: InventoryOpt,
    *,
    expert: Annotated[
        list[str] | None,
        typer.Option("--expert", "-e", help="Build only this expert (repeatable)."),
    ] = None,
    workdir: WorkdirOpt = None,
    stand_in_image: Annotated[
        str | None,
        typer.Option(
            "--stand-in-image",
            help="Run this stand-in image instead of the toolchain container (tests; "
            "engines are marked stand-in and are not real).",
        ),
    ] = None,
    calib_dataset: Annotated[
        Path | None,
        typer.Option("--calib-dataset", help="Local calibration dataset folder for fp8/int4_awq."),
    ] = None,
    verify_hashes: Annotated[
        bool, typer.Option("--verify-hashes", help="Re-hash cached engines (slow for 70B).")
    ] = False,
) -> None:
    """Build the TensorRT-LLM engines of an inventory; unchanged engines come from the cache."""
    from expert_deploy.builder.checkpoint_index import read_checkpoint_index
    from expert_deploy.builder.engines import BuildOptions, build_engines

    planned = load_and_plan(inventory, workdir)
    settings, loaded, plan = planned.settings, planned.loaded, planned.plan
    hub_cache = settings.hf_cache_dir
    checkpoints = read_checkpoint_index(settings.workdir, hub_cache)
    options = BuildOptions(
        experts=tuple(expert) if expert else None,
        stand_in_image=stand_in_image,
        calib_dataset=calib_dataset,
        verify_hashes=verify_hashes,
    )
    with RichProgress() as progress:
        results = build_engines(
            loaded, plan, checkpoints, settings, progress=progress, options=options
        )
    print_results(results)
    failed = [r for r in results if r.status == "failed"]
    if failed:
        first = failed[0]
        raise (
            EngineBuildError(first.expert_id, first.message) if first.error is None else first.error
        )
