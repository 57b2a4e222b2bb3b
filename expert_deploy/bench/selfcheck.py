"""How far the simulator's own timing can be trusted, measured against ``synthetic`` experts.

A synthetic expert sleeps a configured TTFT before its first token and a configured TPOT
between tokens, so every measured interval has a known floor. Per load point and path:

* ``TTFT error = measured TTFT − configured TTFT`` and ``ITL error = measured gap − configured
  TPOT`` (p50/p99). Direct to Triton this is the simulator's error *plus* Triton's and the
  Python backend's own delay (asyncio sleeps overshoot), so it is an upper bound on the
  simulator's error; through the gateway it also holds the gateway's added time.
* The simulator's own lag, measured inside every worker: how long a callback queued on the
  event loop waits before it runs (p99 over the run, worst worker). Arrival timestamps are
  taken by such callbacks, so this is the client's timestamp error itself.
* Gateway added time: TTFT p50/p99 through the gateway minus the same direct to Triton, at the
  same number of streams (ARCHITECTURE.md's gateway overhead budget).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from expert_deploy.bench.driver import RunResult
from expert_deploy.bench.metrics import Phase, itl_s, percentile, ttft_s


@dataclass(frozen=True)
class Synthetic:
    """What the synthetic experts were configured with."""

    ttft_ms: float
    tpot_ms: float
    tokens: int


def timing_errors(result: RunResult, synthetic: Synthetic) -> dict[str, Any]:
    """Measured minus configured TTFT and ITL (ms) over the measurement phase's good requests."""
    phase = Phase(result.t0_ns, result.t1_ns)
    ok = [r for r in result.records if phase.holds(r) and r.status == "ok"]
    ttft = [t * 1000 - synthetic.ttft_ms for t in (ttft_s(r) for r in ok) if t is not None]
    itl = [gap * 1000 - synthetic.tpot_ms for r in ok for gap in itl_s(r)]
    lag = [w.loop_lag_p99_ms for w in result.workers if not math.isnan(w.loop_lag_p99_ms)]
    short = sum(1 for r in ok if r.tokens != synthetic.tokens)
    return {
        "requests": len(ok),
        "errors": sum(1 for r in result.records if phase.holds(r) and r.status != "ok"),
        "ttft_error_p50_ms": percentile(ttft, 50),
        "ttft_error_p99_ms": percentile(ttft, 99),
        "ttft_p50_ms": percentile(ttft, 50) + synthetic.ttft_ms if ttft else math.nan,
        "ttft_p99_ms": percentile(ttft, 99) + synthetic.ttft_ms if ttft else math.nan,
        "itl_error_p50_ms": percentile(itl, 50),
        "itl_error_p99_ms": percentile(itl, 99),
        "client_lag_p99_ms": max(lag) if lag else math.nan,
        "client_cpu_max": max((w.cpu_share for w in result.workers), default=math.nan),
        "processes": len(result.workers),
        "peak_inflight": sum(w.peak_inflight for w in result.workers),
        "wrong_token_count": short,
    }


def with_gateway_added(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add ``added_ttft_p50_ms``/``p99`` to gateway rows: minus the direct row at equal users."""
    direct = {r["users"]: r for r in rows if r["path"] == "direct"}
    result = []
    for row in rows:
        base = direct.get(row["users"])
        added: dict[str, Any] = {"added_ttft_p50_ms": None, "added_ttft_p99_ms": None}
        if row["path"] != "direct" and base is not None:
            added = {
                "added_ttft_p50_ms": row["ttft_p50_ms"] - base["ttft_p50_ms"],
                "added_ttft_p99_ms": row["ttft_p99_ms"] - base["ttft_p99_ms"],
            }
        result.append({**row, **added})
    return result


def print_selfcheck(rows: Sequence[dict[str, Any]], synthetic: Synthetic) -> None:
    from rich.table import Table

    from expert_deploy.bench.report import wide_console

    table = Table(
        title=f"simulator self-check: synthetic TTFT {synthetic.ttft_ms} ms, TPOT "
        f"{synthetic.tpot_ms} ms, {synthetic.tokens} tokens (errors = measured − configured, ms)"
    )
    columns = (
        ("users", "users"),
        ("path", "path"),
        ("procs", "processes"),
        ("ok", "requests"),
        ("err", "errors"),
        ("TTFT err p50", "ttft_error_p50_ms"),
        ("TTFT err p99", "ttft_error_p99_ms"),
        ("ITL err p50", "itl_error_p50_ms"),
        ("ITL err p99", "itl_error_p99_ms"),
        ("client lag p99", "client_lag_p99_ms"),
        ("client CPU", "client_cpu_max"),
        ("+TTFT p50", "added_ttft_p50_ms"),
        ("+TTFT p99", "added_ttft_p99_ms"),
    )
    for title, _ in columns:
        table.add_column(title, justify="right")
    for row in rows:
        table.add_row(*(_cell(row.get(key)) for _, key in columns))
    wide_console().print(table)


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)
