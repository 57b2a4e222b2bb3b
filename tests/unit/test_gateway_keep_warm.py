"""Keeping the request path warm: when rehearsals run, and that nobody outside can see one."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from router_service.classifier import Classifier
from router_service.classifier.fit import fit_router
from router_service.classifier.synthetic import topic_corpus
from router_service.config import GatewayConfig, KeepWarmConfig
from router_service.dispatch import Dispatcher
from router_service.grpc_frontend import GrpcFrontEnd
from router_service.http_app import HttpFrontEnd
from router_service.keep_warm import DORMANT_CHECK_S, Part, WarmSchedule, keep_warm
from router_service.metrics import GatewayMetrics
from router_service.settings import Secrets

CONFIG = KeepWarmConfig(interval_ms=2.0, idle_after_s=10.0)


def test_rehearses_each_interval_without_requests() -> None:
    schedule = WarmSchedule(CONFIG, now=100.0, requests=5)

    assert schedule.tick(100.002, 5) == (True, 0.002)
    assert schedule.tick(100.004, 5) == (True, 0.002)


def test_a_request_since_the_last_tick_skips_the_rehearsal() -> None:
    schedule = WarmSchedule(CONFIG, now=100.0, requests=5)

    assert schedule.tick(100.002, 6) == (False, 0.002)
    assert schedule.tick(100.004, 6) == (True, 0.002)


def test_goes_dormant_after_idle_and_wakes_on_the_next_request() -> None:
    schedule = WarmSchedule(CONFIG, now=100.0, requests=5)

    assert schedule.tick(109.9, 5) == (True, 0.002)
    assert schedule.tick(110.0, 5) == (False, DORMANT_CHECK_S)
    assert schedule.tick(500.0, 5) == (False, DORMANT_CHECK_S)
    # The request restarts the idle clock; the tick after it rehearses again.
    assert schedule.tick(501.0, 6) == (False, 0.002)
    assert schedule.tick(501.002, 6) == (True, 0.002)
    assert schedule.tick(510.9, 6) == (True, 0.002)


def _run_for(seconds: float, parts: list[Part], config: KeepWarmConfig) -> None:
    async def main() -> None:
        task = asyncio.create_task(keep_warm(parts, config))
        await asyncio.sleep(seconds)
        task.cancel()

    asyncio.run(main())


def test_loop_rehearses_idle_parts_in_order() -> None:
    calls: list[str] = []
    parts = [
        Part(lambda: calls.append("front"), lambda: 0),
        Part(lambda: calls.append("dispatch"), lambda: 0),
    ]

    _run_for(0.05, parts, KeepWarmConfig(interval_ms=1.0))

    assert len(calls) >= 4
    assert calls[:4] == ["front", "dispatch", "front", "dispatch"]


def test_loop_skips_a_part_while_its_requests_keep_coming() -> None:
    calls: list[str] = []
    started = iter(range(1_000_000))
    parts = [
        Part(lambda: calls.append("busy"), started.__next__),
        Part(lambda: calls.append("idle"), lambda: 0),
    ]

    _run_for(0.05, parts, KeepWarmConfig(interval_ms=1.0))

    assert "busy" not in calls
    assert calls.count("idle") >= 2


def test_an_unused_part_goes_dormant_while_a_used_one_goes_on() -> None:
    calls: list[str] = []
    started = iter(range(1_000_000))

    def used_requests() -> int:
        # A request every other tick: the tick after each one rehearses.
        return next(started) // 2

    parts = [
        Part(lambda: calls.append("used"), used_requests),
        Part(lambda: calls.append("unused"), lambda: 0),
    ]

    _run_for(0.15, parts, KeepWarmConfig(interval_ms=1.0, idle_after_s=0.02))

    assert calls.count("used") >= 10
    # "unused" rehearsed in its first 20 ms only, then slept in DORMANT_CHECK_S steps.
    assert 1 <= calls.count("unused") <= 25
    assert calls[-1] == "used"


def test_a_failing_rehearsal_is_logged_once_and_rehearsing_stops(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[str] = []

    def broken() -> None:
        calls.append("broken")
        raise RuntimeError("bug in a rehearsal")

    parts = [Part(broken, lambda: 0), Part(lambda: calls.append("other"), lambda: 0)]
    with caplog.at_level(logging.ERROR, logger="router_service"):
        _run_for(0.05, parts, KeepWarmConfig(interval_ms=1.0))

    assert calls == ["broken"]
    failures = [r for r in caplog.records if "rehearsal failed" in r.getMessage()]
    assert len(failures) == 1
    assert failures[0].exc_info is not None


@pytest.fixture(scope="module")
def classifier() -> Classifier:
    texts = [item.text for item in topic_corpus(300, n_topics=3, seed=4)]
    return Classifier(fit_router(texts, k=3, seed=0))


def test_rehearsal_prompt_takes_the_full_predict_path(classifier: Classifier) -> None:
    prompt = classifier.rehearsal_prompt

    assert len(classifier.terms(prompt)) == 8
    assert not classifier.predict(prompt).is_empty


def test_rehearsals_change_no_metric_log_or_count(
    classifier: Classifier, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Upstreams on a closed port: the first probes fail, which a rehearsal never needs.
    config = GatewayConfig.model_validate(
        {
            "router_dir": str(tmp_path),
            "routing": {"generation": 1, "experts": [
                {"id": f"e{c}", "clusters": [c], "upstreams": [{"grpc_port": 9}]}
                for c in range(3)
            ]},
            "health": {"probe_timeout_s": 0.2},
            "grpc_port": 0,
        }
    )  # fmt: skip
    metrics = GatewayMetrics()

    async def main() -> tuple[bytes, bytes]:
        dispatcher = Dispatcher(
            config, classifier, metrics=metrics, load_classifier=Classifier.load
        )
        await dispatcher.start()
        http = HttpFrontEnd(config, dispatcher, Secrets())
        grpc = GrpcFrontEnd(config, dispatcher, Secrets())
        before = metrics.render()
        caplog.clear()
        with caplog.at_level(logging.DEBUG):
            for _ in range(3):
                for rehearse in (http.rehearse, dispatcher.rehearse, grpc.rehearse):
                    rehearse()
        after = metrics.render()
        # Rehearsals are not requests: they must not keep themselves going.
        counts = (http.requests_started, dispatcher.requests_started, grpc.requests_started)
        assert counts == (0, 0, 0)
        await dispatcher.close()
        return before, after

    before, after = asyncio.run(main())

    assert after == before
    assert caplog.records == []
