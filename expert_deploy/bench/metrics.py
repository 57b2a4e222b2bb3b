"""Metrics as pure functions of request records (definitions and formulas: docs/bench.md).

Per request ``i``: ``TTFT = r_1 − s``, ``E2E = r_m − s`` (last token, not stream close),
``TPOT = (E2E − TTFT) / (N − 1)`` only for ``N ≥ 2``, ``ITL_j = r_(j+1) − r_j`` pooled over
requests (per response, not per token), ``U = N / E2E`` (the paper's per-user throughput),
``Q = s − a`` (client queue time). System throughput counts ``n_j`` of every response arriving
in windows of ``W`` seconds aligned to the start of the measurement phase ``T0``.

Percentiles use linear interpolation between closest ranks (numpy's default, Hyndman–Fan
type 7); the MLPerf-style verdict uses the nearest rank. Standard deviation is the population
form. Only requests whose intended start ``a`` lies in ``[T0, T1)`` enter latency statistics,
and only successful ones; failures are counted by kind.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from expert_deploy.bench.records import RequestRecord

NS = 1_000_000_000
PERCENTILE_METHOD = "linear (numpy default, Hyndman-Fan type 7)"
#: With this many samples or fewer, p99 is an interpolation between the two largest values.
SMALL_SAMPLE = 100


def percentile(values: Sequence[float], p: float) -> float:
    """Linear-interpolated percentile, ``p`` in [0, 100]; NaN for no values.

    Sort ``x_0 ≤ … ≤ x_(n−1)``, ``h = (n − 1)·p/100``, value
    ``x_⌊h⌋ + (h − ⌊h⌋)·(x_(⌊h⌋+1) − x_⌊h⌋)``: the same as ``numpy.percentile(values, p)``.
    """
    if not values:
        return math.nan
    ordered = sorted(values)
    h = (len(ordered) - 1) * p / 100.0
    low = math.floor(h)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (h - low) * (ordered[high] - ordered[low])


def nearest_rank(values: Sequence[float], p: float) -> float:
    """MLPerf LoadGen's percentile: element ``⌊n·p/100⌋`` of the sorted values (clamped)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.floor(len(ordered) * p / 100.0))]


@dataclass(frozen=True)
class Stats:
    """Aggregates of one metric; ``n`` is the sample count every figure is printed with."""

    n: int
    mean: float
    std: float
    min: float
    max: float
    p50: float
    p90: float
    p99: float
    #: p99 of 100 samples or fewer is an interpolation between the two largest values.
    is_small_sample: bool

    def to_json(self) -> dict[str, Any]:
        return {
            k: (None if isinstance(v, float) and math.isnan(v) else v)
            for k, v in asdict(self).items()
        }


def stats(values: Sequence[float]) -> Stats:
    """Mean, population std, min, max, p50, p90, p99 of ``values`` (NaN when empty)."""
    n = len(values)
    if n == 0:
        nan = math.nan
        return Stats(0, nan, nan, nan, nan, nan, nan, nan, True)
    mean = math.fsum(values) / n
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / n)
    return Stats(
        n=n,
        mean=mean,
        std=std,
        min=min(values),
        max=max(values),
        p50=percentile(values, 50),
        p90=percentile(values, 90),
        p99=percentile(values, 99),
        is_small_sample=n <= SMALL_SAMPLE,
    )


# Per-request quantities, in seconds (None when undefined for that request).


def ttft_s(record: RequestRecord) -> float | None:
    """``r_1 − s``; None when no token arrived."""
    if not record.r_ns or record.s_ns is None:
        return None
    return (record.r_ns[0] - record.s_ns) / NS


def e2e_s(record: RequestRecord) -> float | None:
    """``r_m − s``: send to the last token (not to stream close)."""
    if not record.r_ns or record.s_ns is None:
        return None
    return (record.r_ns[-1] - record.s_ns) / NS


def tpot_s(record: RequestRecord) -> float | None:
    """``(E2E − TTFT) / (N − 1)``; undefined (None) for ``N < 2``."""
    if record.tokens < 2 or not record.r_ns:
        return None
    return (record.r_ns[-1] - record.r_ns[0]) / NS / (record.tokens - 1)


def itl_s(record: RequestRecord) -> list[float]:
    """Gaps between consecutive token-carrying responses (one per response, not per token)."""
    times = record.r_ns
    return [(times[j + 1] - times[j]) / NS for j in range(len(times) - 1)]


def user_throughput(record: RequestRecord) -> float | None:
    """``N / E2E`` tokens per second (includes TTFT, as the paper's N / (end − start))."""
    e2e = e2e_s(record)
    return record.tokens / e2e if e2e else None


def queue_s(record: RequestRecord) -> float | None:
    """``s − a``: how late the client sent compared with when it meant to."""
    return None if record.s_ns is None else (record.s_ns - record.a_ns) / NS


# Whole-run metrics.


@dataclass(frozen=True)
class Phase:
    """The measurement phase ``[t0_ns, t1_ns)`` on the records' clock."""

    t0_ns: int
    t1_ns: int

    @property
    def duration_s(self) -> float:
        return (self.t1_ns - self.t0_ns) / NS

    def holds(self, record: RequestRecord) -> bool:
        return self.t0_ns <= record.a_ns < self.t1_ns


@dataclass(frozen=True)
class Slo:
    """Service-level objectives for goodput; ``None`` = not checked."""

    ttft_s: float | None = 2.0
    tpot_s: float | None = 0.2
    e2e_s: float | None = None


@dataclass(frozen=True)
class Window:
    """One system-throughput window ``[start_s, start_s + W)`` relative to ``T0``."""

    start_s: float
    tokens: int
    tokens_per_s: float
    #: Requests sent and not yet ended at the window's start.
    inflight: int
    completions: int
    errors: int
    is_complete: bool


def windows(records: Iterable[RequestRecord], phase: Phase, width_s: float = 2.0) -> list[Window]:
    """Tokens per window over ``[T0, T1)``, whatever request they belong to (failed included).

    ``Θ_k = Σ n_j / W`` over responses with ``r_j ∈ [T0 + kW, T0 + (k+1)W)``; the last window is
    partial when ``T1 − T0`` is not a multiple of ``W`` and its rate uses its real length.
    """
    width_ns = round(width_s * NS)
    span = phase.t1_ns - phase.t0_ns
    count = max(1, math.ceil(span / width_ns))
    tokens = [0] * count
    completions = [0] * count
    errors = [0] * count
    spans: list[tuple[int, int]] = []
    for record in records:
        for time_ns, n in zip(record.r_ns, record.n, strict=True):
            k = (time_ns - phase.t0_ns) // width_ns
            if 0 <= k < count and time_ns < phase.t1_ns:
                tokens[k] += n
        if record.s_ns is None:
            continue  # never sent: no tokens, no span
        end = record.end_ns if record.end_ns is not None else (record.r_ns or [record.s_ns])[-1]
        k = (end - phase.t0_ns) // width_ns
        if 0 <= k < count and end < phase.t1_ns:
            if record.status == "ok":
                completions[k] += 1
            elif record.status == "error":
                errors[k] += 1
        spans.append((record.s_ns, end))
    result = []
    for k in range(count):
        start = phase.t0_ns + k * width_ns
        length = min(width_ns, phase.t1_ns - start)
        result.append(
            Window(
                start_s=k * width_s,
                tokens=tokens[k],
                tokens_per_s=tokens[k] / (length / NS),
                inflight=sum(1 for s, e in spans if s <= start < e),
                completions=completions[k],
                errors=errors[k],
                is_complete=length == width_ns,
            )
        )
    return result


def is_good(record: RequestRecord, slo: Slo) -> bool:
    """Successful and within every SLO set (TPOT is not checked for ``N < 2``)."""
    if record.status != "ok":
        return False
    ttft, e2e, tpot = ttft_s(record), e2e_s(record), tpot_s(record)
    if ttft is None or e2e is None:
        return False
    if slo.ttft_s is not None and ttft > slo.ttft_s:
        return False
    if slo.tpot_s is not None and tpot is not None and tpot > slo.tpot_s:
        return False
    return not (slo.e2e_s is not None and e2e > slo.e2e_s)


def latency_series(records: Sequence[RequestRecord], phase: Phase) -> dict[str, list[float]]:
    """Per-request samples of each latency metric (ms; tokens/s for throughput), phase only.

    Successful requests only; TPOT leaves out ``N < 2``; ITL pools every response gap.
    """
    ok = [r for r in records if phase.holds(r) and r.status == "ok" and r.r_ns]
    ms = 1000.0

    def keep(values: Iterable[float | None], scale: float = ms) -> list[float]:
        return [v * scale for v in values if v is not None]

    return {
        "ttft_ms": keep(ttft_s(r) for r in ok),
        "e2e_ms": keep(e2e_s(r) for r in ok),
        "tpot_ms": keep(tpot_s(r) for r in ok),
        "itl_ms": keep(gap for r in ok for gap in itl_s(r)),
        "user_throughput_tok_s": keep((user_throughput(r) for r in ok), 1.0),
        "queue_ms": keep(queue_s(r) for r in records if phase.holds(r)),
        "queue_inclusive_ttft_ms": keep((r.r_ns[0] - r.a_ns) / NS for r in ok),
    }


def summarize(
    records: Sequence[RequestRecord],
    phase: Phase,
    *,
    window_s: float = 2.0,
    slo: Slo | None = None,
) -> dict[str, Any]:
    """Every metric of one run (one load point) as a JSON-ready mapping, times in ms.

    ``records`` may include warm-up and cool-down requests: latency statistics use the requests
    whose ``a`` is in the phase; windows use every token that arrived in it.
    """
    slo = slo or Slo()
    measured = [r for r in records if phase.holds(r)]
    ok = [r for r in measured if r.status == "ok" and r.r_ns]
    ms = 1000.0
    samples = latency_series(records, phase)
    tpots = [tpot_s(r) for r in ok]
    throughputs = [user_throughput(r) for r in ok]
    per_user: dict[int, list[float]] = defaultdict(list)
    for record, value in zip(ok, throughputs, strict=True):
        if value is not None:
            per_user[record.user].append(value)
    user_means = [math.fsum(v) / len(v) for v in per_user.values()]
    window_list = windows(records, phase, window_s)
    complete = [w.tokens_per_s for w in window_list if w.is_complete]
    duration = phase.duration_s
    good = [r for r in ok if is_good(r, slo)]
    errors = Counter(r.error_kind or "unknown" for r in measured if r.status == "error")
    experts: dict[str, dict[str, int]] = defaultdict(lambda: {"requests": 0, "tokens": 0})
    for record in measured:
        entry = experts[record.expert or "-"]
        entry["requests"] += 1
        entry["tokens"] += record.tokens
    clusters = Counter(str(r.cluster) for r in measured)
    tokens_all = sum(sum(r.n) for r in measured)
    tokens_ok = sum(r.tokens for r in ok)
    mismatched = sum(1 for r in ok if r.server_tokens is not None and r.server_tokens != sum(r.n))
    requested = [r.requested_tokens for r in ok if r.requested_tokens is not None]
    ttft_values = [t / ms for t in samples["ttft_ms"]]
    tpot_values = [t / ms for t in samples["tpot_ms"]]
    return {
        "phase": {"t0_ns": phase.t0_ns, "t1_ns": phase.t1_ns, "duration_s": duration},
        "percentile_method": PERCENTILE_METHOD,
        "requests": {
            "recorded": len(records),
            "measured": len(measured),
            "ok": len(ok),
            "errors": sum(errors.values()),
            "incomplete": sum(1 for r in measured if r.status == "incomplete"),
            "errors_by_kind": dict(sorted(errors.items())),
            "tpot_undefined_single_token": sum(1 for t in tpots if t is None),
        },
        "ttft_ms": stats(samples["ttft_ms"]).to_json(),
        "e2e_ms": stats(samples["e2e_ms"]).to_json(),
        "tpot_ms": stats(samples["tpot_ms"]).to_json(),
        "tpot_token_weighted_ms": (
            math.fsum((r.r_ns[-1] - r.r_ns[0]) / NS for r in ok if r.tokens >= 2)
            / sum(r.tokens - 1 for r in ok if r.tokens >= 2)
            * ms
            if any(r.tokens >= 2 for r in ok)
            else None
        ),
        "itl_ms": stats(samples["itl_ms"]).to_json(),
        "user_throughput_tok_s": stats(samples["user_throughput_tok_s"]).to_json(),
        "user_throughput_per_user_tok_s": stats(user_means).to_json(),
        "queue_ms": stats(samples["queue_ms"]).to_json(),
        "queue_inclusive_ttft_ms": stats(samples["queue_inclusive_ttft_ms"]).to_json(),
        "system_throughput": {
            "window_s": window_s,
            "mean_tok_s": math.fsum(complete) / len(complete) if complete else None,
            "peak_tok_s": max(complete) if complete else None,
            # Θ = tokens that arrived in [T0, T1) / (T1 − T0), whatever request they belong to.
            "overall_tok_s": sum(w.tokens for w in window_list) / duration
            if duration > 0
            else None,
            "complete_windows": len(complete),
        },
        "request_throughput_rps": len(ok) / duration if duration > 0 else None,
        "tokens": {
            "all": tokens_all,
            "ok": tokens_ok,
            "requested_mean": math.fsum(requested) / len(requested) if requested else None,
            "received_mean": tokens_ok / len(ok) if ok else None,
            "server_count_mismatches": mismatched,
            "token_source": sorted({r.token_source for r in ok}),
        },
        "goodput": {
            "slo": asdict(slo),
            "good": len(good),
            "share": len(good) / len(ok) if ok else None,
            "rps": len(good) / duration if duration > 0 else None,
            "tok_s": sum(r.tokens for r in good) / duration if duration > 0 else None,
        },
        "verdict": _verdict(ttft_values, tpot_values, slo),
        "per_expert": dict(sorted(experts.items())),
        "per_cluster": dict(sorted(clusters.items())),
        "windows": [asdict(w) for w in window_list],
    }


def _verdict(ttfts: list[float], tpots: list[float], slo: Slo) -> dict[str, Any]:
    """MLPerf-style pass/fail: nearest-rank p99 of TTFT and TPOT against the SLOs."""
    p99_ttft = nearest_rank(ttfts, 99)
    p99_tpot = nearest_rank(tpots, 99)
    checks = []
    if slo.ttft_s is not None:
        checks.append(not math.isnan(p99_ttft) and p99_ttft <= slo.ttft_s)
    if slo.tpot_s is not None and tpots:
        checks.append(p99_tpot <= slo.tpot_s)
    return {
        "method": "nearest rank (MLPerf LoadGen)",
        "p99_ttft_ms": None if math.isnan(p99_ttft) else p99_ttft * 1000,
        "p99_tpot_ms": None if math.isnan(p99_tpot) else p99_tpot * 1000,
        "passed": all(checks) if checks else None,
    }
