"""Benchmark the gateway's added time to first token against a real tritonserver.

Starts one tritonserver with the synthetic model (``--ttft-ms``/``--tpot-ms``, ``--tokens``), a
fitted k=3 router and a gateway with its gRPC front end, then, for each concurrency level, runs
closed-loop streams (``--max-requests`` or ``--max-seconds`` per level and path, whichever comes
first) over these paths:

* ``triton-grpc``: gRPC ModelStreamInfer straight to Triton (the baseline of ``gw-grpc``; each
  stream keeps its call for its next request, as tritonclient's ``start_stream`` does),
* ``triton-http``: Triton's own SSE endpoint, ``POST /v2/models/<m>/generate_stream``, with the
  same client as the HTTP paths (the baseline of ``gw-http`` and ``nginx-http``),
* ``gw-http``: OpenAI SSE through the gateway (one keep-alive connection per stream and server,
  ``scripts/sse_client.py``: httpx was the bottleneck of the load side at 1,000 streams),
* ``gw-grpc``: gRPC ModelStreamInfer through the gateway's KServe v2 front end,
* ``nginx-http``: OpenAI SSE through NGINX in front of two gateway replicas (if nginx exists),
  with the nginx.conf that ``expert-deploy up`` renders,
* ``relay-http``: Triton's SSE endpoint through a bare TCP relay (``scripts/tcp_relay.py``, the
  gateways' event loop, their CPUs): the floor of one proxy hop on this machine, so the gateway
  rows can be read as that floor plus the gateway's own work.

Each gateway path is compared with the direct path of the same protocol and client, so the
added TTFT is the gateway's, not the difference between the HTTP and grpc.aio clients. The two
run interleaved: every stream takes them in turns (shuffled rounds), so both see the same
machine; run one after the other, identical code differed by up to 0.5 ms p50 between runs on a
shared 2-vCPU VM, interleaved by 0.05-0.15 ms. ``own50`` and ``own99`` are the gateway's own
``x-expert-router-overhead-ms`` headers, over gRPC its ``expert_router_overhead_ms`` response
parameter (its time to first token minus the upstream's, as it measured them).

Prints TTFT p50/p99 per path, the TTFT added over the baseline, the gateway's CPU time per
request and tokens relayed per CPU-second of the gateway process(es) (from /proc/<pid>/stat),
and the RSS of the largest gateway replica. ``load%`` (on each baseline row) is how busy the
CPUs of Triton, its stub and the clients were during that group: from 90 % the group measures
their queue, not the gateway, and the script says so. Clients run in ``--clients`` processes
(each with its own event loop) once a level has at least 100 streams. CPU per request is the
robust figure on a shared machine: latency depends on what else runs, CPU time much less.

Load shape: streams start spread over one request's duration (not as one burst), and the
synthetic TPOT rises with the level so the offered load stays at most ``--token-rate`` tokens/s
(default 2,000: TPOT 2 ms at 1 stream, 50 ms at 100, 500 ms at 1,000), as a GPU's TPOT rises
with its batch. Here the synthetic model's Python stub burns CPU that a GPU would not; at a
fixed 2 ms TPOT, 1,000 streams offer 500,000 tokens/s, and on a small machine the "added TTFT"
then measures the queue. ``--token-rate 0`` keeps TPOT fixed. ``--pin-gateways CPUS`` runs the
gateways and nginx on CPUS and everything else on the other CPUs, as a deployment gives the
gateway its own cores. Gateways a group does not use are stopped (SIGSTOP) while it runs: an
idle replica rehearses its request path, and on a shared CPU that slowed the measured one.
``--gateway-idle poll`` (root) keeps those cores polling instead of halting while idle, as a
host tuned for latency does (``scripts/cpu_idle.py``); the header says which idle policy the
gateway CPUs had.

``--py-spy DIR`` samples the gateway with py-spy (``pip install py-spy``; needs ptrace) during
each gateway path and prints the functions with the most own CPU samples. ``--gateway-src DIR``
runs the gateway from another checkout's ``router_service`` (e.g. ``git worktree add``).
``--ref-src DIR`` adds a third gateway from DIR as ``ref-http`` and ``ref-grpc``, interleaved with
``gw-http`` and ``gw-grpc`` and their baselines: a before/after comparison in one run, under the
same load. With ``--ref-src .`` and ``--ref-loop uvloop`` the same code compares event loops;
with ``--ref-src . --ref-keep-warm-ms 0``, rehearsing the request path (``keep_warm``) against
not. Interleaved, each gateway waits while the others' turns run, and rehearses meanwhile
(when ``keep_warm`` is on): its ``cpu ms/req`` then counts those rehearsals too.

Usage: ``.venv/bin/python scripts/bench_gateway.py [--levels 1 100 1000]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import grpc  # noqa: E402
import httpx  # noqa: E402
import numpy as np  # noqa: E402
from tritonclient.grpc import service_pb2_grpc  # noqa: E402

from expert_deploy.inventory.models import parse_cpu_list  # noqa: E402
from expert_deploy.render.environment import make_environment  # noqa: E402
from expert_deploy.render.nginx import nginx_values, render_nginx  # noqa: E402
from router_service.classifier.fit import fit_router  # noqa: E402
from router_service.config import TensorNames  # noqa: E402
from router_service.triton_codec import (  # noqa: E402
    SamplingParams,
    build_infer_request,
    decode_stream_response,
)
from scripts.cpu_idle import (  # noqa: E402
    add_gateway_idle_option,
    describe_idle,
    run_with_gateway_idle,
)
from scripts.sse_client import SseConnection  # noqa: E402
from tests.support.gateway import Gateway, routing_table  # noqa: E402
from tests.support.ports import free_port  # noqa: E402
from tests.support.processes import start_group, stop_group, wait_until  # noqa: E402
from tests.support.triton import TritonServer, write_synthetic_repository  # noqa: E402

PROMPT = "galaxy telescope orbit nebula planet comet"
#: The k=3 router's corpus: three topics, each word order rotated (PROMPT is in the second).
ROUTER_CORPUS = [
    " ".join(words.split()[(i % 5) :] + words.split()[: (i % 5)])
    for words in (
        "recipe oven flour butter garlic simmer saucepan roast",
        "galaxy telescope orbit nebula planet comet stellar quasar",
        "stock bond dividend portfolio equity interest inflation ledger",
    )
    for i in range(40)
]
STREAMS_PER_CHANNEL = 100
# Above this share of busy time on the load side's CPUs, a group's TTFTs measure its queue.
SATURATED_PERCENT = 90.0
# Each gateway path against the direct path with the same protocol and client.
BASELINE = {
    "gw-grpc": "triton-grpc",
    "gw-http": "triton-http",
    "nginx-http": "triton-http",
    "relay-http": "triton-http",
}


@dataclass(frozen=True)
class Target:
    """One path: its name, where it points (URL or host:port) and the model it asks for."""

    name: str
    address: str
    model: str

    @property
    def is_grpc(self) -> bool:
        return self.name.endswith("grpc")

    @property
    def is_triton_http(self) -> bool:
        """Speaks Triton's generate_stream: Triton itself, or the relay in front of it."""
        return self.name in ("triton-http", "relay-http")


@dataclass(frozen=True)
class Job:
    """One client process's share of a level: its streams alternate over ``targets``."""

    targets: tuple[Target, ...]
    streams: int
    max_requests: int
    deadline: float
    tokens: int
    prompt: str
    ramp_s: float


async def _grpc_stream(
    call: grpc.aio.StreamStreamCall,
    target: Target,
    job: Job,
    request_id: str,
    overheads: list[float],
) -> tuple[float, int]:
    """One request on a kept ModelStreamInfer call; returns at its final response."""
    request = build_infer_request(
        model=target.model,
        request_id=request_id,
        prompt=job.prompt,
        params=SamplingParams(max_tokens=job.tokens),
        names=TensorNames(),
    )
    started = time.perf_counter()
    await call.write(request)
    ttft, tokens = -1.0, 0
    while True:
        message = await call.read()
        if message is grpc.aio.EOF:
            raise RuntimeError("the server ended the stream before the final response")
        decoded = decode_stream_response(message, text_output="text_output")
        if decoded.error:
            raise RuntimeError(decoded.error)
        if decoded.text:
            tokens += 1
            if ttft < 0:
                ttft = time.perf_counter() - started
                parameters = message.infer_response.parameters
                if "expert_router_overhead_ms" in parameters:
                    overheads.append(parameters["expert_router_overhead_ms"].double_param / 1000)
        if decoded.is_final:
            return ttft, tokens


def _openai_text(event: dict[str, Any]) -> str:
    choices = event.get("choices") or []
    return str(choices[0].get("text") or "") if choices else ""


def _triton_text(event: dict[str, Any]) -> str:
    return str(event.get("text_output") or "")


async def _http_stream(
    connection: SseConnection, target: Target, job: Job, overheads: list[float]
) -> tuple[float, int]:
    if target.is_triton_http:
        path = f"/v2/models/{target.model}/generate_stream"
        body: dict[str, Any] = {"text_input": job.prompt, "max_tokens": job.tokens, "stream": True}
        text_of = _triton_text
    else:
        path = "/v1/completions"
        body = {
            "model": target.model,
            "prompt": job.prompt,
            "max_tokens": job.tokens,
            "stream": True,
        }
        text_of = _openai_text
    data = json.dumps(body).encode()
    headers: dict[str, str] = {}
    started = time.perf_counter()
    ttft, tokens = -1.0, 0
    async with (
        asyncio.timeout(60.0),
        contextlib.aclosing(connection.post_lines(path, data, headers)) as lines,
    ):
        async for line in lines:
            if not line.startswith(b"data: {"):
                continue
            if text_of(json.loads(line[6:])):
                tokens += 1
                if ttft < 0:
                    ttft = time.perf_counter() - started
    if "x-expert-router-overhead-ms" in headers:
        overheads.append(float(headers["x-expert-router-overhead-ms"]) / 1000)
    return ttft, tokens


async def _run_job(job: Job) -> dict[str, dict[str, Any]]:
    """Run the job's streams; each stream alternates over the targets in shuffled rounds."""
    results: dict[str, dict[str, Any]] = {
        t.name: {"ttfts": [], "overheads": [], "tokens": 0, "errors": 0, "error_sample": []}
        for t in job.targets
    }
    channels: list[grpc.aio.Channel] = []
    stubs: dict[str, list[service_pb2_grpc.GRPCInferenceServiceStub]] = {}
    for target in job.targets:
        if target.is_grpc:
            stubs[target.name] = []
            for _ in range(max(1, -(-job.streams // STREAMS_PER_CHANNEL))):
                channel = grpc.aio.insecure_channel(target.address)
                channels.append(channel)
                stubs[target.name].append(service_pb2_grpc.GRPCInferenceServiceStub(channel))
    started = {"count": 0}

    async def loop(index: int) -> None:
        # Own connections per stream, as each user has their own (one per server it calls);
        # for gRPC, a ModelStreamInfer call kept for the user's next request, as tritonclient's
        # start_stream keeps one (a new call per request cost the load side's gRPC clients
        # so much that the 1,000-stream baseline measured their queue).
        connections = {t.address: SseConnection(t.address) for t in job.targets if not t.is_grpc}
        calls: dict[str, grpc.aio.StreamStreamCall] = {}
        try:
            await stream(index, connections, calls)
        finally:
            for connection in connections.values():
                await connection.close()
            for call in calls.values():
                call.cancel()

    async def stream(
        index: int,
        connections: dict[str, SseConnection],
        calls: dict[str, grpc.aio.StreamStreamCall],
    ) -> None:
        # Each stream takes the targets in rounds, each round in a fresh random order: with a
        # fixed order, a gateway that always follows another gateway found the shared library
        # code (libpython, numpy) still in cache and looked ~0.1 ms faster than its twin.
        order = random.Random(index)
        pending: list[Target] = []
        # Streams start spread over one request's duration, as users arrive, not all at once:
        # a burst of 1,000 first requests measures the burst, not the gateway.
        await asyncio.sleep(order.random() * job.ramp_s)
        while started["count"] < job.max_requests and time.time() < job.deadline:
            started["count"] += 1
            if not pending:
                pending = order.sample(job.targets, len(job.targets))
            target = pending.pop()
            result = results[target.name]
            try:
                if target.is_grpc:
                    call = calls.get(target.name)
                    if call is None:
                        stub = stubs[target.name][index % len(stubs[target.name])]
                        call = calls[target.name] = stub.ModelStreamInfer()
                    request_id = f"{index}-{started['count']}"
                    try:
                        ttft, tokens = await _grpc_stream(
                            call, target, job, request_id, result["overheads"]
                        )
                    except BaseException:
                        del calls[target.name]  # the next request opens a new call
                        call.cancel()
                        raise
                else:
                    connection = connections[target.address]
                    ttft, tokens = await _http_stream(connection, target, job, result["overheads"])
            except Exception as exc:
                result["errors"] += 1
                if len(result["error_sample"]) < 3:
                    result["error_sample"].append(repr(exc)[:200])
                continue
            result["ttfts"].append(ttft)
            result["tokens"] += tokens

    begun = time.perf_counter()
    await asyncio.gather(*(loop(i) for i in range(job.streams)))
    elapsed = time.perf_counter() - begun
    for channel in channels:
        await channel.close()
    for result in results.values():
        result["elapsed"] = elapsed
    return results


def _job_main(job: Job) -> dict[str, dict[str, Any]]:
    return asyncio.run(_run_job(job))


def _stat_fields(stat: Path) -> list[str]:
    """The fields of /proc/<pid>/stat after the command name (which may hold spaces and ')')."""
    return stat.read_text().rsplit(")", 1)[1].split()


def _cpu_seconds(pid: int) -> float:
    fields = _stat_fields(Path(f"/proc/{pid}/stat"))
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_jiffies(cpus: set[int]) -> tuple[int, int]:
    """(busy, total) jiffies of ``cpus`` since boot, from /proc/stat."""
    busy = total = 0
    for line in Path("/proc/stat").read_text().splitlines():
        name, *fields = line.split()
        if not name.startswith("cpu") or not name[3:].isdigit() or int(name[3:]) not in cpus:
            continue
        values = [int(v) for v in fields[:8]]  # user nice system idle iowait irq softirq steal
        total += sum(values)
        busy += sum(values) - values[3] - values[4]
    return busy, total


def busy_percent(before: tuple[int, int], after: tuple[int, int]) -> float:
    """Busy share of the CPUs between two :func:`cpu_jiffies` readings, in percent."""
    total = after[1] - before[1]
    return 100.0 * (after[0] - before[0]) / total if total > 0 else float("nan")


def _rank(size: int, q: float) -> int:
    """Index of the order statistic that is the ``q`` percentile of ``size`` sorted values."""
    return min(size - 1, int(q * size))


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return sorted(values)[_rank(len(values), q)]


def added_intervals(
    path: list[float],
    base: list[float],
    quantiles: tuple[float, ...] = (0.50, 0.99),
    *,
    rounds: int = 1000,
    seed: int = 0,
) -> list[tuple[float, float]]:
    """95 % bootstrap intervals of pQ(path) − pQ(base) for each quantile, in the units given.

    Tells a real difference from run-to-run noise: the added p50 of a few hundred requests
    moves by a tenth of a millisecond between resamples on this kind of machine, and the added
    p99 of a loaded level by far more than the 5 ms target.
    """
    if not path or not base:
        return [(float("nan"), float("nan"))] * len(quantiles)
    rng = np.random.default_rng(seed)
    a, b = np.asarray(path), np.asarray(base)
    sorted_a = np.sort(rng.choice(a, size=(rounds, a.size), replace=True), axis=1)
    sorted_b = np.sort(rng.choice(b, size=(rounds, b.size), replace=True), axis=1)
    intervals = []
    for q in quantiles:
        # The same order statistic as _percentile (not numpy's interpolating quantile).
        diffs = sorted_a[:, _rank(a.size, q)] - sorted_b[:, _rank(b.size, q)]
        low, high = np.quantile(diffs, [0.025, 0.975])
        intervals.append((float(low), float(high)))
    return intervals


def parse_cpus(text: str) -> set[int]:
    """CPU list as taskset takes it: ``1``, ``12-15``, ``0,2-3`` (the inventory's syntax)."""
    return set(parse_cpu_list(text))


def pin_group(leader: int, cpus: set[int]) -> None:
    """Move every thread of every process in ``leader``'s process group onto ``cpus``.

    Threads started later inherit the affinity of the thread that starts them.
    """
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(_stat_fields(stat)[2]) != leader:
                continue
            for task in (stat.parent / "task").iterdir():
                os.sched_setaffinity(int(task.name), cpus)
        except (OSError, ValueError):
            continue  # the process or thread ended meanwhile


def level_tpot_ms(level: int, tpot_ms: float, token_rate: float) -> float:
    """The synthetic TPOT at ``level`` streams, so offered tokens/s stay at most ``token_rate``.

    A GPU's TPOT grows with its batch; on a small machine, where the synthetic model's Python
    stub, Triton, the clients and the gateway share a few cores, an unbounded token rate saturates
    the box and the "added TTFT" measures the queue. 0 keeps ``tpot_ms`` at every level.
    """
    if token_rate <= 0:
        return tpot_ms
    return float(max(tpot_ms, round(1000 * level / token_rate)))


def run_level(
    pool: Any, targets: tuple[Target, ...], level: int, args: argparse.Namespace
) -> dict[str, dict[str, Any]]:
    """Run ``targets`` interleaved at one concurrency level, split over client processes.

    Returns one summary per target name.
    """
    clients = 1 if level < 100 else args.clients
    deadline = time.time() + args.max_seconds
    shares = [level // clients + (1 if i < level % clients else 0) for i in range(clients)]
    budget = args.max_requests * len(targets)
    tpot_ms = level_tpot_ms(level, args.tpot_ms, args.token_rate)
    prompt = PROMPT if tpot_ms == args.tpot_ms else f"{PROMPT} [[tpot_ms={tpot_ms:.0f}]]"
    ramp_s = (args.ttft_ms + args.tokens * tpot_ms) / 1000
    jobs = [
        Job(
            targets,
            s,
            max(len(targets), budget * s // level),
            deadline,
            args.tokens,
            prompt,
            ramp_s,
        )
        for s in shares
    ]
    per_job = pool.map(_job_main, jobs)
    summaries = {}
    for target in targets:
        results = [r[target.name] for r in per_job]
        ttfts = [t for r in results for t in r["ttfts"]]
        overheads = [t for r in results for t in r["overheads"]]
        elapsed = max(r["elapsed"] for r in results)
        summaries[target.name] = {
            "ttfts": ttfts,
            "clients": clients,
            "done": len(ttfts),
            "errors": sum(r["errors"] for r in results),
            "error_sample": [e for r in results for e in r["error_sample"]][:3],
            "tokens": sum(r["tokens"] for r in results),
            "rate": len(ttfts) / elapsed if elapsed else 0.0,
            "p50_ms": _percentile(ttfts, 0.50) * 1000,
            "p99_ms": _percentile(ttfts, 0.99) * 1000,
            "own_p50_ms": _percentile(overheads, 0.50) * 1000,
            "own_p99_ms": _percentile(overheads, 0.99) * 1000,
        }
    return summaries


def _setting(value: float | None) -> str:
    return "the gateway's default" if value is None else f"{value:g}"


def _ms(value: float) -> str:
    return "-" if value != value else f"{value:.2f}"  # NaN: the path reports no overhead


def _nginx_conf(workdir: Path, http_port: int, gateways: list[Gateway]) -> Path:
    """The product's nginx.conf (the template and values `expert-deploy up` renders)."""
    for folder in ("logs", "temp"):
        (workdir / folder).mkdir(parents=True, exist_ok=True)
    values = nginx_values(
        deployment="bench-gateway",
        runtime_dir=workdir,
        gateways=[("127.0.0.1", g.http_port, g.config["grpc_port"]) for g in gateways],
        listen_address="127.0.0.1",
        http_port=http_port,
        grpc_port=free_port(),
        strategy="round_robin",
        tls=None,
        max_body=1 << 20,
    )
    path = workdir / "nginx.conf"
    path.write_text(render_nginx(make_environment(REPO_ROOT / "templates"), values))
    return path


def start_nginx(
    workdir: Path, gateways: list[Gateway], pin: set[int] | None
) -> tuple[subprocess.Popen[bytes], str | None]:
    """Start nginx with the product's config in front of ``gateways``, on the ``pin`` CPUs.

    Returns the process and its base URL, or None for the URL when nginx did not answer.
    """
    port = free_port()
    conf = _nginx_conf(workdir, port, gateways)
    argv = ["nginx", "-e", str(workdir / "logs" / "error.log"), "-c", str(conf)]
    argv += ["-p", f"{workdir}/", "-g", "daemon off;"]
    nginx = start_group(argv, env=dict(os.environ), log_path=workdir / "stdout.log")
    url = f"http://127.0.0.1:{port}"
    if not wait_until(lambda: _http_ok(url + "/healthz"), timeout_s=10):
        return nginx, None
    if pin:
        pin_group(nginx.pid, pin)  # answering: its worker exists
    return nginx, url


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 100, 1000])
    parser.add_argument("--max-requests", type=int, default=2000)
    parser.add_argument("--max-seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=2, help="client processes (levels ≥ 100)")
    parser.add_argument("--ttft-ms", type=float, default=5.0)
    parser.add_argument("--tpot-ms", type=float, default=2.0)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument(
        "--token-rate",
        type=float,
        default=2000.0,
        help="raise TPOT with the level so the offered tokens/s stay at most this (0: fixed TPOT)",
    )
    parser.add_argument("--no-nginx", action="store_true")
    parser.add_argument(
        "--paths", nargs="+", help="only these gateway paths (their baselines always run)"
    )
    parser.add_argument("--py-spy", type=Path, help="sample the gateway with py-spy into DIR")
    parser.add_argument("--gateway-src", type=Path, help="run router_service from this folder")
    parser.add_argument(
        "--ref-src",
        type=Path,
        help="also run a gateway from this folder as ref-http/ref-grpc, next to gw-http/gw-grpc",
    )
    parser.add_argument(
        "--pin-gateways",
        type=parse_cpus,
        metavar="CPUS",
        help="run the gateways (and nginx) on these CPUs, everything else on the others",
    )
    parser.add_argument(
        "--gateway-loop",
        choices=("asyncio", "uvloop"),
        help="the gateways' --loop option (default: theirs, uvloop when installed)",
    )
    parser.add_argument(
        "--ref-loop",
        choices=("asyncio", "uvloop"),
        help="the --ref-src gateway's --loop option (default: --gateway-loop)",
    )
    parser.add_argument(
        "--keep-warm-ms",
        type=float,
        help="the gateways' keep_warm.interval_ms (default: the gateway's; 0: off)",
    )
    parser.add_argument(
        "--ref-keep-warm-ms",
        type=float,
        help="the --ref-src gateway's keep_warm.interval_ms (default: --keep-warm-ms)",
    )
    add_gateway_idle_option(parser)
    args = parser.parse_args()
    # Resolved before the chdir below, so relative folders mean what the caller meant.
    args.gateway_src = args.gateway_src and args.gateway_src.resolve()
    args.ref_src = args.ref_src and args.ref_src.resolve()
    if args.ref_keep_warm_ms is None:
        args.ref_keep_warm_ms = args.keep_warm_ms
    if args.pin_gateways and not os.sched_getaffinity(0) - args.pin_gateways:
        parser.error("--pin-gateways must leave at least one CPU for Triton and the clients")
    return run_with_gateway_idle(parser, args, run)


def run(args: argparse.Namespace) -> int:
    """Start Triton, the gateways and nginx, and print one row per level and path."""
    root = Path(tempfile.mkdtemp(prefix="bench_gateway_"))
    # `python -m router_service` puts the working directory first on sys.path: run the gateways
    # from an empty one, so PYTHONPATH alone says which checkout each gateway runs.
    os.chdir(root)
    if args.pin_gateways:
        # Triton, its stub and the client processes inherit this; the gateways are moved below.
        os.sched_setaffinity(0, os.sched_getaffinity(0) - args.pin_gateways)
    started: list[Any] = []
    try:
        repository = write_synthetic_repository(
            root / "repo", ttft_ms=args.ttft_ms, tpot_ms=args.tpot_ms, default_tokens=args.tokens
        )
        triton = TritonServer(repository=repository, workdir=root / "triton").start()
        started.append(triton)
        relay = _start_relay(root, triton.http_port, args.pin_gateways)
        started.append(relay.process)
        router_dir = root / "router"
        fit_router(ROUTER_CORPUS, k=3, seed=0).save(router_dir)
        table = routing_table(1, {f"e{i}": ([i], [triton.grpc_port]) for i in range(3)})
        want_nginx = not args.no_nginx and shutil.which("nginx") is not None
        sources = [args.gateway_src or REPO_ROOT] * (2 if want_nginx else 1)
        if args.ref_src is not None:
            sources.append(args.ref_src)
        gateways = []
        for index, source in enumerate(sources):
            config = {
                "router_dir": str(router_dir),
                "routing": table,
                "log_level": "warning",
                "limits": {"max_inflight_per_upstream": 2048, "max_queue_per_upstream": 2048},
                "grpc_port": free_port(),
            }
            loop = args.gateway_loop
            keep_warm_ms = args.keep_warm_ms
            if args.ref_src is not None and index == len(sources) - 1:
                loop = args.ref_loop or loop
                keep_warm_ms = args.ref_keep_warm_ms
            if keep_warm_ms is not None:  # unset: a --ref-src from before keep_warm starts too
                config["keep_warm"] = {"interval_ms": keep_warm_ms}
            loop_args = ["--loop", loop] if loop else []
            gateway = Gateway(
                root / f"gateway{index}",
                config,
                env={"PYTHONPATH": str(Path(source).resolve())},
                extra_args=loop_args,
            ).start()
            started.append(gateway)
            gateways.append(gateway)
            if args.pin_gateways and gateway.process is not None:
                pin_group(gateway.process.pid, args.pin_gateways)
        nginx_url = None
        if want_nginx:
            nginx, nginx_url = start_nginx(root / "nginx", gateways[:2], args.pin_gateways)
            started.append(nginx)
            if nginx_url is None:
                print("nginx did not start; skipping", file=sys.stderr)
        gw = gateways[0]
        baselines = {
            "triton-grpc": Target("triton-grpc", f"127.0.0.1:{triton.grpc_port}", "ensemble"),
            "triton-http": Target(
                "triton-http", f"http://127.0.0.1:{triton.http_port}", "ensemble"
            ),
        }
        grpc_address = f"127.0.0.1:{gw.config['grpc_port']}"
        paths: list[tuple[Target, list[Gateway | Helper]]] = [
            (Target("relay-http", relay.url, "ensemble"), [relay]),
            (Target("gw-http", gw.base_url, "expert-router"), [gw]),
            (Target("gw-grpc", grpc_address, "expert-router"), [gw]),
        ]
        if nginx_url is not None:
            paths.append((Target("nginx-http", nginx_url, "expert-router"), gateways[:2]))
        if args.paths:
            paths = [p for p in paths if p[0].name in args.paths]
        # Each group runs interleaved: a baseline and the gateway path(s) measured against it.
        groups = [[(baselines[BASELINE[path.name]], []), (path, procs)] for path, procs in paths]
        if args.ref_src is not None:
            ref_gateway = gateways[-1]
            refs = {
                "gw-http": Target("ref-http", ref_gateway.base_url, "expert-router"),
                "gw-grpc": Target(
                    "ref-grpc", f"127.0.0.1:{ref_gateway.config['grpc_port']}", "expert-router"
                ),
            }
            for group in groups:
                if group[1][0].name in refs:
                    group.append((refs[group[1][0].name], [ref_gateway]))
        tpots = ", ".join(
            f"{level}: {level_tpot_ms(level, args.tpot_ms, args.token_rate):.0f} ms"
            for level in args.levels
        )
        print(
            f"synthetic model: ttft {args.ttft_ms} ms, {args.tokens} tokens, tpot per level"
            f" {tpots} (offered ≤ {args.token_rate:.0f} tokens/s);"
            f" per level and path: {args.max_requests} requests or {args.max_seconds} s,"
            " interleaved with the baseline;"
            f" client processes: 1 below 100 streams, {args.clients} from 100;"
            f" cpus {os.cpu_count()}"
            + (f", gateways pinned to {sorted(args.pin_gateways)}" if args.pin_gateways else "")
        )
        print(describe_idle(args.pin_gateways or set(range(os.cpu_count() or 1))))
        print(f"keep_warm.interval_ms: gateways {_setting(args.keep_warm_ms)}", end="")
        if args.ref_src is not None:
            print(f", ref {_setting(args.ref_keep_warm_ms)}", end="")
        print()
        header = (
            f"{'level':>5} {'path':<11} {'cl':>2} {'done':>5} {'err':>4} {'req/s':>7}"
            f" {'p50ms':>7} {'p99ms':>7} {'+p50':>6} {'+p50 95% CI':>13} {'+p99':>7}"
            f" {'+p99 95% CI':>15} {'cpu ms/req':>10} {'tok/cpu-s':>9}"
            f" {'rssMiB':>7} {'own50':>6} {'own99':>6} {'load%':>5}"
        )
        # The CPUs of Triton, its stub and the clients (all of them when nothing is pinned).
        load_cpus = os.sched_getaffinity(0)
        print(header, flush=True)
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(args.clients) as pool:
            for level in args.levels:
                for group in groups:
                    pids = {t.name: [g.process.pid for g in ps if g.process] for t, ps in group}
                    spy = _start_py_spy(args, pids[group[1][0].name], level, group[1][0].name)
                    cpu0 = {n: sum(_cpu_seconds(p) for p in ps) for n, ps in pids.items()}
                    jiffies0 = cpu_jiffies(load_cpus)
                    with _paused(gateways, group):
                        results = run_level(pool, tuple(t for t, _ in group), level, args)
                    cpu = {n: sum(_cpu_seconds(p) for p in ps) - cpu0[n] for n, ps in pids.items()}
                    load = busy_percent(jiffies0, cpu_jiffies(load_cpus))
                    if spy is not None:
                        _print_py_spy(*spy)
                    base = group[0][0].name
                    _print_row(level, base, results[base], load=load)
                    for target, _ in group[1:]:
                        rss = max(_rss_mib(p) for p in pids[target.name])  # per replica
                        name = target.name
                        _print_row(level, name, results[name], results[base], cpu[name], rss)
                    if load >= SATURATED_PERCENT:
                        print(
                            f"      load side {load:.0f}% busy: the TTFTs of this group measure"
                            " the queue at Triton, its stub and the clients, not the gateway;"
                            " lower --token-rate or give the load more cores",
                            flush=True,
                        )
        return 0
    finally:
        for item in reversed(started):
            if hasattr(item, "stop"):
                item.stop()
            else:
                stop_group(item)
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def _paused(gateways: list[Gateway], group: list[tuple[Target, list[Any]]]) -> Iterator[None]:
    """Stop (SIGSTOP) the gateways ``group`` does not use while it runs.

    They share the gateway CPUs with the measured ones, and an idle replica rehearses its
    request path (keep_warm) every few ms: on one shared vCPU the second replica's rehearsals
    put 0.3 ms on the first one's added p50 at 1 stream (0.77 alone, 1.05 beside it). A
    deployment gives each replica a core of its own; the nginx-http group, which uses both
    replicas, still shows two replicas on one core.
    """
    used = {id(process) for _, processes in group for process in processes}
    idle = [g.process for g in gateways if id(g) not in used and g.process is not None]
    for process in idle:
        os.killpg(process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for process in idle:
            os.killpg(process.pid, signal.SIGCONT)


def _print_row(
    level: int,
    name: str,
    result: dict[str, Any],
    base: dict[str, Any] | None = None,
    cpu: float = 0.0,
    rss: float = 0.0,
    load: float | None = None,
) -> None:
    """One table row; a gateway row (``base`` given) adds the added TTFT, CPU and RSS.

    ``load`` (baseline rows) is how busy the load side's CPUs were during the group.
    """
    added50 = added99 = tok_cpu = rss_text = cpu_req = interval = interval99 = "-"
    if base is not None:
        added50 = f"{result['p50_ms'] - base['p50_ms']:.2f}"
        (low, high), (low99, high99) = added_intervals(result["ttfts"], base["ttfts"])
        interval = f"{1000 * low:.2f}..{1000 * high:.2f}"
        interval99 = f"{1000 * low99:.1f}..{1000 * high99:.1f}"
        added99 = f"{result['p99_ms'] - base['p99_ms']:.2f}"
        tok_cpu = f"{result['tokens'] / cpu:.0f}" if cpu > 0 else "n/a"
        rss_text = f"{rss:.0f}"
        cpu_req = f"{1000 * cpu / max(1, result['done']):.3f}"
    print(
        f"{level:>5} {name:<11} {result['clients']:>2} {result['done']:>5}"
        f" {result['errors']:>4} {result['rate']:>7.1f} {result['p50_ms']:>7.2f}"
        f" {result['p99_ms']:>7.2f} {added50:>6} {interval:>13} {added99:>7} {interval99:>15}"
        f" {cpu_req:>10} {tok_cpu:>9} {rss_text:>7}"
        f" {_ms(result['own_p50_ms']):>6} {_ms(result['own_p99_ms']):>6}"
        f" {'-' if load is None else f'{load:.0f}':>5}",
        flush=True,
    )
    if result["error_sample"]:
        print(f"      errors e.g. {result['error_sample']}", flush=True)


def _start_py_spy(
    args: argparse.Namespace, pids: list[int], level: int, name: str
) -> tuple[Any, Path] | None:
    if args.py_spy is None or not pids:
        return None
    binary = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    args.py_spy.mkdir(parents=True, exist_ok=True)
    out = args.py_spy / f"{level}-{name}.txt"
    argv = [binary, "record", "--pid", str(pids[0]), "--rate", "997", "--format", "raw"]
    argv += ["--nonblocking", "--output", str(out)]
    process = start_group(argv, env=dict(os.environ), log_path=args.py_spy / "py-spy.log")
    time.sleep(1.0)  # let it attach before the load starts
    return process, out


def _print_py_spy(process: Any, out: Path, top: int = 18) -> None:
    """Stop py-spy and print the functions with the most own samples (collapsed stacks).

    py-spy leaves out idle samples by default, so the shares are of the gateway's busy time.
    """
    import signal

    process.send_signal(signal.SIGINT)
    process.wait(timeout=30)
    own: dict[str, int] = {}
    total = 0
    for line in out.read_text().splitlines() if out.exists() else []:
        stack, _, count = line.rpartition(" ")
        frame = stack.rsplit(";", 1)[-1]
        own[frame] = own.get(frame, 0) + int(count)
        total += int(count)
    print(f"      py-spy: {total} busy samples; top own-time frames:")
    for frame, count in sorted(own.items(), key=lambda item: -item[1])[:top]:
        print(f"      {100 * count / max(1, total):5.1f}%  {frame[:110]}")


@dataclass(frozen=True)
class Helper:
    """A helper process measured like a gateway (CPU, RSS): the relay."""

    process: subprocess.Popen[bytes]
    url: str


def _start_relay(root: Path, upstream_port: int, pin: set[int] | None) -> Helper:
    """Start scripts/tcp_relay.py in front of Triton's HTTP port, on the gateways' CPUs."""
    port = free_port()
    argv = [sys.executable, str(REPO_ROOT / "scripts" / "tcp_relay.py"), "--listen", str(port)]
    argv += ["--upstream", f"127.0.0.1:{upstream_port}"]
    process = start_group(argv, env=dict(os.environ), log_path=root / "relay.log")
    relay = Helper(process, f"http://127.0.0.1:{port}")
    if not wait_until(lambda: _http_ok(relay.url + "/v2/health/ready"), timeout_s=10):
        stop_group(process)
        raise RuntimeError(f"the relay did not start; see {root / 'relay.log'}")
    if pin:
        pin_group(process.pid, pin)
    return relay


def _http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


if __name__ == "__main__":
    sys.exit(main())
