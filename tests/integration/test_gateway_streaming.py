"""End-to-end streaming through a real gateway process to real tritonservers."""

from __future__ import annotations

import json
import socket
import time

import httpx
import openai
import pytest

from tests.integration.conftest import Fleet, GatewayFactory, Router
from tests.support.processes import wait_until

pytestmark = pytest.mark.integration


def _tokens(label: str, count: int) -> str:
    return "".join(f" {label}{i}" for i in range(count))


def test_openai_client_streams_completion_in_order_and_complete(
    fleet: Fleet, router: Router, start_gateway: GatewayFactory
) -> None:
    gateway = start_gateway(fleet.table())
    client = openai.OpenAI(base_url=gateway.base_url + "/v1", api_key="unused", max_retries=0)
    prompt = router.prompt_for_cluster[1]
    stream = client.completions.create(
        model="expert-router",
        prompt=prompt,
        max_tokens=12,
        stream=True,
        stream_options={"include_usage": True},
    )
    texts, finish, usage = [], None, None
    for chunk in stream:
        if chunk.choices:
            texts.append(chunk.choices[0].text)
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage is not None:
            usage = chunk.usage
    assert "".join(texts) == _tokens("e1a-", 12)
    assert finish == "length"
    assert usage is not None and usage.completion_tokens == 12 and usage.prompt_tokens > 0


def test_overhead_header_leaves_out_a_client_slow_to_send_its_body(
    fleet: Fleet, router: Router, start_gateway: GatewayFactory
) -> None:
    gateway = start_gateway(fleet.table())
    body = json.dumps(
        {"model": "expert-router", "prompt": router.prompt_for_cluster[1], "max_tokens": 2}
    ).encode()
    head = (
        f"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", gateway.http_port), timeout=20) as sock:
        sock.sendall(head)
        time.sleep(0.5)  # the client stalls between headers and body, as on a loaded host
        sock.sendall(body)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    status, _, rest = reply.partition(b"\r\n")
    assert status.startswith(b"HTTP/1.1 200"), reply[:300]
    headers = dict(
        line.decode().lower().split(": ", 1) for line in rest.split(b"\r\n\r\n")[0].split(b"\r\n")
    )
    # The 500 ms wait for the body is the client's, not routing overhead.
    assert 0.0 <= float(headers["x-expert-router-overhead-ms"]) < 250.0


def test_chat_stream_routes_by_last_user_message_and_sets_headers(
    fleet: Fleet, router: Router, start_gateway: GatewayFactory
) -> None:
    gateway = start_gateway(fleet.table())
    body = {
        "model": "expert-router",
        "messages": [
            {"role": "system", "content": router.prompt_for_cluster[0]},
            {"role": "user", "content": router.prompt_for_cluster[2]},
        ],
        "max_tokens": 5,
        "stream": True,
    }
    with httpx.stream("POST", gateway.base_url + "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        assert response.headers["x-expert-router-expert"] == "e2"
        assert response.headers["x-expert-router-cluster"] == "2"
        assert response.headers["x-expert-router-fallback"] == "false"
        assert float(response.headers["x-expert-router-overhead-ms"]) >= 0.0
        events = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(e[len("data: ") :]) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    content = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert content == _tokens("e2a-", 5)
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


def test_non_streaming_completion_and_chat(
    fleet: Fleet, router: Router, start_gateway: GatewayFactory
) -> None:
    gateway = start_gateway(fleet.table())
    client = openai.OpenAI(base_url=gateway.base_url + "/v1", api_key="unused", max_retries=0)
    completion = client.completions.create(
        model="expert-router", prompt=router.prompt_for_cluster[2], max_tokens=4
    )
    assert completion.choices[0].text == _tokens("e2a-", 4)
    assert completion.usage is not None and completion.usage.completion_tokens == 4
    chat = client.chat.completions.create(
        model="e1",
        messages=[{"role": "user", "content": router.prompt_for_cluster[0]}],
        max_tokens=3,
    )
    # Naming an expert pins it, whatever the classifier says.
    assert chat.choices[0].message.content == _tokens("e1a-", 3)
    assert chat.choices[0].finish_reason == "length"


def test_models_lists_routed_name_and_experts(fleet: Fleet, start_gateway: GatewayFactory) -> None:
    gateway = start_gateway(fleet.table())
    client = openai.OpenAI(base_url=gateway.base_url + "/v1", api_key="unused", max_retries=0)
    assert [m.id for m in client.models.list()] == ["expert-router", "e0", "e1", "e2"]
    ready = httpx.get(gateway.base_url + "/readyz")
    assert ready.status_code == 200 and ready.json()["generation"] == 1
    metrics = httpx.get(gateway.base_url + "/metrics").text
    assert "expert_router_routing_generation 1.0" in metrics


def test_least_inflight_spreads_over_an_experts_servers(
    fleet: Fleet, router: Router, start_gateway: GatewayFactory
) -> None:
    gateway = start_gateway(fleet.table())
    body = {
        "model": "expert-router",
        "prompt": router.prompt_for_cluster[0],
        "max_tokens": 20,
        "stream": True,
    }
    labels = set()
    with httpx.Client(base_url=gateway.base_url) as client:
        streams = [client.stream("POST", "/v1/completions", json=body) for _ in range(4)]
        responses = [s.__enter__() for s in streams]
        for response in responses:
            first = next(line for line in response.iter_lines() if line.startswith("data: "))
            labels.add(json.loads(first[6:])["choices"][0]["text"].split("-")[0].strip())
        for stream in streams:
            stream.__exit__(None, None, None)
    # Four concurrent streams on two idle servers: both must have been used.
    assert labels == {"e0a", "e0b"}


def _samples(metrics_text: str) -> dict[str, float]:
    """``name{labels}`` → value for every sample line of the exposition text."""
    samples = {}
    for line in metrics_text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def test_metrics_count_every_token_and_request_once(
    fleet: Fleet, router: Router, start_gateway: GatewayFactory
) -> None:
    """The per-request metric updates (done after the first token is out) add up exactly."""
    gateway = start_gateway(fleet.table())
    client = openai.OpenAI(base_url=gateway.base_url + "/v1", api_key="unused", max_retries=0)
    prompt = router.prompt_for_cluster[1]
    for _ in range(3):
        stream = client.completions.create(
            model="expert-router", prompt=prompt, max_tokens=7, stream=True
        )
        assert "".join(c.choices[0].text for c in stream if c.choices) == _tokens("e1a-", 7)
    completion = client.completions.create(model="expert-router", prompt=prompt, max_tokens=4)
    assert completion.choices[0].text == _tokens("e1a-", 4)
    # A client that leaves after the first token: counted as cancelled, in flight no more.
    body = {"model": "expert-router", "prompt": prompt, "max_tokens": 200, "stream": True}
    with httpx.stream("POST", gateway.base_url + "/v1/completions", json=body) as response:
        next(line for line in response.iter_lines() if line.startswith("data: {"))

    def samples_now() -> dict[str, float]:
        return _samples(httpx.get(gateway.base_url + "/metrics").text)

    cancelled = 'expert_router_requests_total{expert="e1",outcome="cancelled"}'
    # The cancelled stream ends in the gateway a moment after we left.
    wait_until(lambda: bool(samples_now().get(cancelled)), timeout_s=5)
    samples = samples_now()
    assert samples['expert_router_requests_total{expert="e1",outcome="ok"}'] == 4
    assert samples['expert_router_requests_total{expert="e1",outcome="cancelled"}'] == 1
    assert samples['expert_router_inflight{expert="e1"}'] == 0
    relayed = samples['expert_router_tokens_relayed_total{expert="e1"}']
    assert 3 * 7 + 4 + 1 <= relayed < 3 * 7 + 4 + 200
    assert samples['expert_router_upstream_ttft_seconds_count{expert="e1"}'] == 5
    assert samples["expert_router_gateway_overhead_seconds_count"] == 5
    assert samples["expert_router_classify_seconds_count"] == 5
