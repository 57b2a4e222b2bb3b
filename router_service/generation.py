"""A started generation: the first upstream chunk is in hand; the rest streams on iteration.

See :mod:`router_service.dispatch` for how a :class:`Generation` is obtained and used.
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import grpc

from router_service.errors import UpstreamError, UpstreamTimeoutError
from router_service.triton_codec import decode_stream_response

if TYPE_CHECKING:
    from prometheus_client import Counter, Gauge
    from tritonclient.grpc import service_pb2

    from router_service.metrics import GatewayMetrics
    from router_service.upstream import Upstream

__all__ = ["Chunk", "Generation", "Outcome", "read_message"]

Outcome = Literal["ok", "upstream_error", "timeout", "cancelled"]


@dataclass(frozen=True, slots=True)
class Chunk:
    """Text relayed from one upstream message.

    ``token_count`` is 1 per non-empty streamed message: TensorRT-LLM's streaming ensemble sends
    one decoding step per message (beam width 1).
    """

    text: str
    token_count: int


if sys.version_info >= (3, 11):

    async def read_message(
        call: grpc.aio.StreamStreamCall, timeout_s: float
    ) -> service_pb2.ModelStreamInferResponse | object:
        """Read the next stream message (or ``grpc.aio.EOF``) within ``timeout_s``."""
        async with asyncio.timeout(timeout_s):
            return await call.read()

else:  # pragma: no cover - Python 3.10 has no asyncio.timeout; wait_for costs a task per read

    async def read_message(
        call: grpc.aio.StreamStreamCall, timeout_s: float
    ) -> service_pb2.ModelStreamInferResponse | object:
        """Read the next stream message (or ``grpc.aio.EOF``) within ``timeout_s``."""
        return await asyncio.wait_for(call.read(), timeout_s)


class Generation:
    """An open upstream stream; async-iterate it for :class:`Chunk` values, always ``aclose()``.

    Attributes:
        expert_id: the expert that serves the request.
        cluster: the predicted cluster (``None`` when the request pinned an expert).
        is_fallback: served by another expert than the cluster's own (drain or outage).
        upstream_address: ``host:port`` of the Triton server.
        upstream_ttft_s: Triton's time to first response as seen by the gateway.
        completion_tokens: tokens relayed so far.
    """

    def __init__(
        self,
        *,
        call: grpc.aio.StreamStreamCall,
        upstream: Upstream,
        first: Chunk | None,
        is_done: bool,
        expert_id: str,
        cluster: int | None,
        is_fallback: bool,
        max_tokens: int,
        pre_upstream_s: float,
        upstream_first_at: float,
        upstream_ttft_s: float,
        idle_stream_s: float,
        text_output: str,
        metrics: GatewayMetrics,
    ) -> None:
        self.expert_id = expert_id
        self.cluster = cluster
        self.is_fallback = is_fallback
        self.upstream_address = upstream.spec.address
        self.upstream_ttft_s = upstream_ttft_s
        self.completion_tokens = 0
        self.outcome: Outcome | None = None
        self._call = call
        self._upstream = upstream
        self._pending = first
        self._is_upstream_done = is_done
        self._max_tokens = max_tokens
        self._pre_upstream_s = pre_upstream_s
        self._upstream_first_at = upstream_first_at
        self._idle_stream_s = idle_stream_s
        self._text_output = text_output
        self._metrics = metrics
        self._overhead_s: float | None = None
        self._chunks = 0
        # Metric updates wait until the first token is out (see _settle); until then these
        # labelled children are not looked up.
        self._tokens_counter: Counter | None = None
        self._chunks_counter: Counter | None = None
        self._inflight_gauge: Gauge | None = None

    @property
    def finish_reason(self) -> Literal["stop", "length"]:
        """``length`` when ``max_tokens`` tokens were produced, else ``stop``."""
        return "length" if self.completion_tokens >= self._max_tokens else "stop"

    @property
    def gateway_overhead_s(self) -> float:
        """Gateway-added time to first token: fixed at the first delivery, live before it."""
        if self._overhead_s is not None:
            return self._overhead_s
        return self._pre_upstream_s + (time.perf_counter() - self._upstream_first_at)

    def mark_first_delivery(self) -> float:
        """Call when the first chunk (or the response headers) goes to the client.

        Fixes :attr:`gateway_overhead_s` and returns it; :meth:`_settle` records it in the
        overhead histogram once the first token is out.
        """
        if self._overhead_s is None:
            self._overhead_s = self.gateway_overhead_s
        return self._overhead_s

    def _settle(self) -> None:
        """Do the request's metric bookkeeping, once, after the first token went out.

        On an idle replica every step before the first token runs on cold caches (about 10×
        its hot time on the 2-vCPU test VM), so the histogram observations and the labelled
        children (labels() takes a lock and builds a key) wait for the second read or the end.
        """
        if self._inflight_gauge is not None:
            return
        metrics = self._metrics
        self._inflight_gauge = metrics.inflight.labels(self.expert_id)
        self._inflight_gauge.inc()
        self._tokens_counter = metrics.tokens_total.labels(self.expert_id)
        self._chunks_counter = metrics.chunks_total.labels(self.expert_id)
        self._tokens_counter.inc(self.completion_tokens)
        self._chunks_counter.inc(self._chunks)
        metrics.upstream_ttft_seconds.labels(self.expert_id).observe(self.upstream_ttft_s)
        if self._overhead_s is not None:
            metrics.overhead_seconds.observe(self._overhead_s)

    def __aiter__(self) -> Generation:
        return self

    async def __anext__(self) -> Chunk:
        if self._pending is not None:
            chunk, self._pending = self._pending, None
            return self._count(chunk)
        self._settle()
        if self.outcome is not None or self._is_upstream_done:
            self._finish("ok")
            raise StopAsyncIteration
        while True:
            message = await self._read()
            if message is grpc.aio.EOF:
                self._finish("ok")
                raise StopAsyncIteration
            decoded = decode_stream_response(message, text_output=self._text_output)
            if decoded.error is not None:
                self._finish("upstream_error")
                raise UpstreamError(f"expert {self.expert_id}: {decoded.error}", code="upstream")
            self._is_upstream_done = decoded.is_final
            if decoded.text:
                return self._count(Chunk(decoded.text, 1))
            if decoded.is_final:
                self._finish("ok")
                raise StopAsyncIteration

    async def _read(self) -> object:
        try:
            return await read_message(self._call, self._idle_stream_s)
        except TimeoutError as exc:
            self._finish("timeout")
            raise UpstreamTimeoutError(
                f"expert {self.expert_id}: no token for {self._idle_stream_s} s", code="timeout"
            ) from exc
        except grpc.aio.AioRpcError as exc:
            self._upstream.breaker.record_failure(time.monotonic())
            self._finish("upstream_error")
            raise UpstreamError(
                f"expert {self.expert_id}: upstream stream failed ({exc.code().name})",
                code="upstream",
            ) from exc

    def _count(self, chunk: Chunk) -> Chunk:
        self.completion_tokens += chunk.token_count
        self._chunks += 1
        if self._tokens_counter is not None and self._chunks_counter is not None:
            self._tokens_counter.inc(chunk.token_count)
            self._chunks_counter.inc()
        return chunk  # before _settle: _settle adds what was counted so far

    async def aclose(self) -> None:
        """End the generation; cancels the upstream call if it is still running (client left)."""
        self._finish("cancelled")

    def _finish(self, outcome: Outcome) -> None:
        if self.outcome is not None:
            return
        self._settle()
        self.outcome = outcome
        if outcome == "ok" and self._is_upstream_done:
            # The final response is read, so nothing more comes on this call: keep it for the
            # next request (before release(), which may hand the slot to a waiting request).
            self._upstream.keep_stream(self._call)
        elif not self._call.done():
            self._call.cancel()
        self._upstream.release()
        if self._inflight_gauge is not None:
            self._inflight_gauge.dec()
        self._metrics.requests_total.labels(self.expert_id, outcome).inc()
