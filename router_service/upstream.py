"""One Triton server of an expert: pooled gRPC channels, in-flight cap with a wait queue, health.

An :class:`Upstream` is created (channels opened) before the routing table that names it goes
live, shared by every request of the replica, and closed only after its in-flight requests end.

Each request runs on its own bidirectional ``ModelStreamInfer`` call, one request at a time per
call. A call whose request ended cleanly (final response read) is kept open for the next
request (up to ``limits.idle_streams_per_upstream``): starting a grpc.aio call costs about
0.3 ms of the time to first token and of CPU, which a kept call skips. A call is never shared by
two requests at once, so cancelling it (client gone, timeout) still cancels exactly one request
in Triton; a cancelled or failed call is dropped, never kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import deque
from dataclasses import dataclass

import grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc

from router_service.config import HealthConfig, LimitsConfig, UpstreamSpec
from router_service.errors import OverloadedError
from router_service.health import BreakerState, CircuitBreaker
from router_service.triton_codec import parse_stream_response

__all__ = ["ProbeResult", "Upstream", "UpstreamKey", "send_request"]

UpstreamKey = tuple[str, str]  # (host:port, model)

_MODEL_STREAM_INFER = "/inference.GRPCInferenceService/ModelStreamInfer"

_CHANNEL_OPTIONS: list[tuple[str, int]] = [
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.max_pings_without_data", 0),
    # Separate subchannel pools so several channels to one server really are separate TCP
    # connections (one connection became a bottleneck, triton-inference-server/server#3905).
    ("grpc.use_local_subchannel_pool", 1),
]


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """One readiness probe: ready or not, and, when the server answered, why it is unusable.

    ``problem`` is set only for a configuration fault a restart of the gateway cannot fix (a
    model that is not decoupled); an unreachable or loading server has ``problem=None``.
    """

    is_ready: bool
    problem: str | None = None


class Upstream:
    """A Triton server hosting one expert model, with its channels, limiter and breaker."""

    def __init__(self, spec: UpstreamSpec, *, limits: LimitsConfig, health: HealthConfig) -> None:
        self.spec = spec
        self.max_inflight = limits.max_inflight_per_upstream
        self.max_queue = limits.max_queue_per_upstream
        self.breaker = CircuitBreaker(
            failure_threshold=health.failure_threshold, cooldown_s=health.cooldown_s
        )
        self.inflight = 0
        self.last_probe_ok: bool | None = None
        self.last_problem: str | None = None
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._idle = asyncio.Event()
        self._idle.set()
        self._channels = [
            grpc.aio.insecure_channel(spec.address, options=_CHANNEL_OPTIONS)
            for _ in range(limits.channels_per_upstream)
        ]
        # Probes are a few calls per interval: the first channel carries them all.
        self._probe_stub = service_pb2_grpc.GRPCInferenceServiceStub(self._channels[0])
        # Requests arrive serialized (triton_codec.encode_infer_request): no request serializer.
        self._next_stream_method = itertools.cycle(
            [
                c.stream_stream(
                    _MODEL_STREAM_INFER,
                    response_deserializer=parse_stream_response,
                    _registered_method=True,
                )
                for c in self._channels
            ]
        )
        self.max_idle_streams = limits.idle_streams_per_upstream
        self._idle_streams: list[grpc.aio.StreamStreamCall] = []
        self._is_closed = False

    @property
    def key(self) -> UpstreamKey:
        """Identity of the upstream across routing-table generations."""
        return (self.spec.address, self.spec.model)

    @property
    def queued(self) -> int:
        """Requests waiting for an in-flight slot."""
        return len(self._waiters)

    @property
    def load(self) -> int:
        """In-flight plus queued requests; the least-loaded choice compares this."""
        return self.inflight + len(self._waiters)

    def state(self, now: float | None = None) -> BreakerState:
        """healthy / ejected / half_open, as the breaker sees it now."""
        return self.breaker.state(time.monotonic() if now is None else now)

    def is_available(self, now: float) -> bool:
        """Whether a new request may be sent here (breaker closed or its half-open trial free)."""
        return self.breaker.allows_request(now)

    async def acquire(self, *, queue_wait_s: float) -> None:
        """Take an in-flight slot, waiting in a bounded FIFO queue when the cap is reached.

        Raises:
            OverloadedError: the cap and the queue are full, or the wait timed out.
        """
        if self.inflight < self.max_inflight and not self._waiters:
            self.inflight += 1
            self._idle.clear()
            return
        if len(self._waiters) >= self.max_queue:
            raise OverloadedError(
                f"upstream {self.spec.address} is at its in-flight cap and its queue is full",
                code="overloaded",
                retry_after_s=1,
            )
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), queue_wait_s)
        except (asyncio.TimeoutError, asyncio.CancelledError) as exc:
            if waiter.done() and not waiter.cancelled():
                self.release()  # the slot was handed over just as we gave up
            else:
                waiter.cancel()
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise OverloadedError(
                f"timed out waiting for a slot on {self.spec.address}",
                code="overloaded",
                retry_after_s=1,
            ) from exc

    def release(self) -> None:
        """Give a slot back; the oldest live waiter takes it over directly."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.inflight -= 1
        if self.inflight == 0:
            self._idle.set()

    @property
    def idle_streams(self) -> int:
        """Open calls waiting for their next request."""
        return len(self._idle_streams)

    def take_stream(self) -> tuple[grpc.aio.StreamStreamCall, bool]:
        """A ModelStreamInfer call for one request, and whether it is a kept (reused) one.

        Kept calls are taken newest first: the newest is the least likely to have been closed by
        the server meanwhile. A kept call can still turn out dead at its first write; the caller
        retries on a new call then (:meth:`open_stream`) instead of blaming the server.
        """
        while self._idle_streams:
            call = self._idle_streams.pop()
            if not call.done():
                return call, True
        return self.open_stream(), False

    def open_stream(self) -> grpc.aio.StreamStreamCall:
        """Start a new ModelStreamInfer call on the next pooled channel."""
        return next(self._next_stream_method)()

    def keep_stream(self, call: grpc.aio.StreamStreamCall) -> None:
        """Keep ``call`` for a later request; only after its request's final response was read."""
        if self._is_closed or call.done() or len(self._idle_streams) >= self.max_idle_streams:
            call.cancel()
            return
        self._idle_streams.append(call)

    def drop_idle_streams(self) -> None:
        """Cancel every kept call (the server failed or is going away: they are likely dead)."""
        idle, self._idle_streams = self._idle_streams, []
        for call in idle:
            call.cancel()

    async def probe(self, *, timeout_s: float) -> ProbeResult:
        """Ask Triton whether the server and the model are ready, and the model decoupled.

        The gateway streams every request with ModelStreamInfer, which only a decoupled model
        answers token by token (a TensorRT-LLM ensemble reports itself decoupled when its
        ``tensorrt_llm`` step has ``decoupled_mode: true``). The config is read on every probe,
        not once, so a model reloaded with a fixed config is picked up without a gateway restart.
        """
        stub = self._probe_stub
        model = self.spec.model
        try:
            server = await stub.ServerReady(service_pb2.ServerReadyRequest(), timeout=timeout_s)
            if not server.ready:
                return ProbeResult(is_ready=False)
            ready = await stub.ModelReady(
                service_pb2.ModelReadyRequest(name=model), timeout=timeout_s
            )
            if not ready.ready:
                return ProbeResult(is_ready=False)
            answer = await stub.ModelConfig(
                service_pb2.ModelConfigRequest(name=model), timeout=timeout_s
            )
        except grpc.aio.AioRpcError:
            return ProbeResult(is_ready=False)
        if not answer.config.model_transaction_policy.decoupled:
            return ProbeResult(
                is_ready=False,
                problem=(
                    f"model '{model}' on {self.spec.address} is not decoupled "
                    "(model_transaction_policy.decoupled is false), so it cannot stream; "
                    "deploy it with decoupled_mode: true"
                ),
            )
        return ProbeResult(is_ready=True)

    async def run_probe(self, *, timeout_s: float) -> ProbeResult:
        """Probe once and feed the result to the breaker; returns the result."""
        result = await self.probe(timeout_s=timeout_s)
        self.last_probe_ok = result.is_ready
        self.last_problem = result.problem
        self.breaker.record_probe(is_ready=result.is_ready, now=time.monotonic())
        return result

    async def close(self, *, drain_deadline_s: float) -> None:
        """Wait (up to the deadline) for in-flight requests to end, then close the channels."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._idle.wait(), drain_deadline_s)
        self._is_closed = True
        self.drop_idle_streams()
        await asyncio.gather(*(channel.close() for channel in self._channels))


async def send_request(
    call: grpc.aio.StreamStreamCall, request: bytes, *, half_close: bool
) -> None:
    """Write one serialized request on ``call`` in the caller's task; half-close when it will
    not be kept.

    Handing grpc.aio a request iterator instead costs a consumer task (and a loop hop) per
    request, the largest avoidable item in the gateway's per-request profile.

    Raises:
        grpc.aio.AioRpcError: the call failed (e.g. the server is unreachable).
    """
    try:
        await call.write(request)
        if half_close:
            await call.done_writing()
    except asyncio.InvalidStateError:
        pass  # the call has already ended: the first read() raises its status
