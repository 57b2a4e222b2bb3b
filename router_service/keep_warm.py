"""Keep the request path warm: rehearse it with a canned request while the replica waits.

Why: between requests, and between a request and its first token (Triton's time to first
token), a replica's core idles, and the caches its request path used go to other work (other
processes, other tenants of a virtual machine). The next request then runs that code from
memory, several times slower than hot. Measured on a 2-vCPU VM (1 stream, 30 ms between
requests, an instrumented replica): from the request's bytes to the upstream request built took
500 µs, from Triton's first message to the first SSE event written 180 µs; rehearsing every
1 ms, 180 and 125 µs (every 2 ms: 225 and 145; every 5 ms: 250 and 150). In
``scripts/bench_gateway.py`` at 1 stream (``--ref-src . --ref-keep-warm-ms 0``, same run), the
added time to first token went from 1.07 to 0.76 ms (HTTP) and from 0.97 to 0.77 ms (gRPC).

A rehearsal runs each part's ``rehearse`` method on canned data: the front ends' parsing,
validation and first-response encoding (``HttpFrontEnd``, ``GrpcFrontEnd``), and the
dispatcher's classification, upstream request encoding and response decoding (``Dispatcher``).
It does no I/O and touches no metric, log or state, so nothing outside the process can tell it
ran. The event loop's own machinery (timers, task steps) is kept warm by the loop below waking.

What it costs: one rehearsal's CPU time per ``interval_ms``, only in intervals in which no
request started (real requests keep the path warm by themselves, so a busy replica rehearses
less), and only up to ``idle_after_s`` after the last request (an unused replica then checks
once a second for the next request). Each part keeps its own count: a front end that serves no
requests stops rehearsing ``idle_after_s`` after start-up. An idle replica used 13.7 % of a
core rehearsing every 1 ms, 9 % every 2 ms, 6.5 % every 5 ms (a rehearsal costs more the colder
it runs), against 0.5 % without. ``scripts/bench_gateway.py`` counts it in the CPU time per
request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from router_service.config import KeepWarmConfig

__all__ = ["DORMANT_CHECK_S", "Part", "Step", "WarmSchedule", "keep_warm"]

LOGGER = logging.getLogger("router_service")

#: How often a replica past ``idle_after_s`` looks for the next request.
DORMANT_CHECK_S = 1.0

#: One step of a rehearsal: runs a part of the request path on canned data, no side effects.
Step = Callable[[], object]


class WarmSchedule:
    """When to rehearse one part: a pure function of the clock and its request count, for tests.

    Starts as if a request had just come, so a new replica is warm for its first requests.
    """

    def __init__(self, config: KeepWarmConfig, *, now: float, requests: int) -> None:
        self._interval_s = config.interval_ms / 1000
        self._idle_after_s = config.idle_after_s
        self._requests = requests
        self._active_at = now

    def tick(self, now: float, requests: int) -> tuple[bool, float]:
        """Whether to rehearse now, and how long to wait before the next tick."""
        if requests != self._requests:
            # A request started since the last tick and warmed the path itself.
            self._requests = requests
            self._active_at = now
            return False, self._interval_s
        if now - self._active_at >= self._idle_after_s:
            return False, DORMANT_CHECK_S
        return True, self._interval_s


@dataclass(frozen=True, slots=True)
class Part:
    """A part of the request path: its rehearsal, and how many requests it has started so far.

    Each part has its own schedule, so a front end nobody uses (gRPC behind an HTTP-only NGINX,
    say) stops rehearsing ``idle_after_s`` after start-up while the others go on.
    """

    rehearse: Step
    requests: Callable[[], int]


async def keep_warm(parts: Sequence[Part], config: KeepWarmConfig) -> None:
    """Rehearse each part on its :class:`WarmSchedule`'s ticks until cancelled.

    A rehearsal that raises is a bug, not a request failure: it is logged once and rehearsing
    stops (all parts); the replica serves on.
    """
    now = time.monotonic()
    schedules = [WarmSchedule(config, now=now, requests=part.requests()) for part in parts]
    while True:
        now = time.monotonic()
        delay_s = DORMANT_CHECK_S
        for part, schedule in zip(parts, schedules, strict=True):
            rehearse, wait_s = schedule.tick(now, part.requests())
            delay_s = min(delay_s, wait_s)
            if rehearse:
                try:
                    part.rehearse()
                except Exception:
                    LOGGER.exception("keep_warm: a rehearsal failed; rehearsing stops")
                    return
        await asyncio.sleep(delay_s)
