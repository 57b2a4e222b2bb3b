"""The per-upstream circuit breaker."""

from __future__ import annotations

from router_service.health import CircuitBreaker


def test_ejects_after_threshold_consecutive_failures() -> None:
    breaker = CircuitBreaker(failure_threshold=3, cooldown_s=10.0)
    breaker.record_failure(0.0)
    breaker.record_failure(0.0)
    assert breaker.state(0.0) == "healthy"
    breaker.record_success()  # a success resets the count
    breaker.record_failure(1.0)
    breaker.record_failure(1.0)
    assert breaker.allows_request(1.0)
    breaker.record_failure(1.0)
    assert breaker.state(1.0) == "ejected"
    assert not breaker.allows_request(10.9)


def test_half_open_allows_one_trial_then_closes_or_reopens() -> None:
    breaker = CircuitBreaker(failure_threshold=1, cooldown_s=5.0)
    breaker.record_failure(0.0)
    assert breaker.state(5.0) == "half_open"
    assert breaker.allows_request(5.0)
    breaker.on_attempt(5.0)
    assert not breaker.allows_request(5.0)  # the trial is in flight
    breaker.record_failure(6.0)
    assert breaker.state(6.0) == "ejected"
    assert breaker.state(11.0) == "half_open"
    breaker.on_attempt(11.0)
    breaker.record_success()
    assert breaker.state(11.0) == "healthy" and breaker.allows_request(11.0)


def test_probes_eject_at_once_and_respect_the_cooldown() -> None:
    breaker = CircuitBreaker(failure_threshold=3, cooldown_s=5.0)
    breaker.record_probe(is_ready=False, now=0.0)
    assert breaker.state(0.0) == "ejected"
    breaker.record_probe(is_ready=True, now=1.0)
    assert breaker.state(1.0) == "ejected"  # still cooling down
    breaker.record_probe(is_ready=True, now=5.0)
    assert breaker.state(5.0) == "healthy"
