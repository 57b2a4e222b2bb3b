"""Prometheus metrics of one gateway replica, in their own registry (no process-wide state).

Overhead here means what the gateway adds to time to first token: the time from having the
whole request (headers and body) to writing to Triton, plus the time from Triton's first
response to handing the first chunk to the front end's transport. Buckets are fine-grained below
5 ms on purpose.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["GatewayMetrics"]

_FAST_BUCKETS_S = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0,
)  # fmt: skip
_TTFT_BUCKETS_S = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class GatewayMetrics:
    """All metrics of the gateway; pass one instance to the dispatcher and the front ends."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.classify_seconds = Histogram(
            "expert_router_classify_seconds", "Prompt classification time", buckets=_FAST_BUCKETS_S,
            registry=r,
        )  # fmt: skip
        self.overhead_seconds = Histogram(
            "expert_router_gateway_overhead_seconds",
            "Time to first token added by the gateway (total minus upstream time to first token)",
            buckets=_FAST_BUCKETS_S,
            registry=r,
        )
        self.upstream_ttft_seconds = Histogram(
            "expert_router_upstream_ttft_seconds",
            "Upstream time to first token (request written to first response)",
            ["expert"],
            buckets=_TTFT_BUCKETS_S,
            registry=r,
        )
        self.tokens_total = Counter(
            "expert_router_tokens_relayed", "Tokens relayed to clients", ["expert"], registry=r
        )
        self.chunks_total = Counter(
            "expert_router_chunks_relayed", "Upstream messages relayed", ["expert"], registry=r
        )
        self.requests_total = Counter(
            "expert_router_requests",
            "Finished requests by expert and outcome",
            ["expert", "outcome"],
            registry=r,
        )
        self.fallbacks_total = Counter(
            "expert_router_fallbacks",
            "Requests served by another expert than their cluster's",
            ["from_expert", "to_expert"],
            registry=r,
        )
        self.failovers_total = Counter(
            "expert_router_failovers",
            "Retries on another server before the first chunk",
            ["expert"],
            registry=r,
        )
        self.empty_prompts_total = Counter(
            "expert_router_empty_prompt_classifications",
            "Prompts with no known term (routed to the smallest-norm centroid)",
            registry=r,
        )
        self.inflight = Gauge(
            "expert_router_inflight", "Streams in flight per expert", ["expert"], registry=r
        )
        self.generation = Gauge(
            "expert_router_routing_generation", "Routing table generation", registry=r
        )
        self.upstream_healthy = Gauge(
            "expert_router_upstream_healthy",
            "1 when the upstream takes requests (breaker healthy or half-open), else 0",
            ["expert", "upstream"],
            registry=r,
        )

    def render(self) -> bytes:
        """The text exposition format for ``/metrics``."""
        return generate_latest(self.registry)
