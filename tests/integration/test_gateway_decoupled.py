"""Start-up check that each expert's Triton model is decoupled, against a real tritonserver.

A model served without ``model_transaction_policy { decoupled: true }`` cannot stream through
ModelStreamInfer. The gateway reads the model config (gRPC ModelConfig) in every readiness
probe; such a server is treated as unhealthy, never routed to, named in one log line, and the
replica's ``/readyz`` answers 503 while the expert has no other usable server.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.integration.conftest import Fleet, GatewayFactory, Router
from tests.support.gateway import routing_table
from tests.support.triton import TritonServer, write_synthetic_repository

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def plain_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    """A real tritonserver whose model is the synthetic one with ``decoupled: false``."""
    root = tmp_path_factory.mktemp("plain")
    repository = write_synthetic_repository(root / "repo", label="plain-")
    config = repository / "ensemble" / "config.pbtxt"
    text = config.read_text()
    assert "decoupled: true" in text
    config.write_text(text.replace("decoupled: true", "decoupled: false"))
    server = TritonServer(repository=repository, workdir=root / "work").start()
    yield server
    server.stop()


def _complete(url: str, prompt: str, model: str = "expert-router") -> httpx.Response:
    body = {"model": model, "prompt": prompt, "max_tokens": 2}
    return httpx.post(url + "/v1/completions", json=body, timeout=30.0)


def test_expert_without_decoupled_model_is_not_ready_and_named_in_the_log(
    fleet: Fleet, router: Router, plain_server: TritonServer, start_gateway: GatewayFactory
) -> None:
    table = routing_table(
        1,
        {
            "e0": ([0], fleet.ports("e0")),
            "e1": ([1], [plain_server.grpc_port]),
            "e2": ([2], fleet.ports("e2")),
        },
    )
    gateway = start_gateway(table, wait_ready=False)
    address = f"127.0.0.1:{plain_server.grpc_port}"

    ready = httpx.get(gateway.base_url + "/readyz", timeout=10.0)
    assert ready.status_code == 503
    [problem] = ready.json()["problems"]
    assert problem["expert"] == "e1"
    assert problem["upstream"] == address
    assert "not decoupled" in problem["problem"]

    lines = [r for r in gateway.log_records() if r.get("event") == "upstream_unusable"]
    assert len(lines) == 1, gateway.log_text()
    assert lines[0]["expert"] == "e1"
    assert lines[0]["upstream"] == address
    assert "not decoupled" in lines[0]["detail"] and "/readyz" in lines[0]["detail"]

    status, snapshot = gateway.admin("GET", "/admin/experts")
    assert status == 200
    e1 = next(e for e in snapshot["experts"] if e["id"] == "e1")
    assert e1["state"] == "ejected"
    assert "not decoupled" in e1["upstreams"][0]["problem"]

    # Cluster 1's prompts go to the next-nearest expert instead; a pinned request is refused.
    routed = _complete(gateway.base_url, router.prompt_for_cluster[1])
    assert routed.status_code == 200, routed.text
    assert routed.headers["x-expert-router-fallback"] == "true"
    assert routed.headers["x-expert-router-expert"] != "e1"
    assert "plain-" not in routed.json()["choices"][0]["text"]
    pinned = _complete(gateway.base_url, "anything", model="e1")
    assert pinned.status_code == 503
    assert "e1" in pinned.json()["error"]["message"]


def test_non_decoupled_sibling_is_skipped_and_the_replica_stays_ready(
    fleet: Fleet, router: Router, plain_server: TritonServer, start_gateway: GatewayFactory
) -> None:
    e1_ports = [plain_server.grpc_port, *fleet.ports("e1")]
    table = routing_table(
        1, {"e0": ([0], fleet.ports("e0")), "e1": ([1], e1_ports), "e2": ([2], fleet.ports("e2"))}
    )
    gateway = start_gateway(table)

    ready = httpx.get(gateway.base_url + "/readyz", timeout=10.0)
    assert ready.status_code == 200
    assert ready.json()["problems"][0]["upstream"] == f"127.0.0.1:{plain_server.grpc_port}"
    for _ in range(4):
        response = _complete(gateway.base_url, router.prompt_for_cluster[1])
        assert response.status_code == 200, response.text
        assert response.json()["choices"][0]["text"] == " e1a-0 e1a-1"
        assert response.headers["x-expert-router-fallback"] == "false"


def test_routing_table_swap_to_a_non_decoupled_server_keeps_serving_elsewhere(
    fleet: Fleet, router: Router, plain_server: TritonServer, start_gateway: GatewayFactory
) -> None:
    gateway = start_gateway(fleet.table(generation=1))
    swapped = routing_table(
        2,
        {
            "e0": ([0], fleet.ports("e0")),
            "e1": ([1], [plain_server.grpc_port]),
            "e2": ([2], fleet.ports("e2")),
        },
    )

    status, body = gateway.admin("PUT", "/admin/routing-table", swapped)

    assert status == 200, body
    lines = [r for r in gateway.log_records() if r.get("event") == "upstream_unusable"]
    assert [line["expert"] for line in lines] == ["e1"]
    assert httpx.get(gateway.base_url + "/readyz", timeout=10.0).status_code == 503
    response = _complete(gateway.base_url, router.prompt_for_cluster[1])
    assert response.status_code == 200 and response.headers["x-expert-router-fallback"] == "true"
