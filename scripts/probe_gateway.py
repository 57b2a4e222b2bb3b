"""The gateway's added TTFT for one request while it carries N streams: a probe under load.

``bench_gateway.py`` times every stream of a closed loop. At 1,000 streams on a 2-vCPU machine
its load side (the clients timing 1,000 streams, Triton's Python stub) shares one vCPU, the
direct baseline's TTFT already holds a queue of several ms, and the added TTFT is the difference
of two queued distributions: it moved by 1-2 ms between identical runs. Here the load side only
keeps the streams going, and one probe client measures:

* N - 1 background streams through the gateway (the bench's client and load shape: streams
  spread over one request's duration, synthetic TPOT from ``--token-rate``), in one process;
* one probe: sequential one-token requests, alternating the gateway and Triton's own SSE
  endpoint (the same client; the order of each pair is random), ``--gap-ms`` apart, so each
  probe finds the gateway carrying N - 1 streams and Triton serving them. ``--protocol grpc``
  probes over ModelStreamInfer instead (the gateway's KServe front end against Triton's gRPC
  port, one kept call each, as the bench does), and the background streams use gRPC too, so the
  gateway's gRPC server holds the N streams. ``--nginx`` probes (and loads) over HTTP through
  NGINX in front of two replicas, with the config ``expert-deploy up`` renders, as the bench's
  ``nginx-http`` path does.

Prints per level: probe TTFT p50/p99 both ways, added p50/p99 with 95 % bootstrap intervals, the
gateway's own ``x-expert-router-overhead-ms`` p50/p99, and how busy the load side's CPUs were.
The gateway (``--pin-gateways``, default the last CPU) runs on CPUs of its own.

Usage: ``.venv/bin/python scripts/probe_gateway.py [--levels 1 100 1000]``
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import multiprocessing
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_gateway import (
    PROMPT,
    REPO_ROOT,
    ROUTER_CORPUS,
    Job,
    Target,
    _grpc_stream,
    _http_stream,
    _job_main,
    _percentile,
    _setting,
    added_intervals,
    busy_percent,
    cpu_jiffies,
    level_tpot_ms,
    parse_cpus,
    pin_group,
    start_nginx,
)
from cpu_idle import add_gateway_idle_option, describe_idle, run_with_gateway_idle
from sse_client import SseConnection
from tritonclient.grpc import service_pb2_grpc

from router_service.classifier.fit import fit_router
from tests.support.gateway import Gateway, routing_table
from tests.support.ports import free_port
from tests.support.processes import stop_group
from tests.support.triton import TritonServer, write_synthetic_repository


async def probe(
    gateway: Target, direct: Target, job: Job, pairs: int, gap_s: float, seed: int
) -> dict[str, list[float]]:
    """``pairs`` sequential requests each way, in random order per pair; TTFTs in seconds."""
    order = random.Random(seed)
    found: dict[str, list[float]] = {"gateway": [], "direct": [], "own": []}
    targets = (gateway, direct)
    connections = {t.name: SseConnection(t.address) for t in targets if not t.is_grpc}
    channels = {t.name: grpc.aio.insecure_channel(t.address) for t in targets if t.is_grpc}
    calls = {
        name: service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelStreamInfer()
        for name, channel in channels.items()
    }
    ids = itertools.count()
    try:
        for _ in range(pairs):
            for target in order.sample(targets, 2):
                overheads = found["own"] if target is gateway else []
                if target.is_grpc:
                    call = calls[target.name]
                    request_id = f"probe-{next(ids)}"
                    ttft, _ = await _grpc_stream(call, target, job, request_id, overheads)
                else:
                    connection = connections[target.name]
                    ttft, _ = await _http_stream(connection, target, job, overheads)
                found["gateway" if target is gateway else "direct"].append(ttft)
                await asyncio.sleep(gap_s)
    finally:
        for connection in connections.values():
            await connection.close()
        for call in calls.values():
            call.cancel()
        for channel in channels.values():
            await channel.close()
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 100, 1000])
    parser.add_argument("--pairs", type=int, default=300, help="probe pairs per level")
    parser.add_argument("--gap-ms", type=float, default=20.0)
    parser.add_argument("--protocol", choices=["http", "grpc"], default="http")
    parser.add_argument("--ttft-ms", type=float, default=5.0)
    parser.add_argument("--tpot-ms", type=float, default=2.0)
    parser.add_argument("--tokens", type=int, default=16, help="per background request")
    parser.add_argument("--token-rate", type=float, default=2000.0)
    parser.add_argument("--pin-gateways", type=parse_cpus, help="default: the last CPU")
    parser.add_argument(
        "--nginx",
        action="store_true",
        help="probe over HTTP through NGINX in front of two replicas (the bench's nginx-http)",
    )
    parser.add_argument(
        "--keep-warm-ms",
        type=float,
        help="the gateway's keep_warm.interval_ms (default: the gateway's; 0: off)",
    )
    add_gateway_idle_option(parser)
    args = parser.parse_args()
    if args.nginx and args.protocol != "http":
        parser.error("--nginx probes over HTTP; leave out --protocol grpc")
    if args.nginx and shutil.which("nginx") is None:
        parser.error("--nginx needs nginx on PATH (apt-get install nginx)")
    cpus = os.sched_getaffinity(0)
    if args.pin_gateways is None and len(cpus) >= 2:
        args.pin_gateways = {max(cpus)}
    if args.pin_gateways and not args.pin_gateways < cpus:
        parser.error("--pin-gateways must leave at least one CPU to the load side")
    return run_with_gateway_idle(parser, args, run)


def run(args: argparse.Namespace) -> int:
    """Start Triton, the gateway(s) and nginx, and print one row per level."""
    cpus = os.sched_getaffinity(0)
    root = Path(tempfile.mkdtemp(prefix="probe_gateway_"))
    os.chdir(root)  # python -m router_service puts the working directory on sys.path
    if args.pin_gateways:
        os.sched_setaffinity(0, cpus - args.pin_gateways)
    load_cpus = os.sched_getaffinity(0)
    started: list[TritonServer | Gateway | subprocess.Popen[bytes]] = []
    try:
        repository = write_synthetic_repository(
            root / "repo", ttft_ms=args.ttft_ms, tpot_ms=args.tpot_ms, default_tokens=args.tokens
        )
        triton = TritonServer(repository=repository, workdir=root / "triton").start()
        started.append(triton)
        fit_router(ROUTER_CORPUS, k=3, seed=0).save(root / "router")
        config = {
            "router_dir": str(root / "router"),
            "routing": routing_table(1, {f"e{i}": ([i], [triton.grpc_port]) for i in range(3)}),
            "log_level": "warning",
            "limits": {"max_inflight_per_upstream": 4096, "max_queue_per_upstream": 4096},
            "grpc_port": free_port(),
        }
        if args.keep_warm_ms is not None:
            config["keep_warm"] = {"interval_ms": args.keep_warm_ms}
        source = {"PYTHONPATH": str(REPO_ROOT)}  # this checkout's router_service
        gateways = []
        for index in range(2 if args.nginx else 1):
            replica = {**config, "grpc_port": free_port()} if index else config
            gateway = Gateway(root / f"gateway{index}", replica, env=source).start()
            started.append(gateway)
            gateways.append(gateway)
            if args.pin_gateways and gateway.process is not None:
                pin_group(gateway.process.pid, args.pin_gateways)
        gateway = gateways[0]
        if args.nginx:
            nginx, url = start_nginx(root / "nginx", gateways, args.pin_gateways)
            started.append(nginx)
            if url is None:
                print(f"nginx did not start; see {root / 'nginx' / 'logs'}", file=sys.stderr)
                return 1
            routed = Target("nginx-http", url, "expert-router")
            direct = Target("triton-http", f"http://127.0.0.1:{triton.http_port}", "ensemble")
        elif args.protocol == "grpc":
            grpc_port = config["grpc_port"]
            routed = Target("gw-grpc", f"127.0.0.1:{grpc_port}", "expert-router")
            direct = Target("triton-grpc", f"127.0.0.1:{triton.grpc_port}", "ensemble")
        else:
            routed = Target("gw-http", gateway.base_url, "expert-router")
            direct = Target("triton-http", f"http://127.0.0.1:{triton.http_port}", "ensemble")
        print(
            f"synthetic model: ttft {args.ttft_ms} ms; background: {args.tokens} tokens per"
            f" request, ≤ {args.token_rate:.0f} tokens/s; probe: {args.pairs} pairs per level,"
            f" one token, {args.gap_ms} ms apart;"
            f" over {routed.name}; gateways pinned to {sorted(args.pin_gateways or [])}"
        )
        print(describe_idle(args.pin_gateways or cpus))
        print(f"keep_warm.interval_ms: {_setting(args.keep_warm_ms)}")
        print(
            f"{'level':>5} {'gw p50':>7} {'gw p99':>7} {'tri p50':>7} {'tri p99':>7} {'+p50':>6}"
            f" {'+p50 95% CI':>13} {'+p99':>6} {'+p99 95% CI':>13} {'own50':>6} {'own99':>6}"
            f" {'load%':>5}",
            flush=True,
        )
        for level in args.levels:
            _probe_level(level, routed, direct, args, load_cpus)
        return 0
    finally:
        for item in reversed(started):
            if isinstance(item, subprocess.Popen):
                stop_group(item)
            else:
                item.stop()


def _probe_level(
    level: int,
    routed: Target,
    direct: Target,
    args: argparse.Namespace,
    load_cpus: set[int],
) -> None:
    tpot_ms = level_tpot_ms(level, args.tpot_ms, args.token_rate)
    prompt = PROMPT if tpot_ms == args.tpot_ms else f"{PROMPT} [[tpot_ms={tpot_ms:.0f}]]"
    ramp_s = (args.ttft_ms + args.tokens * tpot_ms) / 1000
    background = None
    if level > 1:
        job = Job((routed,), level - 1, 10**9, time.time() + 3600, args.tokens, prompt, ramp_s)
        background = multiprocessing.get_context("fork").Process(target=_job_main, args=(job,))
        background.start()
        time.sleep(ramp_s + 2.0)  # every background stream has started and holds a request
    try:
        jiffies = cpu_jiffies(load_cpus)
        one_token = Job((), 1, 0, 0.0, 1, PROMPT, 0.0)
        found = asyncio.run(probe(routed, direct, one_token, args.pairs, args.gap_ms / 1000, level))
        load = busy_percent(jiffies, cpu_jiffies(load_cpus))
    finally:
        if background is not None:
            background.terminate()
            background.join()
    gw, tri, own = found["gateway"], found["direct"], found["own"]
    (low50, high50), (low99, high99) = added_intervals(gw, tri)

    def ms(values: list[float], q: float) -> float:
        return _percentile(values, q) * 1000

    print(
        f"{level:>5} {ms(gw, 0.5):>7.2f} {ms(gw, 0.99):>7.2f} {ms(tri, 0.5):>7.2f}"
        f" {ms(tri, 0.99):>7.2f} {ms(gw, 0.5) - ms(tri, 0.5):>6.2f}"
        f" {f'{low50 * 1000:.2f}..{high50 * 1000:.2f}':>13}"
        f" {ms(gw, 0.99) - ms(tri, 0.99):>6.2f} {f'{low99 * 1000:.1f}..{high99 * 1000:.1f}':>13}"
        f" {ms(own, 0.5):>6.2f} {ms(own, 0.99):>6.2f} {load:>5.0f}",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
