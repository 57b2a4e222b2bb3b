"""PNG figures in the style of the paper's (matplotlib, headless Agg backend).

* ``ttft_vs_users.png`` / ``tpot_vs_users.png``: a box plot per load point (whiskers at 1.5 IQR,
  no outlier dots) with the median joined by a line;
* ``user_throughput.png``: mean per-user throughput ``N / E2E`` with ± one standard deviation;
* ``p99_vs_users.png``: p99 response time (E2E) per load point, one line per run (``compare``
  draws uniform against normal this way);
* ``system_throughput.png``: tokens per window over the measurement phase, one line per load
  point (``--plot-points`` chooses which).

matplotlib is imported inside the functions so the CLI starts without it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _num(value: Any) -> float:
    """JSON ``null`` (no sample) as NaN, which matplotlib leaves out."""
    return float("nan") if value is None else float(value)


def _x(summary: Mapping[str, Any]) -> float:
    load = summary["load"]
    return float(load["rate_rps"] if load["rate_rps"] is not None else load["users"])


def _x_label(summaries: Sequence[Mapping[str, Any]]) -> str:
    is_open = any(s["load"]["rate_rps"] is not None for s in summaries)
    return "offered load (requests/s)" if is_open else "concurrent users"


def sweep_plots(
    out: Path,
    summaries: Sequence[Mapping[str, Any]],
    samples: Sequence[Mapping[str, Sequence[float]]],
    *,
    throughput_points: Sequence[str] | None = None,
) -> list[Path]:
    """Write the sweep figures for one run; ``samples[i]`` are point i's per-request series."""
    plt = _pyplot()
    written: list[Path] = []
    labels = [f"{_x(s):g}" for s in summaries]
    for metric, title, name in (
        ("ttft_ms", "Time to first token", "ttft_vs_users.png"),
        ("tpot_ms", "Time per output token", "tpot_vs_users.png"),
    ):
        figure, axes = plt.subplots(figsize=(7, 4))
        data = [list(series[metric]) or [float("nan")] for series in samples]
        positions = list(range(1, len(data) + 1))
        axes.boxplot(data, positions=positions, showfliers=False)
        medians = [_num(s["metrics"][metric]["p50"]) for s in summaries]
        axes.plot(positions, medians, marker="o", label="median")
        axes.set_xticks(positions, labels)
        axes.set_xlabel(_x_label(summaries))
        axes.set_ylabel(f"{metric.removesuffix('_ms').upper()} (ms)")
        axes.set_title(title)
        axes.legend()
        written.append(_save(figure, out / name, plt))

    figure, axes = plt.subplots(figsize=(7, 4))
    means = [_num(s["metrics"]["user_throughput_tok_s"]["mean"]) for s in summaries]
    stds = [_num(s["metrics"]["user_throughput_tok_s"]["std"]) for s in summaries]
    axes.errorbar([_x(s) for s in summaries], means, yerr=stds, marker="o", capsize=4)
    axes.set_xlabel(_x_label(summaries))
    axes.set_ylabel("tokens/s per user (N / E2E)")
    axes.set_title("Per-user throughput, mean ± std")
    written.append(_save(figure, out / "user_throughput.png", plt))

    written.append(p99_plot(out / "p99_vs_users.png", {"this run": summaries}))

    figure, axes = plt.subplots(figsize=(7, 4))
    chosen = set(throughput_points or [s["point"] for s in summaries])
    for summary in summaries:
        if summary["point"] not in chosen:
            continue
        windows = summary["metrics"]["windows"]
        width = summary["metrics"]["system_throughput"]["window_s"]
        axes.plot(
            [w["start_s"] + width / 2 for w in windows],
            [w["tokens_per_s"] for w in windows],
            marker=".",
            label=summary["point"],
        )
    axes.set_xlabel("time since measurement start (s)")
    axes.set_ylabel("system throughput (tokens/s)")
    axes.set_title("System throughput per window")
    axes.legend()
    written.append(_save(figure, out / "system_throughput.png", plt))
    return written


def p99_plot(path: Path, runs: Mapping[str, Sequence[Mapping[str, Any]]]) -> Path:
    """p99 response time against load, one line per named run."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(7, 4))
    every: list[Mapping[str, Any]] = []
    for label, summaries in runs.items():
        every.extend(summaries)
        axes.plot(
            [_x(s) for s in summaries],
            [_num(s["metrics"]["e2e_ms"]["p99"]) for s in summaries],
            marker="o",
            label=label,
        )
    axes.set_xlabel(_x_label(every))
    axes.set_ylabel("p99 response time (ms)")
    axes.set_title("p99 response time (E2E)")
    axes.legend()
    return _save(figure, path, plt)


def _save(figure: Any, path: Path, plt: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
