"""Records on disk, the files a load point writes, compare, and the SSE response parser."""

from __future__ import annotations

import asyncio
import csv
import json
from pathlib import Path

import pytest

from expert_deploy.bench.clients_http import HttpTarget, _Response
from expert_deploy.bench.compare import comparison_rows, load_run
from expert_deploy.bench.driver import LoadSpec, RunResult, Target, WorkerStats
from expert_deploy.bench.errors import BenchError
from expert_deploy.bench.metrics import Slo
from expert_deploy.bench.records import RequestRecord, read_records, write_records
from expert_deploy.bench.report import build_summary, write_point, write_sweep
from expert_deploy.cli import main
from tests.unit.test_bench_metrics import A, B, C, D, W

MS = 1_000_000


def result(users: int, scale: float = 1.0) -> RunResult:
    """A finished run holding the hand-made records (latencies multiplied by ``scale``)."""
    records = []
    for rec in (W, A, B, C, D):
        copy = RequestRecord.from_json(rec.to_json())
        sent = copy.s_ns or 0
        copy.r_ns = [sent + round((t - sent) * scale) for t in copy.r_ns]
        records.append(copy)
    target = Target(http=HttpTarget.from_url("http://127.0.0.1:1", model="expert-router"))
    worker = WorkerStats(0, users, 5, users, 0.9, 0.01, 0.05, 0.1)
    return RunResult(LoadSpec(users=users), target, records, 0, 3000 * MS, 123, [worker])


def test_records_round_trip_and_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "requests.jsonl"
    assert write_records(path, [A, B]) == 2
    again = read_records(path)
    assert [r.to_json() for r in again] == [A.to_json(), B.to_json()]
    assert json.loads(path.read_text().splitlines()[1])["token_source"] == "responses"
    path.write_text('{"id": 1}\n')
    with pytest.raises(BenchError, match=r"requests.jsonl:1: not a request record"):
        read_records(path)


def test_point_files_summary_csv_and_windows(tmp_path: Path) -> None:
    run = result(10)
    summary = build_summary(run, window_s=1.0, slo=Slo(), workload={"distribution": "uniform"})
    assert summary["point"] == "users-10" and summary["client"]["saturated_workers"] == [0]
    assert summary["load"]["mode"] == "closed loop" and summary["clock"]["wall_anchor_ns"] == 123
    write_point(tmp_path / "users-10", run, summary)
    written = json.loads((tmp_path / "users-10" / "summary.json").read_text())
    assert written["metrics"]["ttft_ms"]["p50"] == pytest.approx(100.0)
    rows = list(csv.reader((tmp_path / "users-10" / "summary.csv").read_text().splitlines()))
    assert rows[0][:4] == ["Metric", "avg", "min", "max"] and rows[0][4] == "p99"
    ttft = next(row for row in rows if row[0] == "ttft_ms")
    assert float(ttft[1]) == pytest.approx(150.0) and float(ttft[2]) == 50.0
    windows = list(csv.DictReader((tmp_path / "users-10" / "windows.csv").read_text().splitlines()))
    assert [int(w["tokens"]) for w in windows] == [4, 3, 3]
    assert len(read_records(tmp_path / "users-10" / "requests.jsonl")) == 5


def test_compare_sweeps_side_by_side(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name, scale in (("uniform", 1.0), ("normal", 2.0)):
        run = result(10, scale)
        summary = build_summary(run, window_s=1.0, slo=Slo(), workload={})
        (tmp_path / name).mkdir()
        write_sweep(tmp_path / name, [summary])
    a, b = (
        load_run(tmp_path / "uniform" / "sweep.json"),
        load_run(tmp_path / "normal" / "sweep.json"),
    )
    rows = {
        (point, label): (va, vb, ratio) for point, label, va, vb, ratio in comparison_rows(a, b)
    }
    assert rows[("users-10", "TTFT p50 ms")] == pytest.approx((100.0, 200.0, 2.0))
    assert main(["bench", "compare", str(a.path), str(b.path), "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "TTFT p50 ms" in out and "2.000" in out
    assert (tmp_path / "p99_compare.png").stat().st_size > 1000


def test_compare_refuses_unrelated_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "x.json").write_text('{"hello": 1}')
    assert main(["bench", "compare", str(tmp_path / "x.json"), str(tmp_path / "x.json")]) == 1
    assert "is not a bench result" in capsys.readouterr().err
    summary = build_summary(result(10), window_s=1.0, slo=Slo(), workload={})
    other = build_summary(result(20), window_s=1.0, slo=Slo(), workload={})
    (tmp_path / "a.json").write_text(json.dumps(summary))
    (tmp_path / "b.json").write_text(json.dumps(other))
    with pytest.raises(BenchError, match="share no load point"):
        comparison_rows(load_run(tmp_path / "a.json"), load_run(tmp_path / "b.json"))


def test_run_usage_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"text": "hello"}\n')
    base = ["bench", "run", "--prompts", str(prompts), "--out", str(tmp_path / "o")]
    assert main([*base, "--url", "http://127.0.0.1:1"]) == 2
    assert "have no 'cluster'; pass --router" in capsys.readouterr().err
    assert main([*base, "--url", "ftp://x", "--cluster-field", "c"]) == 1
    assert "expected http://HOST:PORT" in capsys.readouterr().err
    assert main([*base, "--url", "http://h:1", "--grpc", "h:2"]) == 1
    assert "exactly one of --url" in capsys.readouterr().err
    assert main([*base, "--url", "http://h:1", "--users", "0"]) == 2
    assert main([*base, "--url", "http://h:1", "--requests", "5", "--duration", "3"]) == 2
    workdir = tmp_path / "wd"
    assert main([*base, "-i", "local-synthetic", "-w", str(workdir)]) == 1
    assert "no deployment recorded in" in capsys.readouterr().err


def _parse(chunks: list[bytes], endpoint: str = "completions") -> RequestRecord:
    async def go() -> RequestRecord:
        rec = RequestRecord("r", 0, 0, "http", "p", 0, a_ns=0, s_ns=0)
        response = _Response(rec, endpoint)  # type: ignore[arg-type]
        for index, chunk in enumerate(chunks):
            response.feed(chunk, 1000 * (index + 1))
        return rec

    return asyncio.run(go())


def _chunked(body: bytes, pieces: int) -> list[bytes]:
    head = (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n"
        b"x-expert-router-expert: e2\r\nx-expert-router-cluster: 2\r\n"
        b"x-expert-router-overhead-ms: 0.250\r\n\r\n"
    )
    wire = (
        head
        + b"".join(f"{len(part):x}\r\n".encode() + part + b"\r\n" for part in body.split(b"|"))
        + b"0\r\n\r\n"
    )
    size = -(-len(wire) // pieces)
    return [wire[i : i + size] for i in range(0, len(wire), size)]


def test_sse_parser_times_token_events_and_reads_headers_whatever_the_split() -> None:
    events = (
        b'data: {"choices":[{"text":" a"}]}\n\n|data: {"choices":[{"text":" b"}]}\n\n|'
        b'data: {"choices":[{"text":"","finish_reason":"length"}]}\n\n|'
        b'data: {"choices":[],"usage":{"completion_tokens":2}}\n\n|data: [DONE]\n\n'
    )
    one = _parse(_chunked(events, 1))
    assert one.status == "ok" and one.r_ns == [1000, 1000] and one.n == [1, 1]
    assert one.empty_responses == 2 and one.server_tokens == 2 and one.end_ns == 1000
    assert (one.expert, one.routed_cluster, one.gateway_overhead_ms) == ("e2", 2, 0.25)
    for pieces in (3, 7, 50, 400):
        split = _parse(_chunked(events, pieces))
        assert split.status == "ok" and split.n == [1, 1] and split.server_tokens == 2
        assert split.r_ns == sorted(split.r_ns)


def test_sse_parser_errors() -> None:
    truncated = _parse(_chunked(b'data: {"choices":[{"text":"x"}]}\n\n', 1))
    assert truncated.status == "error" and truncated.error_kind == "truncated"
    in_stream = _parse(
        _chunked(b'data: {"choices":[{"text":"x"}]}\n\n|data: {"error":{"code":"upstream"}}\n\n', 2)
    )
    assert in_stream.error_kind == "stream_upstream" and in_stream.n == [1]
    body = b'{"error":{"message":"busy"}}'
    refused = _parse([b"HTTP/1.1 429 Too Many\r\ncontent-length: %d\r\n\r\n" % len(body) + body])
    assert refused.error_kind == "http_429" and "busy" in (refused.error or "")
    chat = _parse(
        _chunked(
            b'data: {"choices":[{"delta":{"role":"assistant"}}]}\n\n|'
            b'data: {"choices":[{"delta":{"content":"hi"}}]}\n\n|data: [DONE]\n\n',
            2,
        ),
        "chat",
    )
    assert chat.status == "ok" and chat.n == [1] and chat.empty_responses == 1


def test_request_bytes_carry_the_key_only_in_the_header() -> None:
    target = HttpTarget.from_url("http://gw:8080/prefix/", model="m", endpoint="chat", api_key="k")
    raw = target.request_bytes("hello", 16)
    head, body = raw.split(b"\r\n\r\n", 1)
    assert head.startswith(b"POST /prefix/v1/chat/completions HTTP/1.1\r\nHost: gw:8080")
    assert b"Authorization: Bearer k" in head and b"k" not in body.replace(b"max_tokens", b"")
    data = json.loads(body)
    assert data["messages"] == [{"role": "user", "content": "hello"}] and data["max_tokens"] == 16
    assert data["stream"] is True and data["stream_options"] == {"include_usage": True}
