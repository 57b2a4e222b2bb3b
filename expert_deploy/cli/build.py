"""``build``: the whole artifact pipeline — fetch → engines → router → render → lock.

One live display while it works (the current step, a line per expert, download bars) and a
summary at the end: per expert its checkpoint, engine key and status; the router hash; the
rendered files; seconds per step; how the lock moved.
"""

from __future__ import annotations

import functools
import resource
import threading
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn
from rich.table import Table

from expert_deploy.cli._context import load_and_plan
from expert_deploy.cli._options import InventoryOpt, WorkdirOpt

if TYPE_CHECKING:
    from expert_deploy.artifacts.prepare import ExpertOutcome, Prepared
    from expert_deploy.checkpoints.progress import DownloadProgress

_STYLE = {"built": "green", "cached": "cyan", "failed": "red", "skipped": "dim"}


class RichProgress:
    """The pipeline's one live display: a step line, a line per expert, download bars.

    Download bars come from :class:`~expert_deploy.checkpoints.progress.RichBar` drawing
    into the same rich ``Progress``, so two live displays never fight over the terminal.
    Silent when stderr is not a terminal (logs, CI).
    """

    def __init__(self, console: Console | None = None) -> None:
        self._console = console or Console(stderr=True)
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            console=self._console,
            disable=not self._console.is_terminal,
        )
        self._step = self._progress.add_task("starting", total=None)
        self._experts: dict[str, TaskID] = {}
        self._lock = threading.Lock()

    def __enter__(self) -> RichProgress:
        self._progress.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._progress.stop()

    def step(self, name: str) -> None:
        self._progress.update(self._step, description=f"[bold]{name}[/]")

    def update(self, expert_id: str, message: str) -> None:
        with self._lock:  # builds report from several threads
            task = self._experts.get(expert_id)
            text = f"  {expert_id}: {message}"
            if task is None:
                self._experts[expert_id] = self._progress.add_task(text, total=None)
            else:
                self._progress.update(task, description=text)

    def downloads(self) -> DownloadProgress:
        from expert_deploy.checkpoints.progress import DownloadProgress, RichBar

        shared = self._progress

        class _Shared(DownloadProgress):
            """Download bars drawn into the pipeline's display instead of their own."""

            def __init__(self) -> None:
                self.enabled = True

            def bar_class(self, label: str) -> type[RichBar]:
                return type("RichBar", (RichBar,), {"progress": shared, "label": label})

        return _Shared()


def _console() -> Console:
    probe = Console()
    # Piped output (logs, CI) would otherwise be cut to 80 columns and lose keys and hashes.
    return probe if probe.is_terminal else Console(width=max(probe.width, 160))


def print_summary(
    outcomes: Sequence[ExpertOutcome],
    step_seconds: Mapping[str, float],
    prepared: Prepared | None = None,
    console: Console | None = None,
) -> None:
    """Per expert: checkpoint, engine key, status; then router, rendered files, steps, lock."""
    console = console or _console()
    table = Table(title="experts", title_justify="left")
    for column in ("expert", "engine", "checkpoint", "fetch", "engine key", "status", "s", "note"):
        table.add_column(
            column,
            justify="right" if column == "s" else "left",
            no_wrap=column != "note",
            overflow="ellipsis",
        )
    for o in outcomes:
        table.add_row(
            o.expert_id,
            o.engine,
            o.checkpoint or "-",
            o.checkpoint_status,
            (o.engine_key or "-")[:12],
            f"[{_STYLE.get(o.status, 'white')}]{o.status}[/]",
            f"{o.seconds:.1f}",
            o.message[:80],
        )
    console.print(table)
    say = functools.partial(console.print, highlight=False)
    if prepared is not None:
        router = prepared.router
        say(f"router: {router.content_hash} ({router.status}) at {router.path}")
        parts = ", ".join(f"{c} {n}" for c, n in sorted(prepared.rendered.by_component().items()))
        say(f"rendered {len(prepared.rendered.files)} files: {parts}")
        if prepared.lock_changes:
            say(f"lock {prepared.lock_path}:")
            for change in prepared.lock_changes:
                say(f"  {change}")
        else:
            say(f"lock {prepared.lock_path}: unchanged")
    say("steps: " + ", ".join(f"{name} {seconds:.2f} s" for name, seconds in step_seconds.items()))


def build(
    inventory: InventoryOpt,
    *,
    expert: Annotated[
        list[str] | None,
        typer.Option(
            "--expert",
            "-e",
            help="Fetch and build only this expert (repeatable); the others must be built.",
        ),
    ] = None,
    workdir: WorkdirOpt = None,
    locked: Annotated[
        bool,
        typer.Option("--locked", help="Refuse to proceed if anything would change the lockfile."),
    ] = False,
    upgrade: Annotated[
        bool,
        typer.Option("--upgrade", help="Re-resolve branches and tags and move the lockfile."),
    ] = False,
    stand_in_image: Annotated[
        str | None,
        typer.Option(
            "--stand-in-image",
            help="Run this stand-in image instead of the toolchain container (tests; "
            "engines are marked stand-in and are not real).",
        ),
    ] = None,
    verify_hashes: Annotated[
        bool, typer.Option("--verify-hashes", help="Re-hash cached engines (slow for 70B).")
    ] = False,
) -> None:
    """Fetch checkpoints, build engines, fit the router, render, and write <inventory>.lock."""
    from expert_deploy.artifacts.prepare import PipelineError, prepare
    from expert_deploy.builder.engines import BuildOptions

    planned = load_and_plan(inventory, workdir)
    options: dict[str, Any] = {"stand_in_image": stand_in_image, "verify_hashes": verify_hashes}
    if stand_in_image is not None:
        # The stand-in needs no pinned memory, and sandboxed daemons cannot grant unlimited.
        options["memlock_bytes"] = resource.getrlimit(resource.RLIMIT_MEMLOCK)[1]
    try:
        with RichProgress() as progress:
            prepared = prepare(
                planned.settings,
                planned.loaded,
                planned.plan,
                progress=progress,
                experts=expert,
                locked=locked,
                upgrade=upgrade,
                build_options=BuildOptions(**options),
            )
    except PipelineError as error:
        print_summary(error.outcomes, error.step_seconds)
        raise
    for note in prepared.rendered.notes:
        typer.echo(f"note: {note}", err=True)
    print_summary(prepared.experts, prepared.step_seconds, prepared)
