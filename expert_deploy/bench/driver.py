"""The load: simulated users sharded over worker processes, closed or open loop, with warm-up.

Each worker process runs its own event loop (uvloop when installed, for HTTP) and owns its
users' connections. The parent starts the workers, waits until each has opened its
connections, then gives every worker the same start instant on the shared monotonic clock
(``perf_counter_ns`` is ``CLOCK_MONOTONIC`` on Linux, one clock for all processes). Workers
write their records to ``parts/worker-<i>.jsonl``; the parent merges them.

* Closed loop: a user sends, waits for the stream to end, and sends again at once. Its intended
  start ``a`` is the moment it became ready, so ``s − a`` is the client's own delay.
* Open loop: Poisson arrivals at ``rate`` requests per second in total (``rate / processes`` per
  worker, independent seeded streams); a late send still counts from its scheduled ``a``.
* Users start spread over the first half of the warm-up, so the first wave does not land in
  the measurement. The measurement phase is ``[T0, T1)`` with ``T0 = start + warm-up``; with
  ``--duration`` ``T1 = T0 + duration``; with ``--requests`` the workers stop issuing after
  their share and ``T1`` is the last measured request's end. Requests still open at ``T1`` get
  ``drain_s`` to finish, then are cancelled and recorded as incomplete.

Each worker also records its own lag: the delay of a ``call_soon`` callback every 10 ms (how
long data that just arrived would wait for the loop), and its CPU share during the run; a run
where any worker passed 80 % CPU is flagged, because its timestamps may be late.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import multiprocessing
import os
import random
import tempfile
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from expert_deploy.bench.clients_grpc import GrpcClients, GrpcTarget, stream_grpc
from expert_deploy.bench.clients_http import HttpTarget, SseConnection, stream_http
from expert_deploy.bench.errors import BenchError
from expert_deploy.bench.records import RequestRecord, read_records, write_records
from expert_deploy.bench.workload import Workload

NS = 1_000_000_000
CPU_FLAG_SHARE = 0.8
LAG_PROBE_INTERVAL_S = 0.01
#: How many users one worker process takes when the count is chosen automatically.
USERS_PER_PROCESS = 250


@dataclass(frozen=True)
class Target:
    """One endpoint: the gateway or NGINX over HTTP, or Triton / the gateway over gRPC."""

    http: HttpTarget | None = None
    grpc: GrpcTarget | None = None

    @property
    def protocol(self) -> Literal["http", "grpc"]:
        return "http" if self.http is not None else "grpc"

    @property
    def label(self) -> str:
        if self.http is not None:
            scheme = "https" if self.http.is_tls else "http"
            return f"{scheme}://{self.http.host}:{self.http.port}{self.http.path}"
        assert self.grpc is not None
        return f"grpc://{self.grpc.address}/{self.grpc.model}"


@dataclass(frozen=True)
class LoadSpec:
    """How much load, for how long."""

    users: int
    mode: Literal["closed", "open"] = "closed"
    rate_rps: float | None = None
    warmup_s: float = 2.0
    duration_s: float | None = 10.0
    requests: int | None = None
    max_tokens: int | None = 1000
    processes: int | None = None
    seed: int = 0
    drain_s: float = 30.0
    request_timeout_s: float = 600.0

    def worker_count(self) -> int:
        """Processes to use: as asked, else one per ``USERS_PER_PROCESS`` users, up to the CPUs."""
        if self.processes is not None:
            return max(1, self.processes)
        wanted = math.ceil(max(self.users, 1) / USERS_PER_PROCESS)
        return max(1, min(wanted, os.cpu_count() or 1, max(self.users, 1)))


@dataclass(frozen=True)
class WorkerStats:
    """What one worker saw of itself."""

    index: int
    users: int
    requests: int
    peak_inflight: int
    cpu_share: float
    loop_lag_p50_ms: float
    loop_lag_p99_ms: float
    loop_lag_max_ms: float

    @property
    def is_saturated(self) -> bool:
        return self.cpu_share > CPU_FLAG_SHARE


@dataclass
class RunResult:
    """Records (times relative to the start instant) and what the run needs to be read."""

    spec: LoadSpec
    target: Target
    records: list[RequestRecord]
    t0_ns: int
    t1_ns: int
    #: ``time.time_ns()`` at the start instant (records' time 0), to align with server logs.
    wall_anchor_ns: int
    workers: list[WorkerStats] = field(default_factory=list)


@dataclass(frozen=True)
class _Job:
    index: int
    users: tuple[int, ...]
    spec: LoadSpec
    target: Target
    workload: Workload
    parts_dir: Path
    #: Measured requests this worker issues (``--requests``), or None for a duration.
    quota: int | None
    rate_rps: float | None
    workers: int


def run_load(spec: LoadSpec, target: Target, workload: Workload, out_dir: Path) -> RunResult:
    """Run one load point with worker processes; returns every request's record.

    Workers write their records under a temporary folder in ``out_dir``, removed afterwards.

    Raises:
        BenchError: a worker failed (the message has its traceback's last line).
    """
    workers = spec.worker_count()
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".parts-", dir=out_dir) as temp:
        return _run_workers(spec, target, workload, Path(temp), workers)


def _run_workers(
    spec: LoadSpec, target: Target, workload: Workload, parts: Path, workers: int
) -> RunResult:
    context = multiprocessing.get_context("spawn")
    ready = context.Queue()
    go = context.Event()
    start_at = context.Value("q", 0)
    jobs = []
    for index in range(workers):
        users = tuple(range(index, spec.users, workers)) if spec.mode == "closed" else ()
        quota = None
        if spec.requests is not None:
            quota = spec.requests // workers + (1 if index < spec.requests % workers else 0)
        rate = spec.rate_rps / workers if spec.rate_rps is not None else None
        jobs.append(_Job(index, users, spec, target, workload, parts, quota, rate, workers))
    processes = [
        context.Process(target=_worker_main, args=(job, ready, go, start_at), daemon=True)
        for job in jobs
    ]
    for process in processes:
        process.start()
    try:
        _wait_for(ready, workers, "ready", processes)
        start_ns = time.perf_counter_ns() + NS // 5
        wall_anchor = time.time_ns() + NS // 5
        start_at.value = start_ns
        go.set()
        finished = _wait_for(ready, workers, "done", processes)
    finally:
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
    records: list[RequestRecord] = []
    for index in range(workers):
        records.extend(read_records(parts / f"worker-{index}.jsonl"))
    records.sort(key=lambda r: (r.a_ns, r.id))
    t0 = round(spec.warmup_s * NS)
    if spec.duration_s is not None:
        t1 = t0 + round(spec.duration_s * NS)
    else:
        ends = [r.end_ns or r.a_ns for r in records if r.a_ns >= t0]
        t1 = max(ends, default=t0) + 1
    stats = [WorkerStats(**item) for item in sorted(finished, key=lambda s: s["index"])]
    return RunResult(spec, target, records, t0, t1, wall_anchor, stats)


def _wait_for(
    queue: Any, count: int, kind: str, processes: Sequence[multiprocessing.process.BaseProcess]
) -> list[dict[str, Any]]:
    """Collect ``count`` messages of ``kind`` from the workers; raise if one failed or died."""
    import queue as queue_module

    messages: list[dict[str, Any]] = []
    while len(messages) < count:
        try:
            message = queue.get(timeout=1.0)
        except queue_module.Empty:
            dead = [p for p in processes if p.exitcode not in (None, 0)]
            if dead:
                raise BenchError(
                    f"a load worker exited with code {dead[0].exitcode} before it was {kind}"
                ) from None
            continue
        if message["kind"] == "error":
            raise BenchError(f"load worker {message['index']} failed: {message['error']}")
        if message["kind"] == kind:
            messages.append(message["data"])
    return messages


def _worker_main(job: _Job, ready: Any, go: Any, start_at: Any) -> None:
    try:
        if job.target.protocol == "http":
            with contextlib.suppress(ImportError):
                import uvloop

                uvloop.install()
        asyncio.run(_Worker(job).run(ready, go, start_at))
    except BaseException as error:
        last = traceback.format_exc().strip().splitlines()[-1]
        ready.put({"kind": "error", "index": job.index, "error": f"{last} ({error!r})"[:500]})
        raise


class _Worker:
    """One process's users, connections and records."""

    def __init__(self, job: _Job) -> None:
        self.job = job
        self.spec = job.spec
        self.records: list[RequestRecord] = []
        self.rng = random.Random(f"{job.spec.seed}-{job.index}")  # noqa: S311 (a workload, not a secret)
        self.inflight = 0
        self.peak_inflight = 0
        self.measured_started = 0
        self.lags_ns: list[int] = []
        self.http_pools: dict[int, list[SseConnection]] = {}
        self.grpc: GrpcClients | None = None
        self.sequence = 0

    async def run(self, ready: Any, go: Any, start_at: Any) -> None:
        job, spec = self.job, self.spec
        loop = asyncio.get_running_loop()
        streams = len(job.users) if spec.mode == "closed" else max(1, spec.users)
        if job.target.grpc is not None:
            self.grpc = GrpcClients(job.target.grpc, streams)
        elif job.target.http is not None and spec.mode == "closed":
            opened = await asyncio.gather(
                *(SseConnection.open(job.target.http) for _ in job.users),
                return_exceptions=True,
            )
            for user, connection in zip(job.users, opened, strict=True):
                self.http_pools[user] = (
                    [connection] if isinstance(connection, SseConnection) else []
                )
        ready.put({"kind": "ready", "index": job.index, "data": {}})
        await loop.run_in_executor(None, go.wait)
        self.start_ns = int(start_at.value)
        self.t0_ns = self.start_ns + round(spec.warmup_s * NS)
        self.t1_ns: int | None = (
            self.t0_ns + round(spec.duration_s * NS) if spec.duration_s is not None else None
        )
        lag_task = asyncio.ensure_future(self._probe_lag())
        cpu0, wall0 = time.process_time(), time.perf_counter()
        if spec.mode == "closed":
            tasks = [asyncio.ensure_future(self._user(u)) for u in job.users]
        else:
            tasks = [asyncio.ensure_future(self._arrivals())]
        await self._finish(tasks)
        cpu_share = (time.process_time() - cpu0) / max(time.perf_counter() - wall0, 1e-9)
        lag_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await lag_task
        await self._close()
        for record in self.records:
            _relative(record, self.start_ns)
        write_records(job.parts_dir / f"worker-{job.index}.jsonl", self.records)
        lags = sorted(self.lags_ns)

        def lag_ms(p: float) -> float:
            return lags[min(len(lags) - 1, int(p * len(lags)))] / 1e6 if lags else math.nan

        ready.put(
            {
                "kind": "done",
                "index": job.index,
                "data": {
                    "index": job.index,
                    "users": len(job.users),
                    "requests": len(self.records),
                    "peak_inflight": self.peak_inflight,
                    "cpu_share": cpu_share,
                    "loop_lag_p50_ms": lag_ms(0.5),
                    "loop_lag_p99_ms": lag_ms(0.99),
                    "loop_lag_max_ms": lags[-1] / 1e6 if lags else math.nan,
                },
            }
        )

    async def _finish(self, tasks: Sequence[asyncio.Future[None]]) -> None:
        """Wait for the users; past ``T1 + drain`` cancel what is still open (incomplete)."""
        if self.t1_ns is None:
            await asyncio.gather(*tasks)
            return
        deadline = self.t1_ns + round(self.spec.drain_s * NS)
        timeout = max(0.0, (deadline - time.perf_counter_ns()) / NS)
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
        for task in tasks:
            error = None if task.cancelled() else task.exception()
            if error is not None:
                raise error

    def _may_start(self, a_ns: int) -> bool:
        """Whether a request intended at ``a_ns`` is still part of the run."""
        if self.t1_ns is not None:
            return a_ns < self.t1_ns
        if a_ns < self.t0_ns:
            return True
        return self.job.quota is not None and self.measured_started < self.job.quota

    async def _user(self, user: int) -> None:
        spec = self.spec
        offset = round(spec.warmup_s / 2 * NS * (user / max(spec.users, 1)))
        await _sleep_until(self.start_ns + offset)
        a_ns = time.perf_counter_ns()
        while self._may_start(a_ns):
            await self._request(user, a_ns)
            a_ns = time.perf_counter_ns()

    async def _arrivals(self) -> None:
        assert self.job.rate_rps is not None
        a_ns = self.start_ns
        pending: set[asyncio.Future[None]] = set()
        arrival = 0
        while True:
            a_ns += round(self.rng.expovariate(self.job.rate_rps) * NS)
            if not self._may_start(a_ns):
                break
            if a_ns >= self.t0_ns:
                self.measured_started += 1  # reserve the quota at schedule time
            await _sleep_until(a_ns)
            user = arrival * self.job.workers + self.job.index  # unique over workers
            task = asyncio.ensure_future(self._request(user, a_ns, counted=True))
            pending.add(task)
            task.add_done_callback(pending.discard)
            arrival += 1
        if pending:
            await asyncio.gather(*pending)

    async def _request(self, user: int, a_ns: int, *, counted: bool = False) -> None:
        job, spec = self.job, self.spec
        prompt, text = job.workload.next(self.rng)
        self.sequence += 1
        record = RequestRecord(
            id=f"{job.index}-{user}-{self.sequence}",
            user=user,
            worker=job.index,
            protocol=job.target.protocol,
            prompt_id=prompt.id,
            cluster=prompt.cluster,
            a_ns=a_ns,
            requested_tokens=spec.max_tokens,
            input_words=len(text.split()),
        )
        if a_ns >= self.t0_ns and not counted:
            self.measured_started += 1
        self.records.append(record)
        self.inflight += 1
        self.peak_inflight = max(self.peak_inflight, self.inflight)
        try:
            await asyncio.wait_for(self._send(user, record, text), spec.request_timeout_s)
        except asyncio.TimeoutError:
            record.end_ns = time.perf_counter_ns()
            record.fail("timeout", f"no end of stream within {spec.request_timeout_s} s")
        finally:
            self.inflight -= 1

    async def _send(self, user: int, record: RequestRecord, text: str) -> None:
        target, spec = self.job.target, self.spec
        if target.http is not None:
            request = target.http.request_bytes(text, spec.max_tokens)
            pool = self.http_pools.setdefault(user if spec.mode == "closed" else -1, [])
            await stream_http(pool, target.http, record, request)
        else:
            assert self.grpc is not None
            message = self.grpc.request(record.id, text, spec.max_tokens)
            await stream_grpc(self.grpc, user, record, message)

    async def _probe_lag(self) -> None:
        """Every 10 ms: how long a callback queued now waits before the loop runs it."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(LAG_PROBE_INTERVAL_S)
            queued = time.perf_counter_ns()
            if queued >= self.t0_ns:
                loop.call_soon(self._lag_seen, queued)

    def _lag_seen(self, queued_ns: int) -> None:
        self.lags_ns.append(time.perf_counter_ns() - queued_ns)

    async def _close(self) -> None:
        for pool in self.http_pools.values():
            for connection in pool:
                connection.close()
        if self.grpc is not None:
            await self.grpc.close()


def _relative(record: RequestRecord, start_ns: int) -> None:
    """Make a record's times relative to the run's start instant."""
    record.a_ns -= start_ns
    if record.s_ns is not None:
        record.s_ns -= start_ns
    record.r_ns = [t - start_ns for t in record.r_ns]
    if record.end_ns is not None:
        record.end_ns -= start_ns


async def _sleep_until(when_ns: int) -> None:
    delay = (when_ns - time.perf_counter_ns()) / NS
    if delay > 0:
        await asyncio.sleep(delay)
