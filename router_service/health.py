"""Per-upstream health: a circuit breaker fed by request outcomes and readiness probes.

States::

    healthy ──N consecutive failures or a failed probe──▶ ejected
    ejected ──cooldown_s elapsed──▶ half_open (one trial request or a probe may go through)
    half_open ──success──▶ healthy        half_open ──failure──▶ ejected (cooldown restarts)

The breaker is pure (time is passed in), so it is unit-tested without a clock or a server.
"""

from __future__ import annotations

from typing import Literal

__all__ = ["BreakerState", "CircuitBreaker"]

BreakerState = Literal["healthy", "ejected", "half_open"]


class CircuitBreaker:
    """Consecutive-failure circuit breaker with a cooldown and a single half-open trial."""

    def __init__(self, *, failure_threshold: int, cooldown_s: float) -> None:
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self._state: BreakerState = "healthy"
        self._consecutive_failures = 0
        self._reopen_at = 0.0
        self._trial_in_flight = False

    def state(self, now: float) -> BreakerState:
        """Current state; an ejected breaker whose cooldown is over reads as half_open."""
        if self._state == "ejected" and now >= self._reopen_at:
            self._state = "half_open"
            self._trial_in_flight = False
        return self._state

    def allows_request(self, now: float) -> bool:
        """Whether a new request may be sent (half_open lets one trial through at a time)."""
        state = self.state(now)
        if state == "healthy":
            return True
        return state == "half_open" and not self._trial_in_flight

    def on_attempt(self, now: float) -> None:
        """Note that a request was sent; in half_open it becomes the trial."""
        if self.state(now) == "half_open":
            self._trial_in_flight = True

    def record_success(self) -> None:
        """A request (or probe) succeeded: back to healthy."""
        self._state = "healthy"
        self._consecutive_failures = 0
        self._trial_in_flight = False

    def record_failure(self, now: float) -> None:
        """A request failed at the transport level; eject after ``failure_threshold`` in a row."""
        self._consecutive_failures += 1
        state = self.state(now)
        if state == "half_open" or self._consecutive_failures >= self.failure_threshold:
            self._eject(now)

    def record_probe(self, *, is_ready: bool, now: float) -> None:
        """A readiness probe result: not ready ejects at once; ready ends a finished cooldown."""
        if not is_ready:
            self._eject(now)
        elif self.state(now) != "ejected":
            self.record_success()

    def _eject(self, now: float) -> None:
        self._state = "ejected"
        self._reopen_at = now + self.cooldown_s
        self._trial_in_flight = False
