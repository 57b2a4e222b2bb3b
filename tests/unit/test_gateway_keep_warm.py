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
from router_service.keep_warm import DORMANT_CHECK_S, WarmSchedule, keep_warm
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


def _run_for(seconds: float, *args: object) -> None:
    async def main() -> None:
        task = asyncio.create_task(keep_warm(*args))  # type: ignore[arg-type]
        await asyncio.sleep(seconds)
        task.cancel()

    asyncio.run(main())


def test_loop_runs_the_steps_in_order_while_idle() -> None:
    calls: list[str] = []
    steps = [lambda: calls.append("front"), lambda: calls.append("dispatch")]

    _run_for(0.05, steps, KeepWarmConfig(interval_ms=1.0), lambda: 0)

    assert len(calls) >= 4
    assert calls[:4] == ["front", "dispatch", "front", "dispatch"]


def test_loop_never_rehearses_while_requests_keep_coming() -> None:
    calls: list[str] = []
    started = iter(range(1_000_000))

    _run_for(
        0.05, [lambda: calls.append("step")], KeepWarmConfig(interval_ms=1.0), started.__next__
    )

    assert calls == []


def test_a_failing_step_is_logged_once_and_rehearsing_stops(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[str] = []

    def broken() -> None:
        calls.append("broken")
        raise RuntimeError("bug in a rehearsal")

    with caplog.at_level(logging.ERROR, logger="router_service"):
        _run_for(0.05, [broken], KeepWarmConfig(interval_ms=1.0), lambda: 0)

    assert calls == ["broken"]
    failures = [r for r in caplog.records if "rehearsal step failed" in r.getMessage()]
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
        steps = [
            HttpFrontEnd(config, dispatcher, Secrets()).rehearse,
            dispatcher.rehearse,
            GrpcFrontEnd(config, dispatcher, Secrets()).rehearse,
        ]
        before = metrics.render()
        caplog.clear()
        with caplog.at_level(logging.DEBUG):
            for _ in range(3):
                for step in steps:
                    step()
        after = metrics.render()
        assert dispatcher.requests_started == 0
        await dispatcher.close()
        return before, after

    before, after = asyncio.run(main())

    assert after == before
    assert caplog.records == []
