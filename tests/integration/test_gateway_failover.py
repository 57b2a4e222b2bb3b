"""Failover before the first chunk, error events after it, with real tritonserver crashes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import Fleet, GatewayFactory, Router, start_triton
from tests.support.gateway import routing_table
from tests.support.triton import TritonServer

pytestmark = pytest.mark.integration

# Long probe interval: the request itself must discover the dead server (transport failover).
SLOW_PROBES = {"interval_s": 60.0, "probe_timeout_s": 0.5, "cooldown_s": 60.0}


@pytest.fixture
def own_pair(tmp_path: Path) -> Iterator[list[TritonServer]]:
    """Two tritonservers this test may kill."""
    servers = [start_triton(tmp_path, name, tpot_ms=20, label=f"{name}-") for name in ("xa", "xb")]
    yield servers
    for server in servers:
        server.stop()


def _table(fleet: Fleet, e0_ports: list[int]) -> dict[str, object]:
    return routing_table(
        1, {"e0": ([0], e0_ports), "e1": ([1], fleet.ports("e1")), "e2": ([2], fleet.ports("e2"))}
    )


def _complete(gateway_url: str, prompt: str, **extra: object) -> httpx.Response:
    body = {"model": "expert-router", "prompt": prompt, "max_tokens": 3, **extra}
    return httpx.post(gateway_url + "/v1/completions", json=body, timeout=30.0)


def test_killed_server_fails_over_to_sibling_then_next_nearest_expert(
    fleet: Fleet, router: Router, own_pair: list[TritonServer], start_gateway: GatewayFactory
) -> None:
    gateway = start_gateway(_table(fleet, [s.grpc_port for s in own_pair]), health=SLOW_PROBES)
    prompt = router.prompt_for_cluster[0]
    own_pair[0].kill()
    for _ in range(3):  # every request lands on the survivor, whichever server it tried first
        response = _complete(gateway.base_url, prompt)
        assert response.status_code == 200, response.text
        assert response.json()["choices"][0]["text"] == " xb-0 xb-1 xb-2"
        assert response.headers["x-expert-router-fallback"] == "false"
    own_pair[1].kill()
    response = _complete(gateway.base_url, prompt)
    assert response.status_code == 200, response.text
    nearest_other = next(c for c in router.classifier.predict(prompt).ranked() if c != 0)
    assert response.headers["x-expert-router-expert"] == f"e{nearest_other}"
    assert response.headers["x-expert-router-fallback"] == "true"
    assert response.headers["x-expert-router-cluster"] == "0"


def test_reject_fallback_answers_503_with_retry_after(
    fleet: Fleet, router: Router, own_pair: list[TritonServer], start_gateway: GatewayFactory
) -> None:
    gateway = start_gateway(
        _table(fleet, [s.grpc_port for s in own_pair]), health=SLOW_PROBES, fallback="reject"
    )
    for server in own_pair:
        server.kill()
    response = _complete(gateway.base_url, router.prompt_for_cluster[0])
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.json()["error"]["code"] == "no_healthy_upstream"


def test_server_killed_mid_stream_ends_with_error_event(
    fleet: Fleet, router: Router, tmp_path: Path, start_gateway: GatewayFactory
) -> None:
    victim = start_triton(tmp_path, "victim", tpot_ms=100, label="v-")
    try:
        table = routing_table(
            1, {"e0": ([0], [victim.grpc_port]), "e1": ([1], fleet.ports("e1")),
                "e2": ([2], fleet.ports("e2"))},
        )  # fmt: skip
        gateway = start_gateway(table, health=SLOW_PROBES)
        body = {"model": "expert-router", "prompt": router.prompt_for_cluster[0],
                "max_tokens": 50, "stream": True}  # fmt: skip
        events = []
        with httpx.stream("POST", gateway.base_url + "/v1/completions", json=body) as response:
            assert response.status_code == 200
            for line in response.iter_lines():
                if line.startswith("data: "):
                    events.append(line[6:])
                    if len(events) == 2:
                        victim.kill()
    finally:
        victim.stop()
    assert events[-1] != "[DONE]"
    error = json.loads(events[-1])["error"]
    assert error["type"] == "upstream_error" and error["message"]
    texts = [json.loads(e)["choices"][0]["text"] for e in events[:-1]]
    assert texts[:2] == [" v-0", " v-1"]


def test_in_band_error_mid_stream_and_before_first_token(
    fleet: Fleet, router: Router, start_gateway: GatewayFactory
) -> None:
    gateway = start_gateway(fleet.table())
    prompt = router.prompt_for_cluster[1]
    body = {"model": "expert-router", "prompt": prompt + " [[fail_after=3]]", "max_tokens": 10,
            "stream": True}  # fmt: skip
    with httpx.stream("POST", gateway.base_url + "/v1/completions", json=body) as response:
        events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert [json.loads(e)["choices"][0]["text"] for e in events[:3]] == [
        " e1a-0",
        " e1a-1",
        " e1a-2",
    ]
    assert "synthetic failure after 3 tokens" in json.loads(events[3])["error"]["message"]
    assert len(events) == 4
    # Failing before the first token: nothing was sent yet, so the client gets a real 502.
    response = _complete(gateway.base_url, prompt + " [[fail_after=0]]")
    assert response.status_code == 502
    assert "synthetic failure after 0 tokens" in response.json()["error"]["message"]
