"""Two runs side by side: ``expert-deploy bench compare a.json b.json``.

Either file may be a run's ``sweep.json`` or one load point's ``summary.json``. Points are
matched by name (``users-100``, ``rate-20``); for each, the headline figures of A and B are
printed with the ratio B / A, so "the routed system against a direct-Triton baseline" or
"normal against uniform" reads in one table.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from expert_deploy.bench.errors import BenchError
from expert_deploy.bench.report import sweep_row

#: (row label, sweep_row key); the figures compared.
FIGURES: tuple[tuple[str, str], ...] = (
    ("TTFT p50 ms", "ttft_p50_ms"),
    ("TTFT p99 ms", "ttft_p99_ms"),
    ("TPOT mean ms", "tpot_mean_ms"),
    ("TPOT p99 ms", "tpot_p99_ms"),
    ("ITL p50 ms", "itl_p50_ms"),
    ("E2E p99 ms", "e2e_p99_ms"),
    ("user tok/s mean", "user_tok_s_mean"),
    ("system tok/s mean", "system_tok_s_mean"),
    ("requests/s", "request_rps"),
    ("errors", "errors"),
)


@dataclass(frozen=True)
class Run:
    label: str
    path: Path
    points: list[dict[str, Any]]


def load_run(path: Path) -> Run:
    """A sweep.json or summary.json.

    Raises:
        BenchError: the file is missing or is neither kind of file.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise BenchError(f"cannot read {path}: {error.strerror}") from None
    except ValueError:
        raise BenchError(f"{path} is not JSON; give a sweep.json or summary.json") from None
    points = data.get("points") if isinstance(data, dict) else None
    if points is None and isinstance(data, dict) and "metrics" in data:
        points = [data]
    if not isinstance(points, list) or not all(
        isinstance(p, dict) and "metrics" in p for p in points
    ):
        raise BenchError(
            f"{path} is not a bench result; give the sweep.json or summary.json a run wrote"
        )
    label = path.parent.name if path.name in ("sweep.json", "summary.json") else path.stem
    return Run(label or str(path), path, points)


def comparison_rows(a: Run, b: Run) -> list[tuple[str, str, Any, Any, float | None]]:
    """(point, figure, A, B, B/A) for every point the two runs share."""
    rows_b = {p["point"]: sweep_row(p) for p in b.points}
    rows: list[tuple[str, str, Any, Any, float | None]] = []
    shared = [p for p in a.points if p["point"] in rows_b]
    if not shared:
        names_a = [p["point"] for p in a.points]
        raise BenchError(
            f"{a.path} and {b.path} share no load point ({names_a} vs {sorted(rows_b)}); "
            "compare runs made with the same --users or --rate"
        )
    for point in shared:
        row_a, row_b = sweep_row(point), rows_b[point["point"]]
        for label, key in FIGURES:
            va, vb = row_a[key], row_b[key]
            ratio = None
            if isinstance(va, int | float) and isinstance(vb, int | float) and va:
                ratio = vb / va if not math.isnan(va) and not math.isnan(vb) else None
            rows.append((point["point"], label, va, vb, ratio))
    return rows


def print_comparison(
    a: Run, b: Run, rows: Sequence[tuple[str, str, Any, Any, float | None]]
) -> None:
    from rich.table import Table

    from expert_deploy.bench.report import wide_console

    table = Table(title=f"A = {a.label} ({a.path})   B = {b.label} ({b.path})")
    for column in ("point", "figure", "A", "B", "B / A"):
        table.add_column(column, justify="right" if column in ("A", "B", "B / A") else "left")
    for point, label, va, vb, ratio in rows:
        table.add_row(point, label, _fmt(va), _fmt(vb), "-" if ratio is None else f"{ratio:.3f}")
    wide_console().print(table)


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.3f}" if isinstance(value, float) else str(value)
