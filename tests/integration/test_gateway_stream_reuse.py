"""Kept ModelStreamInfer calls: reused one request at a time, dropped on cancel, renewed after a
restart of the server, all against real tritonservers."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import Fleet, GatewayFactory, Router, start_triton
from tests.support.gateway import Gateway, routing_table
from tests.support.processes import wait_until
from tests.support.triton import TritonServer

pytestmark = pytest.mark.integration

# Probes far apart: the requests themselves meet the restarted server first.
SLOW_PROBES = {"interval_s": 60.0, "probe_timeout_s": 0.5, "cooldown_s": 60.0}


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[TritonServer]:
    """A tritonserver for expert e0 that this test may restart."""
    server = start_triton(tmp_path, "xa", tpot_ms=5, label="xa-")
    yield server
    server.stop()


def _table(fleet: Fleet, server: TritonServer) -> dict[str, object]:
    return routing_table(
        1,
        {
            "e0": ([0], [server.grpc_port]),
            "e1": ([1], fleet.ports("e1")),
            "e2": ([2], fleet.ports("e2")),
        },
    )


def _stream(gateway: Gateway, prompt: str, max_tokens: int = 3) -> httpx.Response:
    body = {"model": "expert-router", "prompt": prompt, "max_tokens": max_tokens, "stream": True}
    response = httpx.post(gateway.base_url + "/v1/completions", json=body, timeout=30.0)
    assert response.status_code == 200, response.text
    assert response.text.rstrip().endswith("data: [DONE]"), response.text
    return response


def _text(response: httpx.Response) -> str:
    events = [line[6:] for line in response.text.splitlines() if line.startswith("data: {")]
    return "".join(json.loads(e)["choices"][0]["text"] for e in events)


def _e0_server(gateway: Gateway) -> dict[str, object]:
    experts = gateway.admin("GET", "/admin/experts")[1]["experts"]
    server: dict[str, object] = next(e for e in experts if e["id"] == "e0")["upstreams"][0]
    return server


def test_calls_are_kept_up_to_the_cap_and_reused_one_request_at_a_time(
    fleet: Fleet, router: Router, own_server: TritonServer, start_gateway: GatewayFactory
) -> None:
    gateway = start_gateway(_table(fleet, own_server), limits={"idle_streams_per_upstream": 2})
    prompt = router.prompt_for_cluster[0]
    with ThreadPoolExecutor(3) as pool:  # three at once: three calls, of which two are kept
        for response in pool.map(lambda _: _stream(gateway, prompt, max_tokens=8), range(3)):
            assert response.headers["x-expert-router-expert"] == "e0"
    assert _e0_server(gateway)["idle_streams"] == 2
    for _ in range(4):  # one at a time: each takes a kept call and gives it back
        assert _text(_stream(gateway, prompt)) == " xa-0 xa-1 xa-2"
        assert _e0_server(gateway)["idle_streams"] == 2
    assert _e0_server(gateway)["inflight"] == 0


def test_disconnect_on_a_kept_call_cancels_that_request_and_drops_the_call(
    fleet: Fleet, router: Router, own_server: TritonServer, start_gateway: GatewayFactory
) -> None:
    gateway = start_gateway(_table(fleet, own_server))
    prompt = router.prompt_for_cluster[0]
    _stream(gateway, prompt)
    assert _e0_server(gateway)["idle_streams"] == 1
    before = len(re.findall("synthetic: cancelled", own_server.log_text()))
    body = {"model": "e0", "prompt": "long [[tpot_ms=200]]", "max_tokens": 100, "stream": True}
    with httpx.stream("POST", gateway.base_url + "/v1/completions", json=body) as response:
        assert _e0_server(gateway)["idle_streams"] == 0  # the request runs on the kept call
        assert next(line for line in response.iter_lines() if line.startswith("data: "))
    assert wait_until(
        lambda: len(re.findall("synthetic: cancelled", own_server.log_text())) > before,
        timeout_s=5.0,
    )
    assert wait_until(lambda: _e0_server(gateway)["inflight"] == 0, timeout_s=5.0)
    assert _e0_server(gateway)["idle_streams"] == 0  # cancelled, so not kept
    _stream(gateway, prompt)  # a new call serves the next request
    assert _e0_server(gateway)["idle_streams"] == 1


def test_restarted_server_is_reached_on_a_new_call_without_failover(
    fleet: Fleet, router: Router, own_server: TritonServer, start_gateway: GatewayFactory
) -> None:
    gateway = start_gateway(_table(fleet, own_server), health=SLOW_PROBES)
    prompt = router.prompt_for_cluster[0]
    _stream(gateway, prompt)
    assert _e0_server(gateway)["idle_streams"] == 1
    own_server.stop()
    own_server.start()  # same ports: the kept call belongs to the old process
    response = _stream(gateway, prompt)
    assert response.headers["x-expert-router-expert"] == "e0"
    assert response.headers["x-expert-router-fallback"] == "false"
    server = _e0_server(gateway)
    assert server["state"] == "healthy" and server["idle_streams"] == 1
