"""What a run writes and prints: ``requests.jsonl``, ``summary.json``, CSVs and the table.

Per load point (``<out>/users-<N>/`` or ``<out>/rate-<R>/``):

* ``requests.jsonl``: one record per request (records.py), times relative to the start instant;
* ``summary.json``: configuration, load mode, versions, clock anchor, worker self-checks and
  every metric (metrics.summarize) with its sample count and the percentile method;
* ``summary.csv``: GenAI-Perf's columns (``Metric,avg,min,max,p99,p95,p90,p75,p50,p25,p10,p5,p1``);
* ``windows.csv``: window start, tokens, tokens/s, in-flight, completions, errors.

Per run: ``sweep.json`` (every point's summary) and ``sweep.csv`` (one row per point).
"""

from __future__ import annotations

import csv
import json
import math
import platform
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from expert_deploy.bench.driver import RunResult
from expert_deploy.bench.metrics import Phase, Slo, latency_series, percentile, summarize
from expert_deploy.bench.records import write_records

CSV_PERCENTILES = (99, 95, 90, 75, 50, 25, 10, 5, 1)
SWEEP_COLUMNS = (
    "point",
    "users",
    "rate_rps",
    "processes",
    "requests_ok",
    "errors",
    "ttft_p50_ms",
    "ttft_p99_ms",
    "tpot_mean_ms",
    "tpot_p99_ms",
    "itl_p50_ms",
    "e2e_p99_ms",
    "user_tok_s_mean",
    "user_tok_s_std",
    "system_tok_s_mean",
    "request_rps",
    "goodput_rps",
    "peak_inflight",
    "client_saturated",
)


def point_name(result: RunResult) -> str:
    """``users-<N>`` (closed loop) or ``rate-<R>`` (open loop)."""
    spec = result.spec
    if spec.mode == "open":
        return f"rate-{spec.rate_rps:g}"
    return f"users-{spec.users}"


def build_summary(
    result: RunResult,
    *,
    window_s: float,
    slo: Slo,
    workload: dict[str, Any],
) -> dict[str, Any]:
    """The JSON summary of one load point."""
    spec = result.spec
    metrics = summarize(
        result.records, Phase(result.t0_ns, result.t1_ns), window_s=window_s, slo=slo
    )
    workers = [asdict(w) for w in result.workers]
    return {
        "point": point_name(result),
        "target": result.target.label,
        "protocol": result.target.protocol,
        "load": {
            **asdict(spec),
            "mode": "closed loop" if spec.mode == "closed" else "open loop (Poisson)",
            "processes": len(result.workers),
            "peak_inflight": sum(w.peak_inflight for w in result.workers),
            "configured_concurrency": spec.users if spec.mode == "closed" else None,
        },
        "workload": workload,
        "clock": {
            "records": "ns relative to the start instant, time.perf_counter_ns (CLOCK_MONOTONIC)",
            "wall_anchor_ns": result.wall_anchor_ns,
        },
        "client": {
            "workers": workers,
            "saturated_workers": [w.index for w in result.workers if w.is_saturated],
            "loop_lag_p99_ms_max": max((w.loop_lag_p99_ms for w in result.workers), default=None),
        },
        "versions": _versions(),
        "metrics": metrics,
    }


def _versions() -> dict[str, str]:
    from importlib import metadata

    versions = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in ("expert-deploy", "grpcio", "tritonclient", "uvloop"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def write_point(directory: Path, result: RunResult, summary: dict[str, Any]) -> None:
    """Write every file of one load point into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    write_records(directory / "requests.jsonl", result.records)
    (directory / "summary.json").write_text(json.dumps(summary, indent=2, default=_json) + "\n")
    series = latency_series(result.records, Phase(result.t0_ns, result.t1_ns))
    with (directory / "summary.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Metric", "avg", "min", "max", *(f"p{p}" for p in CSV_PERCENTILES)])
        for name, values in series.items():
            if not values:
                writer.writerow([name, *([""] * (3 + len(CSV_PERCENTILES)))])
                continue
            row = [math.fsum(values) / len(values), min(values), max(values)]
            row += [percentile(values, p) for p in CSV_PERCENTILES]
            writer.writerow([name, *(f"{v:.6g}" for v in row)])
    with (directory / "windows.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["start_s", "tokens", "tokens_per_s", "inflight", "completions", "errors", "complete"]
        )
        for window in summary["metrics"]["windows"]:
            writer.writerow(
                [
                    window["start_s"],
                    window["tokens"],
                    f"{window['tokens_per_s']:.3f}",
                    window["inflight"],
                    window["completions"],
                    window["errors"],
                    int(window["is_complete"]),
                ]
            )


def sweep_row(summary: dict[str, Any]) -> dict[str, Any]:
    """One ``sweep.csv`` row: the headline figures of a load point."""
    m, load = summary["metrics"], summary["load"]
    return {
        "point": summary["point"],
        "users": load["users"] if load["rate_rps"] is None else None,
        "rate_rps": load["rate_rps"],
        "processes": load["processes"],
        "requests_ok": m["requests"]["ok"],
        "errors": m["requests"]["errors"],
        "ttft_p50_ms": m["ttft_ms"]["p50"],
        "ttft_p99_ms": m["ttft_ms"]["p99"],
        "tpot_mean_ms": m["tpot_ms"]["mean"],
        "tpot_p99_ms": m["tpot_ms"]["p99"],
        "itl_p50_ms": m["itl_ms"]["p50"],
        "e2e_p99_ms": m["e2e_ms"]["p99"],
        "user_tok_s_mean": m["user_throughput_tok_s"]["mean"],
        "user_tok_s_std": m["user_throughput_tok_s"]["std"],
        "system_tok_s_mean": m["system_throughput"]["mean_tok_s"],
        "request_rps": m["request_throughput_rps"],
        "goodput_rps": m["goodput"]["rps"],
        "peak_inflight": load["peak_inflight"],
        "client_saturated": bool(summary["client"]["saturated_workers"]),
    }


def write_sweep(out: Path, summaries: Sequence[dict[str, Any]]) -> Path:
    """``sweep.json`` (all summaries, windows included) and ``sweep.csv``; returns the JSON path."""
    path = out / "sweep.json"
    path.write_text(json.dumps({"points": list(summaries)}, indent=2, default=_json) + "\n")
    with (out / "sweep.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=SWEEP_COLUMNS)
        writer.writeheader()
        for summary in summaries:
            writer.writerow({k: _cell(v) for k, v in sweep_row(summary).items()})
    return path


def _cell(value: Any) -> Any:
    return f"{value:.6g}" if isinstance(value, float) else ("" if value is None else value)


def _json(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"


def wide_console() -> Any:
    """A rich console; at least 160 columns when writing to a file or pipe (no terminal)."""
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=160)


def print_table(summaries: Sequence[dict[str, Any]]) -> None:
    """The terminal summary: one row per load point, every figure with its formula's name."""
    from rich.table import Table

    table = Table(title="expert-deploy bench (times in ms; percentiles: linear interpolation)")
    for column in (
        "point",
        "ok",
        "err",
        "TTFT p50",
        "TTFT p90",
        "TTFT p99",
        "TPOT mean",
        "TPOT p99",
        "ITL p50",
        "E2E p99",
        "user tok/s",
        "sys tok/s",
        "req/s",
        "goodput %",
    ):
        table.add_column(column, justify="right")
    notes: list[str] = []
    for summary in summaries:
        m = summary["metrics"]
        goodput = m["goodput"]["share"]
        user = m["user_throughput_tok_s"]
        table.add_row(
            summary["point"],
            str(m["requests"]["ok"]),
            str(m["requests"]["errors"] + m["requests"]["incomplete"]),
            _fmt(m["ttft_ms"]["p50"], 2),
            _fmt(m["ttft_ms"]["p90"], 2),
            _fmt(m["ttft_ms"]["p99"], 2),
            _fmt(m["tpot_ms"]["mean"], 2),
            _fmt(m["tpot_ms"]["p99"], 2),
            _fmt(m["itl_ms"]["p50"], 2),
            _fmt(m["e2e_ms"]["p99"], 1),
            f"{_fmt(user['mean'])} ± {_fmt(user['std'])}",
            _fmt(m["system_throughput"]["mean_tok_s"]),
            _fmt(m["request_throughput_rps"], 2),
            _fmt(None if goodput is None else goodput * 100, 1),
        )
        if summary["client"]["saturated_workers"]:
            notes.append(
                f"{summary['point']}: client worker(s) {summary['client']['saturated_workers']} "
                "above 80 % CPU; timestamps may be late, use more --processes"
            )
        if m["ttft_ms"]["is_small_sample"]:
            notes.append(f"{summary['point']}: {m['ttft_ms']['n']} samples, p99 is interpolated")
        if m["requests"]["errors_by_kind"]:
            notes.append(f"{summary['point']}: errors {m['requests']['errors_by_kind']}")
    console = wide_console()
    console.print(table)
    for note in notes:
        console.print(f"note: {note}")
