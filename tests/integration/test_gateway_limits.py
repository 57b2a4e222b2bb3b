"""Bad input, overload, client disconnect and graceful shutdown against a real gateway."""

from __future__ import annotations

import json
import re
import signal
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.integration.conftest import Fleet, GatewayFactory, Router
from tests.support.gateway import Gateway
from tests.support.processes import wait_until

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("raw", "status", "param", "code"),
    [
        (b"{not json", 400, None, "invalid_json"),
        (b"[1, 2]", 400, None, None),
        (json.dumps({"model": "expert-router", "prompt": 5}).encode(), 400, "prompt", None),
        (json.dumps({"model": "expert-router", "prompt": "hi", "max_tokens": "9"}).encode(),
         400, "max_tokens", None),
        (json.dumps({"model": "expert-router", "prompt": "x" * 2001}).encode(), 400, "prompt",
         "context_length_exceeded"),
        (json.dumps({"model": "expert-router", "prompt": "hi", "max_tokens": 65}).encode(),
         400, "max_tokens", "max_tokens_exceeded"),
        (json.dumps({"model": "expert-router", "prompt": "hi", "logprobs": 2}).encode(),
         400, "logprobs", "unknown_field"),
        (json.dumps({"model": "gpt-4", "prompt": "hi"}).encode(), 404, "model",
         "model_not_found"),
        (json.dumps({"model": "expert-router", "prompt": "y" * 5000}).encode(), 413, None, None),
    ],
)  # fmt: skip
def test_bad_input_gets_openai_style_error(
    limited_gateway: Gateway,
    raw: bytes,
    status: int,
    param: str | None,
    code: str | None,
) -> None:
    response = httpx.post(
        limited_gateway.base_url + "/v1/completions",
        content=raw,
        headers={"content-type": "application/json"},
    )
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert error["param"] == param
    if code is not None:
        assert error["code"] == code


@pytest.fixture(scope="module")
def limited_gateway(
    fleet: Fleet, router: Router, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    """One gateway with small limits, shared by the bad-input cases."""
    config = {
        "router_dir": str(router.directory),
        "routing": fleet.table(),
        "limits": {"max_body_bytes": 4096, "max_prompt_chars": 2000, "max_tokens_cap": 64},
    }
    gateway = Gateway(tmp_path_factory.mktemp("limited"), config).start()
    yield gateway
    gateway.stop()


def test_chat_bad_messages_rejected(limited_gateway: Gateway) -> None:
    url = limited_gateway.base_url + "/v1/chat/completions"
    for body, param in [
        ({"model": "expert-router", "messages": []}, "messages"),
        ({"model": "expert-router", "messages": [{"role": "robot", "content": "x"}]},
         "messages.0.role"),
        ({"model": "expert-router", "messages": [{"role": "user", "content": "x"}], "n": 2}, "n"),
    ]:  # fmt: skip
        response = httpx.post(url, json=body)
        assert response.status_code == 400
        assert response.json()["error"]["param"] == param


def test_inflight_cap_and_queue_full_gives_429(
    fleet: Fleet, router: Router, start_gateway: GatewayFactory
) -> None:
    gateway = start_gateway(
        fleet.table(), limits={"max_inflight_per_upstream": 1, "max_queue_per_upstream": 1}
    )
    body = {"model": "e1", "prompt": "slow [[tpot_ms=100]]", "max_tokens": 20, "stream": True}
    url = gateway.base_url + "/v1/completions"
    results: list[int] = []

    def hold() -> None:
        with httpx.stream("POST", url, json=body, timeout=30.0) as response:
            results.append(response.status_code)
            for _ in response.iter_lines():
                pass

    holders = [threading.Thread(target=hold) for _ in range(2)]
    holders[0].start()
    assert wait_until(lambda: len(results) == 1, timeout_s=10.0)
    holders[1].start()  # takes the one queue place
    assert wait_until(lambda: _queued(gateway) == 1, timeout_s=10.0)
    response = httpx.post(url, json={**body, "stream": False})
    assert response.status_code == 429
    assert response.json()["error"]["type"] == "rate_limit_error"
    assert response.headers["retry-after"] == "1"
    for holder in holders:
        holder.join()
    assert results == [200, 200]


def _queued(gateway: Gateway) -> int:
    experts = gateway.admin("GET", "/admin/experts")[1]["experts"]
    return sum(u["queued"] for e in experts for u in e["upstreams"])


def test_client_disconnect_cancels_upstream(fleet: Fleet, start_gateway: GatewayFactory) -> None:
    gateway = start_gateway(fleet.table())
    server = fleet.servers["e2"][0]
    before = len(re.findall("synthetic: cancelled", server.log_text()))
    body = {"model": "e2", "prompt": "long [[tpot_ms=200]]", "max_tokens": 100, "stream": True}
    with httpx.stream("POST", gateway.base_url + "/v1/completions", json=body) as response:
        lines = response.iter_lines()
        assert next(line for line in lines if line.startswith("data: "))
    # Leaving the block closed the connection after one token of a 20-second stream.
    assert wait_until(
        lambda: len(re.findall("synthetic: cancelled", server.log_text())) > before,
        timeout_s=5.0,
    )
    experts = gateway.admin("GET", "/admin/experts")[1]["experts"]
    assert wait_until(
        lambda: gateway.admin("GET", "/admin/experts")[1]["experts"][2]["inflight"] == 0,
        timeout_s=5.0,
    ), experts
    records = [r for r in gateway.log_records() if r.get("event") == "request"]
    assert records[-1]["outcome"] == "cancelled" and "prompt" not in records[-1]


def test_sigterm_lets_inflight_stream_finish(
    fleet: Fleet, router: Router, start_gateway: GatewayFactory
) -> None:
    gateway = start_gateway(fleet.table())
    assert gateway.process is not None
    body = {"model": "e0", "prompt": "drain me [[tpot_ms=100]]", "max_tokens": 15, "stream": True}
    events = []
    with httpx.stream("POST", gateway.base_url + "/v1/completions", json=body) as response:
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(line[6:])
                if len(events) == 1:
                    gateway.process.send_signal(signal.SIGTERM)
                    time.sleep(0.3)
                    with pytest.raises(httpx.TransportError):
                        httpx.get(gateway.base_url + "/healthz", timeout=1.0)
    assert events[-1] == "[DONE]" and len(events) == 15 + 2
    assert gateway.process.wait(timeout=10.0) == 0
