"""Every bench metric on hand-made timestamp records with answers worked out by hand."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from expert_deploy.bench.metrics import (
    Phase,
    Slo,
    e2e_s,
    is_good,
    itl_s,
    latency_series,
    nearest_rank,
    percentile,
    queue_s,
    stats,
    summarize,
    tpot_s,
    ttft_s,
    user_throughput,
    windows,
)
from expert_deploy.bench.records import RequestRecord

MS = 1_000_000  # ns


def record(
    rid: str,
    *,
    a: float,
    s: float | None,
    r: list[float],
    n: list[int] | None = None,
    status: str = "ok",
    user: int = 0,
    expert: str | None = "e0",
    server_tokens: int | None = None,
    error_kind: str | None = None,
) -> RequestRecord:
    """A record with times given in ms."""
    rec = RequestRecord(
        id=rid,
        user=user,
        worker=0,
        protocol="http",
        prompt_id=rid,
        cluster=0,
        a_ns=round(a * MS),
        s_ns=None if s is None else round(s * MS),
        r_ns=[round(t * MS) for t in r],
        n=n if n is not None else [1] * len(r),
        end_ns=round(r[-1] * MS) + MS if r else None,
        expert=expert,
        server_tokens=server_tokens,
    )
    rec.status = status  # type: ignore[assignment]
    rec.error_kind = error_kind
    return rec


# Four tokens, one per response: TTFT 100, E2E 250, TPOT (250 − 100)/3 = 50, U = 4 / 0.25 s.
A = record("a", a=0, s=0, r=[100, 150, 200, 250], user=0)
# Two responses carrying 1 and 2 tokens: N = 3, TTFT 300, E2E 500, TPOT 200/2 = 100 ms.
B = record("b", a=990, s=1000, r=[1300, 1500], n=[1, 2], user=1, expert="e1")
# One token: TPOT undefined, excluded and counted.
C = record("c", a=2000, s=2000, r=[2050], user=1, expert="e1")
# Failed after two tokens: out of latency statistics, its tokens still count in windows.
D = record("d", a=2100, s=2100, r=[2200, 2300], status="error", error_kind="stream_error")
# Warm-up (a before T0 = 0 is impossible here, so the phase below starts at 0 and this one is
# intended before it by construction: a = −500).
W = record("w", a=-500, s=-500, r=[-400, -300])
PHASE = Phase(0, 3000 * MS)


def test_per_request_quantities() -> None:
    assert ttft_s(A) == pytest.approx(0.100)
    assert e2e_s(A) == pytest.approx(0.250)
    assert tpot_s(A) == pytest.approx(0.050)
    assert itl_s(A) == pytest.approx([0.05, 0.05, 0.05])
    assert user_throughput(A) == pytest.approx(16.0)
    assert B.tokens == 3 and tpot_s(B) == pytest.approx(0.100)
    assert itl_s(B) == pytest.approx([0.2])  # one gap per response, not per token
    assert user_throughput(B) == pytest.approx(6.0)
    assert queue_s(B) == pytest.approx(0.010)
    assert tpot_s(C) is None and itl_s(C) == []
    unsent = record("u", a=0, s=None, r=[])
    assert ttft_s(unsent) is None and e2e_s(unsent) is None and queue_s(unsent) is None


def test_server_token_count_wins_over_responses() -> None:
    rec = record("x", a=0, s=0, r=[10, 20, 30], server_tokens=5)
    assert rec.tokens == 5 and rec.token_source == "server"
    assert tpot_s(rec) == pytest.approx((0.030 - 0.010) / 4)


def test_percentile_matches_numpy_linear_and_nearest_rank_matches_loadgen() -> None:
    rng = random.Random(7)
    for size in (1, 2, 3, 10, 101, 1000):
        values = [rng.expovariate(1.0) for _ in range(size)]
        for p in (0, 1, 50, 90, 99, 100):
            assert percentile(values, p) == pytest.approx(float(np.percentile(values, p)))
    assert math.isnan(percentile([], 50))
    values = list(range(1, 101))  # 1..100
    assert nearest_rank(values, 99) == 100  # element ⌊100 × 0.99⌋ = index 99
    assert nearest_rank(values, 50) == 51
    assert nearest_rank([5.0], 99) == 5.0


def test_stats_population_std_and_small_sample_flag() -> None:
    result = stats([1.0, 2.0, 3.0, 4.0])
    assert result.mean == 2.5 and result.std == pytest.approx(math.sqrt(1.25))
    assert result.p50 == 2.5 and result.min == 1.0 and result.max == 4.0
    assert result.is_small_sample
    assert not stats([1.0] * 101).is_small_sample
    assert stats([]).n == 0 and stats([]).to_json()["mean"] is None


def test_windows_align_to_phase_start_and_count_tokens_not_responses() -> None:
    result = windows([A, B, C, D, W], PHASE, width_s=1.0)
    assert [w.start_s for w in result] == [0.0, 1.0, 2.0]
    # [0,1 s): A's 4 tokens; [1,2 s): B's 1 + 2; [2,3 s): C's 1 + D's 2 (failed, still counted).
    assert [w.tokens for w in result] == [4, 3, 3]
    assert [w.tokens_per_s for w in result] == [4.0, 3.0, 3.0]
    assert [w.completions for w in result] == [1, 1, 1]  # A ends at 251 ms, B 1501, C 2051
    assert [w.errors for w in result] == [0, 0, 1]
    assert [w.inflight for w in result] == [1, 1, 1]  # A, B and C each start on a boundary
    assert all(w.is_complete for w in result)
    partial = windows([A], Phase(0, 2500 * MS), width_s=1.0)
    assert [w.is_complete for w in partial] == [True, True, False]
    assert partial[2].tokens_per_s == 0.0


def test_goodput_checks_every_slo_and_skips_tpot_for_one_token() -> None:
    slo = Slo(ttft_s=0.2, tpot_s=0.06, e2e_s=None)
    assert is_good(A, slo)  # TTFT 100 ≤ 200, TPOT 50 ≤ 60
    assert not is_good(B, slo)  # TTFT 300 > 200
    assert is_good(C, slo)  # N = 1: TPOT not checked
    assert not is_good(D, slo)  # failed
    assert not is_good(A, Slo(ttft_s=None, tpot_s=None, e2e_s=0.2))  # E2E 250 > 200


def test_summarize_known_answers() -> None:
    summary = summarize([W, A, B, C, D], PHASE, window_s=1.0, slo=Slo(0.2, 0.06, None))
    requests = summary["requests"]
    assert requests["recorded"] == 5 and requests["measured"] == 4  # W is warm-up
    assert requests["ok"] == 3 and requests["errors"] == 1
    assert requests["errors_by_kind"] == {"stream_error": 1}
    assert requests["tpot_undefined_single_token"] == 1
    ttft = summary["ttft_ms"]
    assert ttft["n"] == 3 and ttft["mean"] == pytest.approx((100 + 300 + 50) / 3)
    assert ttft["p50"] == pytest.approx(100.0)
    assert ttft["p99"] == pytest.approx(100 + 0.98 * 200)  # h = 2·0.99 = 1.98
    assert summary["tpot_ms"]["n"] == 2 and summary["tpot_ms"]["mean"] == pytest.approx(75.0)
    # Token-weighted TPOT: (150 + 200) ms / (3 + 2) gaps.
    assert summary["tpot_token_weighted_ms"] == pytest.approx(70.0)
    assert summary["itl_ms"]["n"] == 4  # A's three gaps and B's one
    assert summary["e2e_ms"]["max"] == pytest.approx(500.0)
    # U: A 16, B 6, C 1 / 0.05 = 20 tok/s; per simulated user: user 0 → 16, user 1 → 13.
    assert summary["user_throughput_tok_s"]["mean"] == pytest.approx(14.0)
    assert summary["user_throughput_per_user_tok_s"]["mean"] == pytest.approx(14.5)
    throughput = summary["system_throughput"]
    assert throughput["mean_tok_s"] == pytest.approx(10 / 3)
    assert throughput["overall_tok_s"] == pytest.approx(10 / 3)
    assert throughput["peak_tok_s"] == 4.0
    assert summary["request_throughput_rps"] == pytest.approx(1.0)
    assert summary["goodput"]["good"] == 2 and summary["goodput"]["rps"] == pytest.approx(2 / 3)
    assert summary["per_expert"] == {
        "e0": {"requests": 2, "tokens": 6},
        "e1": {"requests": 2, "tokens": 4},
    }
    assert summary["tokens"]["all"] == 10 and summary["tokens"]["ok"] == 8
    verdict = summary["verdict"]
    assert verdict["p99_ttft_ms"] == pytest.approx(300.0)  # nearest rank: ⌊3·0.99⌋ = 2
    assert verdict["passed"] is False
    assert summary["queue_ms"]["max"] == pytest.approx(10.0)


def test_latency_series_is_what_the_summary_aggregates() -> None:
    series = latency_series([W, A, B, C, D], PHASE)
    assert series["ttft_ms"] == pytest.approx([100.0, 300.0, 50.0])
    assert series["tpot_ms"] == pytest.approx([50.0, 100.0])
    assert series["queue_inclusive_ttft_ms"] == pytest.approx([100.0, 310.0, 50.0])


def test_incomplete_requests_are_counted_not_timed() -> None:
    open_one = record("o", a=2500, s=2500, r=[2600], status="incomplete")
    summary = summarize([A, open_one], PHASE, window_s=1.0)
    assert summary["requests"]["incomplete"] == 1 and summary["ttft_ms"]["n"] == 1
    assert summary["system_throughput"]["overall_tok_s"] == pytest.approx(5 / 3)
