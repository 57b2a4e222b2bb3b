"""Dispatch core: classify a prompt, pick an expert and a server, open the Triton stream.

Interface for front ends (HTTP here, KServe v2 gRPC later)::

    dispatcher = Dispatcher(config, classifier, metrics=GatewayMetrics(), load_classifier=...)
    await dispatcher.start()                 # opens pooled channels, first probes, health loops
    generation = await dispatcher.open(GenerateRequest(prompt=..., params=SamplingParams(...)))
    try:
        headers: generation.expert_id, generation.cluster, generation.is_fallback
        async for chunk in generation:       # Chunk(text, token_count), as soon as each arrives
            if first: generation.mark_first_delivery()   # records gateway overhead
            ...
        generation.finish_reason, generation.completion_tokens
    finally:
        await generation.aclose()            # cancels the upstream call if still running
    await dispatcher.close()                 # on shutdown: waits for in-flight, closes channels

``open`` returns only once the first upstream message is in hand, so every failure it raises
happened before anything reached the client, and the front end can still answer with a status:

* ``BadRequestError`` (400), ``NotFoundError`` (404, unknown pinned expert id),
* ``OverloadedError`` (429, in-flight cap and queue of the chosen server are full),
* ``UpstreamError`` (502, Triton answered with an error on every server tried),
* ``NoHealthyUpstreamError`` (503, ``retry_after_s`` set: nothing healthy, or ``fallback: reject``),
* ``UpstreamTimeoutError`` (504, no first token within ``timeouts.first_token_s``).

Failover inside ``open``: a transport failure (connection refused, server gone) feeds the
server's circuit breaker and the request moves to the least-loaded other healthy server of the
same expert, then, with ``fallback: next_nearest``, to the experts of the next-nearest clusters by
centroid distance (a draining expert is skipped the same way). An in-band Triton error moves to
the expert's other servers only. Errors while iterating (``UpstreamError``,
``UpstreamTimeoutError``) happen after the first chunk: the front end ends its stream with an
error event.

Admin operations (``replace_table``, ``reload_classifier``, ``drain``/``undrain``) swap one
immutable :class:`RouterState` reference, so a request sees one consistent table and classifier.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import grpc

from router_service.config import GatewayConfig, RoutingTableSpec, UpstreamSpec, validate_against_k
from router_service.errors import (
    ConflictError,
    NoHealthyUpstreamError,
    NotFoundError,
    UpstreamError,
    UpstreamTimeoutError,
)
from router_service.generation import Chunk, Generation, read_message
from router_service.metrics import GatewayMetrics
from router_service.routing_table import (
    Expert,
    RoutingTable,
    build_table,
    candidate_experts,
    pick_least_loaded,
)
from router_service.triton_codec import (
    SamplingParams,
    decode_stream_response,
    encode_infer_request,
    encode_stream_response,
    parse_stream_response,
)
from router_service.upstream import Upstream, UpstreamKey, send_request

LOGGER = logging.getLogger("router_service")

__all__ = [
    "Chunk",
    "ClassifierLike",
    "Dispatcher",
    "GenerateRequest",
    "Generation",
    "RouterState",
    "SamplingParams",
]


class PredictionLike(Protocol):
    """What dispatch reads from a classifier prediction."""

    @property
    def cluster(self) -> int: ...

    @property
    def is_empty(self) -> bool: ...

    def ranked(self) -> list[int]: ...


class ClassifierLike(Protocol):
    """What dispatch needs from ``router_service.classifier.Classifier``."""

    @property
    def k(self) -> int: ...

    @property
    def content_hash(self) -> str: ...

    @property
    def rehearsal_prompt(self) -> str: ...

    def predict(self, text: str) -> PredictionLike: ...


@dataclass(frozen=True, slots=True)
class GenerateRequest:
    """A protocol-neutral generation request.

    ``prompt`` is sent to the expert; ``classify_text`` (default: ``prompt``) is classified.
    ``expert_id`` pins an expert and skips classification. ``received_at`` is the
    ``time.perf_counter()`` when the front end had the whole request (start of overhead).
    """

    prompt: str
    params: SamplingParams
    classify_text: str | None = None
    expert_id: str | None = None
    request_id: str = ""
    received_at: float = field(default_factory=time.perf_counter)


@dataclass(frozen=True)
class RouterState:
    """The classifier and routing table that requests see together."""

    classifier: ClassifierLike
    table: RoutingTable[Upstream]
    router_dir: Path


class _TransportFailureError(Exception):
    """The call failed before the first message; try elsewhere."""


class _InBandFailureError(Exception):
    """Triton answered the first message with an error; try the expert's other servers."""


class Dispatcher:
    """Routes requests to experts' Triton servers; owns channels, health loops and state."""

    def __init__(
        self,
        config: GatewayConfig,
        classifier: ClassifierLike,
        *,
        metrics: GatewayMetrics,
        load_classifier: Callable[[Path], ClassifierLike],
    ) -> None:
        self.config = config
        self.metrics = metrics
        self._initial_classifier = classifier
        self._load_classifier = load_classifier
        self._upstreams: dict[UpstreamKey, Upstream] = {}
        self._probe_tasks: dict[UpstreamKey, asyncio.Task[None]] = {}
        self._closing_tasks: set[asyncio.Task[None]] = set()
        self._drained: set[str] = set()
        self._swap_lock = asyncio.Lock()
        self._state: RouterState | None = None
        self.is_shutting_down = False
        #: Requests routed so far (``open`` calls): router_service.keep_warm watches it.
        self.requests_started = 0
        limits = config.limits
        self._rehearsal_params = SamplingParams(
            max_tokens=min(limits.default_max_tokens, limits.max_tokens_cap)
        )
        self._rehearsal_response = encode_stream_response(
            " warm", text_output=config.tensors.text_output, is_final=False
        )

    @property
    def state(self) -> RouterState:
        """The live classifier + routing table."""
        assert self._state is not None, "Dispatcher.start() was not awaited"
        return self._state

    @property
    def drained(self) -> frozenset[str]:
        """Ids of experts that take no new requests."""
        return frozenset(self._drained)

    async def start(self) -> None:
        """Open channels for the configured table, probe every server once, start health loops.

        Raises:
            ConfigError: the table does not cover the classifier's clusters exactly.
        """
        table = self._build(self.config.routing, self._initial_classifier.k)
        await self._probe_all(table.all_upstreams(), table)
        self._state = RouterState(self._initial_classifier, table, self.config.router_dir)
        self.metrics.generation.set(table.generation)

    async def close(self) -> None:
        """Stop health loops and close every channel after in-flight requests end."""
        for task in self._probe_tasks.values():
            task.cancel()
        deadline_s = self.config.timeouts.drain_deadline_s
        upstreams = list(self._upstreams.values())
        await asyncio.gather(*(u.close(drain_deadline_s=deadline_s) for u in upstreams))
        for task in list(self._closing_tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def begin_shutdown(self) -> None:
        """Report not ready from now on (requests in flight and new ones still run)."""
        self.is_shutting_down = True

    def is_ready(self) -> bool:
        """Not shutting down, and every cluster's expert has a server that passed its last probe."""
        if self._state is None or self.is_shutting_down:
            return False
        now = time.monotonic()
        return all(
            any(u.last_probe_ok and u.is_available(now) for u in expert.upstreams)
            for expert in self._state.table.by_cluster
        )

    # -- requests ---------------------------------------------------------------------------

    async def open(self, request: GenerateRequest) -> Generation:
        """Route ``request`` and return its generation once the first upstream message arrived.

        Raises:
            NotFoundError, OverloadedError, UpstreamError, NoHealthyUpstreamError,
            UpstreamTimeoutError: see the module docstring.
        """
        self.requests_started += 1
        state = self.state
        cluster: int | None = None
        if request.expert_id is not None:
            expert = state.table.experts.get(request.expert_id)
            if expert is None:
                raise NotFoundError(
                    f"unknown expert {request.expert_id!r}", param="model", code="model_not_found"
                )
            candidates = [expert]
        else:
            started = time.perf_counter()
            prediction = state.classifier.predict(request.classify_text or request.prompt)
            self.metrics.classify_seconds.observe(time.perf_counter() - started)
            if prediction.is_empty:
                self.metrics.empty_prompts_total.inc()
            cluster = prediction.cluster
            candidates = candidate_experts(
                state.table,
                prediction.ranked(),
                is_fallback_allowed=self.config.fallback == "next_nearest",
            )
        return await self._open_on_candidates(request, candidates, cluster)

    def rehearse(self) -> None:
        """``open``'s work that needs no I/O, on a canned prompt: classify, order the candidate
        experts, encode the upstream request, decode a canned first message. No metric, log or
        state changes (router_service.keep_warm)."""
        state = self.state
        prompt = state.classifier.rehearsal_prompt
        prediction = state.classifier.predict(prompt)
        candidates = candidate_experts(
            state.table,
            prediction.ranked(),
            is_fallback_allowed=self.config.fallback == "next_nearest",
        )
        encode_infer_request(
            model=candidates[0].upstreams[0].spec.model,
            request_id="keep-warm",
            prompt=prompt,
            params=self._rehearsal_params,
            names=self.config.tensors,
        )
        message = parse_stream_response(self._rehearsal_response)
        decode_stream_response(message, text_output=self.config.tensors.text_output)

    async def _open_on_candidates(
        self, request: GenerateRequest, candidates: Sequence[Expert[Upstream]], cluster: int | None
    ) -> Generation:
        primary = candidates[0]
        transport_error: str | None = None
        in_band_error: str | None = None
        for expert in candidates:
            if expert.id in self._drained:
                continue
            tried: list[Upstream] = []
            while True:
                upstream = pick_least_loaded(expert.upstreams, now=time.monotonic(), exclude=tried)
                if upstream is None:
                    break
                tried.append(upstream)
                try:
                    generation = await self._start_on(
                        upstream, expert, request, cluster, is_fallback=expert is not primary
                    )
                except _TransportFailureError as exc:
                    transport_error = str(exc)
                    self.metrics.failovers_total.labels(expert.id).inc()
                    continue
                except _InBandFailureError as exc:
                    in_band_error = str(exc)
                    continue
                if generation.is_fallback:
                    self.metrics.fallbacks_total.labels(primary.id, expert.id).inc()
                return generation
        if in_band_error is not None:
            raise UpstreamError(in_band_error, code="upstream")
        detail = f" (last error: {transport_error})" if transport_error else ""
        raise NoHealthyUpstreamError(
            f"no healthy server for expert {primary.id!r}{detail}",
            code="no_healthy_upstream",
            retry_after_s=self.config.retry_after_s,
        )

    async def _start_on(
        self,
        upstream: Upstream,
        expert: Expert[Upstream],
        request: GenerateRequest,
        cluster: int | None,
        *,
        is_fallback: bool,
    ) -> Generation:
        timeouts = self.config.timeouts
        await upstream.acquire(queue_wait_s=timeouts.queue_wait_s)
        upstream.breaker.on_attempt(time.monotonic())
        infer_request = encode_infer_request(
            model=upstream.spec.model,
            request_id=request.request_id,
            prompt=request.prompt,
            params=request.params,
            names=self.config.tensors,
        )
        sent_at = time.perf_counter()
        try:
            call, message = await _first_message(upstream, infer_request, timeouts.first_token_s)
        except TimeoutError as exc:
            upstream.release()
            raise UpstreamTimeoutError(
                f"expert {expert.id}: no first token within {timeouts.first_token_s} s",
                code="timeout",
            ) from exc
        except grpc.aio.AioRpcError as exc:
            upstream.breaker.record_failure(time.monotonic())
            upstream.drop_idle_streams()
            upstream.release()
            raise _TransportFailureError(f"{upstream.spec.address}: {exc.code().name}") from exc
        except BaseException:
            upstream.release()
            raise
        first_at = time.perf_counter()
        if message is grpc.aio.EOF:
            upstream.release()
            raise _InBandFailureError(f"{upstream.spec.address}: stream ended without a response")
        decoded = decode_stream_response(message, text_output=self.config.tensors.text_output)
        if decoded.error is not None:
            call.cancel()
            upstream.release()
            raise _InBandFailureError(f"expert {expert.id}: {decoded.error}")
        upstream.breaker.record_success()
        return Generation(
            call=call,
            upstream=upstream,
            first=Chunk(decoded.text, 1) if decoded.text else None,
            is_done=decoded.is_final,
            expert_id=expert.id,
            cluster=cluster,
            is_fallback=is_fallback,
            max_tokens=request.params.max_tokens,
            pre_upstream_s=sent_at - request.received_at,
            upstream_first_at=first_at,
            upstream_ttft_s=first_at - sent_at,
            idle_stream_s=timeouts.idle_stream_s,
            text_output=self.config.tensors.text_output,
            metrics=self.metrics,
        )

    # -- admin ------------------------------------------------------------------------------

    def drain(self, expert_id: str) -> None:
        """Stop sending new requests to ``expert_id`` (in-flight ones finish).

        Raises:
            NotFoundError: no such expert in the live table.
        """
        self._require_expert(expert_id)
        self._drained.add(expert_id)

    def undrain(self, expert_id: str) -> None:
        """Let ``expert_id`` take new requests again.

        Raises:
            NotFoundError: no such expert in the live table.
        """
        self._require_expert(expert_id)
        self._drained.discard(expert_id)

    def _require_expert(self, expert_id: str) -> None:
        if expert_id not in self.state.table.experts:
            raise NotFoundError(f"unknown expert {expert_id!r}", code="expert_not_found")

    async def replace_table(self, spec: RoutingTableSpec) -> None:
        """Atomically replace the routing table with a newer generation.

        New servers get channels and a first probe before the swap; servers no longer named
        are closed in the background once their in-flight requests end.

        Raises:
            ConflictError: ``spec.generation`` is not greater than the live one.
            ConfigError: the table does not cover the classifier's clusters exactly.
        """
        async with self._swap_lock:
            current = self.state
            if spec.generation <= current.table.generation:
                raise ConflictError(
                    f"routing table generation {spec.generation} is not newer than the live "
                    f"generation {current.table.generation}",
                    code="stale_generation",
                )
            before = set(self._upstreams)
            table = self._build(spec, current.classifier.k)
            await self._probe_all([u for u in table.all_upstreams() if u.key not in before], table)
            self._state = RouterState(current.classifier, table, current.router_dir)
            self.metrics.generation.set(table.generation)
            self._retire_unused(table)

    async def reload_classifier(self, directory: Path) -> str:
        """Load a classifier artifact, check its k against the live table, swap it in.

        Returns:
            The new classifier's content hash.

        Raises:
            ConfigError: the table does not cover the new classifier's clusters exactly.
            Exception: whatever the classifier loader raises for a bad artifact.
        """
        classifier = await asyncio.to_thread(self._load_classifier, directory)
        async with self._swap_lock:
            current = self.state
            validate_against_k(current.table.spec, classifier.k)
            self._state = RouterState(classifier, current.table, directory)
        return classifier.content_hash

    # -- upstream lifecycle -----------------------------------------------------------------

    def _build(self, spec: RoutingTableSpec, k: int) -> RoutingTable[Upstream]:
        created: list[Upstream] = []

        def make(upstream_spec: UpstreamSpec) -> Upstream:
            key = (upstream_spec.address, upstream_spec.model)
            existing = self._upstreams.get(key)
            if existing is not None:
                return existing
            upstream = Upstream(upstream_spec, limits=self.config.limits, health=self.config.health)
            created.append(upstream)
            self._upstreams[key] = upstream
            return upstream

        try:
            table = build_table(spec, k=k, make_upstream=make)
        except Exception:
            for upstream in created:
                del self._upstreams[upstream.key]
                self._schedule_close(upstream)
            raise
        for upstream in created:
            self._probe_tasks[upstream.key] = asyncio.create_task(self._probe_loop(upstream))
        return table

    def _retire_unused(self, table: RoutingTable[Upstream]) -> None:
        live = {u.key for u in table.all_upstreams()}
        for key in [k for k in self._upstreams if k not in live]:
            upstream = self._upstreams.pop(key)
            task = self._probe_tasks.pop(key, None)
            if task is not None:
                task.cancel()
            self._schedule_close(upstream)

    def _schedule_close(self, upstream: Upstream) -> None:
        deadline_s = self.config.timeouts.drain_deadline_s
        task = asyncio.create_task(upstream.close(drain_deadline_s=deadline_s))
        self._closing_tasks.add(task)
        task.add_done_callback(self._closing_tasks.discard)

    async def _probe_all(
        self, upstreams: Sequence[Upstream], table: RoutingTable[Upstream]
    ) -> None:
        await asyncio.gather(*(self._probe(u, table) for u in upstreams))

    async def _probe_loop(self, upstream: Upstream) -> None:
        health = self.config.health
        while True:
            await asyncio.sleep(health.interval_s)
            await self._probe(upstream, None)

    async def _probe(self, upstream: Upstream, table: RoutingTable[Upstream] | None) -> None:
        """Probe once; log when the server's configuration problem appears or goes away."""
        before = upstream.last_problem
        result = await upstream.run_probe(timeout_s=self.config.health.probe_timeout_s)
        if result.problem == before:
            return
        live = table if table is not None else self.state.table
        experts = ",".join(e.id for e in live.experts.values() if upstream in e.upstreams)
        fields: dict[str, object] = {
            "expert": experts,
            "upstream": upstream.spec.address,
            "model": upstream.spec.model,
        }
        if result.problem is not None:
            fields["event"] = "upstream_unusable"
            fields["detail"] = (
                f"expert {experts}: {result.problem}; no request goes to this server, and "
                "/readyz answers 503 while the expert has no other ready server"
            )
            LOGGER.error(json.dumps(fields, separators=(",", ":")))
        else:
            fields["event"] = "upstream_usable"
            LOGGER.info(json.dumps(fields, separators=(",", ":")))

    def problems(self) -> list[dict[str, str]]:
        """Configuration problems of live servers (e.g. a model that is not decoupled)."""
        if self._state is None:
            return []
        return [
            {"expert": expert.id, "upstream": u.spec.address, "problem": u.last_problem}
            for expert in self._state.table.experts.values()
            for u in expert.upstreams
            if u.last_problem is not None
        ]

    def snapshot(self) -> dict[str, object]:
        """Admin view: generation, classifier, and per-expert / per-server state."""
        state = self.state
        now = time.monotonic()
        experts = []
        for expert in state.table.experts.values():
            servers = [
                {
                    "address": u.spec.address,
                    "model": u.spec.model,
                    "state": u.state(now),
                    "last_probe_ok": u.last_probe_ok,
                    "problem": u.last_problem,
                    "inflight": u.inflight,
                    "queued": u.queued,
                    "idle_streams": u.idle_streams,
                }
                for u in expert.upstreams
            ]
            for u in expert.upstreams:
                healthy = 1.0 if u.is_available(now) else 0.0
                self.metrics.upstream_healthy.labels(expert.id, u.spec.address).set(healthy)
            experts.append(
                {
                    "id": expert.id,
                    "clusters": list(expert.clusters),
                    "state": "draining" if expert.id in self._drained else _expert_state(servers),
                    "inflight": sum(u.inflight for u in expert.upstreams),
                    "upstreams": servers,
                }
            )
        return {
            "generation": state.table.generation,
            "classifier": {"k": state.classifier.k, "content_hash": state.classifier.content_hash},
            "router_dir": str(state.router_dir),
            "experts": experts,
        }


async def _first_message(
    upstream: Upstream, request: bytes, timeout_s: float
) -> tuple[grpc.aio.StreamStreamCall, object]:
    """Send ``request`` on a kept or new call and read the first message (or ``grpc.aio.EOF``).

    The call is cancelled when this raises.

    Raises:
        TimeoutError: no message within ``timeout_s``.
        grpc.aio.AioRpcError: the call on a new stream failed (server unreachable or gone).
    """
    call, is_kept = upstream.take_stream()
    try:
        if is_kept:
            try:
                await send_request(call, request, half_close=False)
                message = await read_message(call, timeout_s)
            except grpc.aio.AioRpcError:
                message = grpc.aio.EOF
            if message is not grpc.aio.EOF:
                return call, message
            # The server closed the kept call while it was idle (restarted, or dropped the
            # connection); the other kept calls are likely closed too. One retry on a new call
            # decides whether the server itself is down.
            upstream.drop_idle_streams()
            call = upstream.open_stream()
        await send_request(call, request, half_close=upstream.max_idle_streams == 0)
        return call, await read_message(call, timeout_s)
    except BaseException:
        call.cancel()
        raise


def _expert_state(servers: Sequence[Mapping[str, object]]) -> str:
    states = {s["state"] for s in servers}
    if states == {"healthy"}:
        return "healthy"
    if "healthy" in states or "half_open" in states:
        return "degraded"
    return "ejected"
