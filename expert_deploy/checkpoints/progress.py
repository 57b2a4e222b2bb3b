"""Rich progress bars for checkpoint downloads, fed through huggingface_hub's ``tqdm_class`` hook.

``snapshot_download`` makes three bars from the class it is given: one counting files
(``hf_thread_map``), one counting bytes written to disk and one counting network bytes. We show
the first two per checkpoint; the network one would only repeat the bytes for plain HTTP.
Only the small part of tqdm's interface that huggingface_hub calls is implemented.
"""

from __future__ import annotations

import threading
from types import TracebackType
from typing import Any, ClassVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.text import Text

#: The description huggingface_hub gives its network-bytes bar (see module docstring).
_TRANSFER_BAR_PREFIX = "Downloading bytes"


class _AmountColumn(ProgressColumn):
    """Bytes as ``1.2/4.9 GB`` for byte tasks, ``3/11`` for file tasks."""

    def __init__(self) -> None:
        super().__init__()
        self._bytes = DownloadColumn()
        self._count = MofNCompleteColumn()

    def render(self, task: Task) -> Text:
        column = self._bytes if task.fields.get("unit") == "B" else self._count
        rendered = column.render(task)
        return rendered if isinstance(rendered, Text) else Text(str(rendered))


class _SpeedColumn(ProgressColumn):
    def __init__(self) -> None:
        super().__init__()
        self._speed = TransferSpeedColumn()

    def render(self, task: Task) -> Text:
        return self._speed.render(task) if task.fields.get("unit") == "B" else Text("")


class DownloadProgress:
    """Bars for bytes and files per checkpoint; silent when stderr is not a terminal.

    Use as a context manager around the downloads; :meth:`bar_class` gives the
    ``tqdm_class`` to hand to ``snapshot_download`` for one checkpoint.
    """

    def __init__(self, console: Console | None = None, *, enabled: bool | None = None) -> None:
        console = console or Console(stderr=True)
        self.enabled = console.is_terminal if enabled is None else enabled
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            _AmountColumn(),
            _SpeedColumn(),
            TimeRemainingColumn(),
            console=console,
            disable=not self.enabled,
        )

    def __enter__(self) -> DownloadProgress:
        self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._progress.stop()

    @classmethod
    def quiet(cls) -> DownloadProgress:
        """Progress that shows nothing (and keeps huggingface_hub's own bars off)."""
        return cls(Console(quiet=True), enabled=False)

    def bar_class(self, label: str) -> type[RichBar]:
        """A tqdm-compatible class whose bars appear as ``label files`` and ``label bytes``."""
        return type("RichBar", (RichBar,), {"progress": self._progress, "label": label})


class RichBar:
    """The subset of ``tqdm`` that huggingface_hub's snapshot download calls, drawn by rich."""

    progress: ClassVar[Progress]
    label: ClassVar[str]

    def __init__(self, *_args: Any, **kwargs: Any) -> None:
        self._lock = threading.Lock()
        self.n: float = kwargs.get("initial") or 0
        self._total: float | None = kwargs.get("total")
        self.disable = False
        self.format_dict: dict[str, Any] = {"rate": None}
        unit = "B" if kwargs.get("unit") == "B" else "files"
        self._task: TaskID | None = None
        if not str(kwargs.get("desc") or "").startswith(_TRANSFER_BAR_PREFIX):
            self._task = self.progress.add_task(
                f"{self.label} {'bytes' if unit == 'B' else 'files'}",
                total=self._total or None,
                completed=self.n,
                unit=unit,
            )

    @property
    def total(self) -> float | None:
        return self._total

    @total.setter
    def total(self, value: float | None) -> None:
        self._total = value
        self.refresh()

    def update(self, n: float | None = 1) -> None:
        with self._lock:
            self.n += n or 0
        if self._task is not None:
            self.progress.update(self._task, advance=n or 0)

    def refresh(self) -> None:
        if self._task is not None:
            self.progress.update(self._task, total=self._total or None, completed=self.n)

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        """Ignored: the bar keeps the checkpoint's label."""

    set_description_str = set_description

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        """Ignored: rich computes the speed itself."""

    def close(self) -> None:
        self.refresh()

    def __enter__(self) -> RichBar:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
