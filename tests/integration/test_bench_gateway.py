"""`expert-deploy bench` against real tritonservers (synthetic experts) and a real gateway.

The synthetic experts (tests/integration/conftest.py: cluster i → expert ei, TPOT 2 ms) stand
in for GPU-served models; everything between the simulator and them is real: the gateway
process, its classifier, HTTP/SSE, gRPC, tritonserver. No assertion depends on timing.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from expert_deploy.bench.records import read_records
from expert_deploy.cli import main
from tests.integration.conftest import Fleet, GatewayFactory, Router
from tests.support.ports import free_port

pytestmark = pytest.mark.integration


def _prompts(tmp_path: Path, router: Router) -> Path:
    """Unlabelled prompts, three per cluster: the bench labels them with the router."""
    path = tmp_path / "prompts.jsonl"
    lines = [
        json.dumps({"id": f"{cluster}-{i}", "text": f"{text} {'extra ' * i}".strip()})
        for cluster, text in router.prompt_for_cluster.items()
        for i in range(3)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_closed_loop_sweep_through_gateway_with_direct_baseline(
    tmp_path: Path,
    fleet: Fleet,
    router: Router,
    start_gateway: GatewayFactory,
    capsys: pytest.CaptureFixture[str],
) -> None:
    gateway = start_gateway(fleet.table())
    out = tmp_path / "out"
    argv = [
        "bench", "run", "--url", gateway.base_url, "--prompts", str(_prompts(tmp_path, router)),
        "--router", str(router.directory), "--users", "1,4", "--requests", "12",
        "--warmup", "0.5", "--max-tokens", "8", "--distribution", "normal",
        "--baseline-grpc", f"127.0.0.1:{fleet.ports('e1')[0]}", "--out", str(out),
        "--window", "0.5",
    ]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "users-4" in printed and "B / A" in printed
    sweep = json.loads((out / "sweep.json").read_text())
    assert [p["point"] for p in sweep["points"]] == ["users-1", "users-4"]
    for point in sweep["points"]:
        metrics = point["metrics"]
        assert metrics["requests"]["measured"] == 12 and metrics["requests"]["ok"] == 12
        assert metrics["requests"]["errors"] == 0 and metrics["requests"]["incomplete"] == 0
        assert metrics["ttft_ms"]["n"] == 12 and metrics["tpot_ms"]["n"] == 12
        assert metrics["itl_ms"]["n"] == 12 * 7  # 8 tokens, one response each
        assert metrics["tokens"]["received_mean"] == 8 and metrics["tokens"]["requested_mean"] == 8
        assert metrics["tokens"]["token_source"] == ["server"]  # usage.completion_tokens
        assert metrics["tokens"]["server_count_mismatches"] == 0
        assert sum(w["tokens"] for w in metrics["windows"]) > 0
        assert point["workload"]["distribution"] == "normal"
    assert sweep["points"][1]["load"]["peak_inflight"] == 4
    records = read_records(out / "users-4" / "requests.jsonl")
    assert {r.user for r in records} == {0, 1, 2, 3}
    for record in records:
        # The router labelled the prompt; the gateway routed it to that cluster's expert.
        assert record.routed_cluster == record.cluster
        assert record.expert == f"e{record.cluster}"
        assert record.n == [1] * 8 and record.server_tokens == 8
        assert record.s_ns is not None and record.s_ns >= record.a_ns
        assert record.r_ns == sorted(record.r_ns) and record.r_ns[0] > record.s_ns
    for name in ("ttft_vs_users", "tpot_vs_users", "user_throughput", "p99_vs_users"):
        assert (out / f"{name}.png").stat().st_size > 1000
    assert (out / "sweep.csv").read_text().startswith("point,users,rate_rps")
    baseline = json.loads((out / "baseline" / "sweep.json").read_text())
    assert baseline["points"][0]["target"].startswith("grpc://")
    assert baseline["points"][0]["metrics"]["requests"]["ok"] == 12
    direct = read_records(out / "baseline" / "users-1" / "requests.jsonl")
    assert all(r.expert is None and r.empty_responses == 1 for r in direct)  # final flag only
    assert not list(out.glob(".parts-*"))


def test_open_loop_over_grpc_to_the_gateway_records_queue_time(
    tmp_path: Path, fleet: Fleet, router: Router, start_gateway: GatewayFactory
) -> None:
    port = free_port()
    start_gateway(fleet.table(), grpc_port=port)
    out = tmp_path / "open"
    argv = [
        "bench", "run", "--grpc", f"127.0.0.1:{port}", "--prompts",
        str(_prompts(tmp_path, router)), "--router", str(router.directory), "--rate", "40",
        "--duration", "1.5", "--warmup", "0.5", "--max-tokens", "4", "--processes", "2",
        "--out", str(out),
    ]  # fmt: skip
    assert main(argv) == 0
    summary = json.loads((out / "rate-40" / "summary.json").read_text())
    assert summary["load"]["mode"] == "open loop (Poisson)" and summary["load"]["processes"] == 2
    assert summary["metrics"]["requests"]["errors"] == 0
    records = read_records(out / "rate-40" / "requests.jsonl")
    assert {r.worker for r in records} == {0, 1}
    assert len({r.user for r in records}) == len(records)  # one arrival, one id
    measured = [r for r in records if r.a_ns >= 500_000_000]
    assert measured and all(r.status == "ok" and r.tokens == 4 for r in measured)
    # The gateway's gRPC front end names the serving expert and its overhead in its first
    # response.
    assert all(r.expert is not None and r.expert.startswith("e") for r in measured)
    assert all(r.gateway_overhead_ms is not None and r.gateway_overhead_ms > 0 for r in measured)
    assert summary["metrics"]["per_expert"], summary["metrics"]
    # Open loop: the timer starts at the scheduled arrival; the send can only be later.
    assert all(r.s_ns is not None and r.s_ns >= r.a_ns for r in records)
    assert summary["metrics"]["queue_ms"]["n"] == len(measured)


def test_failed_requests_are_counted_by_kind_not_timed(
    tmp_path: Path, fleet: Fleet, start_gateway: GatewayFactory
) -> None:
    gateway = start_gateway(fleet.table())
    prompts = tmp_path / "fail.jsonl"
    # The synthetic model fails after 2 tokens when the prompt says so (its test directive).
    prompts.write_text(json.dumps({"text": "galaxy orbit [[fail_after=2]]", "cluster": 1}) + "\n")
    out = tmp_path / "fail"
    argv = [
        "bench", "run", "--url", gateway.base_url, "--prompts", str(prompts), "--users", "2",
        "--requests", "4", "--warmup", "0", "--max-tokens", "6", "--out", str(out),
    ]  # fmt: skip
    assert main(argv) == 0
    metrics = json.loads((out / "users-2" / "summary.json").read_text())["metrics"]
    assert metrics["requests"]["ok"] == 0 and metrics["requests"]["errors"] == 4
    kinds = metrics["requests"]["errors_by_kind"]
    assert sum(kinds.values()) == 4 and all(kind.startswith("stream_") for kind in kinds)
    assert metrics["ttft_ms"]["n"] == 0
    assert metrics["tokens"]["all"] == 8  # delivered before the failure, still counted


def test_selfcheck_direct_and_through_the_gateway(
    tmp_path: Path, fleet: Fleet, start_gateway: GatewayFactory
) -> None:
    gateway = start_gateway(fleet.table())
    out = tmp_path / "selfcheck"
    argv = [
        "bench", "selfcheck", "--grpc", f"127.0.0.1:{fleet.ports('e1')[0]}", "--url",
        gateway.base_url, "--ttft-ms", "0", "--tpot-ms", "2", "--tokens", "6", "--users", "1,3",
        "--duration", "1", "--warmup", "0.3", "--out", str(out),
    ]  # fmt: skip
    assert main(argv) == 0
    rows = json.loads((out / "selfcheck.json").read_text())["rows"]
    assert [(r["users"], r["path"]) for r in rows] == [
        (1, "direct"), (1, "gateway"), (3, "direct"), (3, "gateway"),
    ]  # fmt: skip
    for row in rows:
        assert row["requests"] > 0 and row["errors"] == 0 and row["wrong_token_count"] == 0
        assert row["processes"] == 1 and row["client_lag_p99_ms"] is not None
        assert (row["added_ttft_p50_ms"] is None) == (row["path"] == "direct")
