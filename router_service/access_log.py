"""One structured log line per request, the same fields for the HTTP and the gRPC front end.

The line goes to the ``router_service.access`` logger as compact JSON::

    {"event":"request","protocol":"grpc","path":"/inference.GRPCInferenceService/ModelInfer",
     "request_id":"...","status":"OK","duration_ms":12.3,"model":"expert-router",
     "prompt_chars":42,"expert":"e1","cluster":1,"fallback":false,"completion_tokens":16,
     "ttft_ms":6.1,"overhead_ms":0.4,"upstream_ttft_ms":5.7,"outcome":"ok"}

``status`` is the HTTP status code (an int) or the gRPC status name (``"OK"``,
``"INVALID_ARGUMENT"``, ...). ``ttft_ms`` is the time to first token the client saw from the
gateway's side, ``overhead_ms`` the part the gateway added, ``upstream_ttft_ms`` Triton's part.
Nothing is formatted when the logger would drop the line (``log_level: warning``), so a
replica that does not log pays no JSON encoding per request. No prompt text unless
``log_prompts``.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from router_service.generation import Generation

__all__ = ["ACCESS_LOGGER", "AccessRecord", "done_fields", "new_request_id"]

ACCESS_LOGGER = logging.getLogger("router_service.access")
_ENCODE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True).encode
# Request ids: a random prefix per process (so replicas and restarts do not collide) and a
# counter. uuid4() cost ~40 µs on the first-token path of a gateway that had been idle.
_ID_PREFIX = os.urandom(6).hex()
_ID_COUNTER = itertools.count(1)


def new_request_id() -> str:
    """An id for a request that came without one (24 hex digits, unique per replica run)."""
    return f"{_ID_PREFIX}{next(_ID_COUNTER):012x}"


class AccessRecord:
    """Fields collected while a request runs; :meth:`emit` writes the line once."""

    __slots__ = ("fields", "is_emitted", "path", "protocol", "received_at", "request_id")

    def __init__(self, request_id: str, path: str, received_at: float, *, protocol: str) -> None:
        self.request_id = request_id
        self.path = path
        self.received_at = received_at
        self.protocol = protocol
        self.fields: dict[str, Any] = {}
        self.is_emitted = False

    def emit(self, status: int | str, **extra: Any) -> None:
        """Write the line (only the first call counts)."""
        if self.is_emitted:
            return
        self.is_emitted = True
        if not ACCESS_LOGGER.isEnabledFor(logging.INFO):
            return
        record = {
            "event": "request",
            "protocol": self.protocol,
            "path": self.path,
            "request_id": self.request_id,
            "status": status,
            "duration_ms": round((time.perf_counter() - self.received_at) * 1000, 3),
            **self.fields,
            **extra,
        }
        ACCESS_LOGGER.info(_ENCODE(record))


def done_fields(generation: Generation) -> dict[str, Any]:
    """Routing and timing fields of a generation that reached its first token."""
    overhead_ms = round(generation.gateway_overhead_s * 1000, 3)
    upstream_ttft_ms = round(generation.upstream_ttft_s * 1000, 3)
    return {
        "expert": generation.expert_id,
        "cluster": generation.cluster,
        "fallback": generation.is_fallback,
        "completion_tokens": generation.completion_tokens,
        "ttft_ms": round(overhead_ms + upstream_ttft_ms, 3),
        "overhead_ms": overhead_ms,
        "upstream_ttft_ms": upstream_ttft_ms,
        "outcome": generation.outcome,
    }
