"""Admin API against a real gateway: drain, routing-table swap under load, reload, auth."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

import httpx
import openai
import pytest

from router_service.classifier.fit import fit_router
from tests.integration.conftest import Fleet, GatewayFactory, Router, _corpus
from tests.support.gateway import routing_table
from tests.support.ports import free_ports
from tests.support.processes import thread_cpu_lists

pytestmark = pytest.mark.integration

TOKEN = "admin-secret-token"


def _expert_of(gateway_url: str, prompt: str) -> tuple[int, str, str]:
    body = {"model": "expert-router", "prompt": prompt, "max_tokens": 2}
    response = httpx.post(gateway_url + "/v1/completions", json=body, timeout=30.0)
    return (
        response.status_code,
        response.headers.get("x-expert-router-expert", ""),
        response.headers.get("x-expert-router-fallback", ""),
    )


def test_drain_sends_requests_to_next_nearest_expert(
    fleet: Fleet, router: Router, start_gateway: GatewayFactory
) -> None:
    gateway = start_gateway(fleet.table(), env={"EXPERT_ROUTER_ADMIN_TOKEN": TOKEN})
    prompt = router.prompt_for_cluster[1]
    assert _expert_of(gateway.base_url, prompt) == (200, "e1", "false")
    assert gateway.admin("POST", "/admin/experts/e1/drain")[0] == 401
    assert gateway.admin("POST", "/admin/experts/e1/drain", token="wrong")[0] == 401
    assert gateway.admin("POST", "/admin/experts/e1/drain", token=TOKEN)[0] == 200
    nearest_other = next(c for c in router.classifier.predict(prompt).ranked() if c != 1)
    assert _expert_of(gateway.base_url, prompt) == (200, f"e{nearest_other}", "true")
    status, state = gateway.admin("GET", "/admin/experts", token=TOKEN)
    assert status == 200 and state["drained"] == ["e1"]
    assert {e["id"]: e["state"] for e in state["experts"]}["e1"] == "draining"
    assert gateway.admin("POST", "/admin/experts/e1/undrain", token=TOKEN)[0] == 200
    assert _expert_of(gateway.base_url, prompt) == (200, "e1", "false")
    assert gateway.admin("POST", "/admin/experts/nope/drain", token=TOKEN)[0] == 404


def test_routing_table_swap_under_load_fails_no_request(
    fleet: Fleet, router: Router, start_gateway: GatewayFactory
) -> None:
    gateway = start_gateway(fleet.table(generation=1))
    failures: list[str] = []
    experts_seen: set[str] = set()
    stop = threading.Event()

    def load() -> None:
        client = openai.OpenAI(base_url=gateway.base_url + "/v1", api_key="x", max_retries=0)
        while not stop.is_set():
            try:
                stream = client.completions.create(
                    model="expert-router", prompt=router.prompt_for_cluster[0], max_tokens=5,
                    stream=True,
                )  # fmt: skip
                text = "".join(chunk.choices[0].text for chunk in stream if chunk.choices)
                if len(text.split()) != 5:
                    failures.append(f"incomplete: {text!r}")
                experts_seen.add(text.split()[0].split("-")[0])
            except Exception as exc:
                failures.append(repr(exc))

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        # Generation 2: cluster 0 moves to e1's server under a new expert id; e0 disappears.
        table = routing_table(
            2, {"e0new": ([0], fleet.ports("e1")), "e1": ([1], fleet.ports("e1")),
                "e2": ([2], fleet.ports("e2"))},
        )  # fmt: skip
        threading.Event().wait(1.0)
        status, body = gateway.admin("PUT", "/admin/routing-table", table)
        assert (status, body) == (200, {"generation": 2})
        threading.Event().wait(1.0)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert failures == []
    # Served by e0 before the swap and by e1's server after it.
    assert experts_seen & {"e0a", "e0b"} and "e1a" in experts_seen
    assert gateway.admin("GET", "/admin/generation")[1]["generation"] == 2
    assert gateway.admin("PUT", "/admin/routing-table", table)[0] == 409
    missing = routing_table(3, {"e1": ([1], fleet.ports("e1")), "e2": ([2], fleet.ports("e2"))})
    status, body = gateway.admin("PUT", "/admin/routing-table", missing)
    assert status == 400 and "not mapped" in body["error"]["message"]
    assert httpx.get(gateway.base_url + "/readyz").json()["generation"] == 2


def test_reload_classifier_checks_k(
    fleet: Fleet, router: Router, tmp_path: Path, start_gateway: GatewayFactory
) -> None:
    gateway = start_gateway(fleet.table())
    before = gateway.admin("GET", "/admin/generation")[1]["classifier_hash"]
    same_k = tmp_path / "router_k3"
    fit_router(_corpus(1), k=3, seed=1).save(same_k)
    status, body = gateway.admin("POST", "/admin/reload-classifier", {"router_dir": str(same_k)})
    assert status == 200 and body["content_hash"] != before
    assert gateway.admin("GET", "/admin/generation")[1]["classifier_hash"] == body["content_hash"]
    other_k = tmp_path / "router_k2"
    fit_router(_corpus(2), k=2, seed=0).save(other_k)
    status, body = gateway.admin("POST", "/admin/reload-classifier", {"router_dir": str(other_k)})
    assert status == 400 and "clusters" in body["error"]["message"]
    status, _ = gateway.admin("POST", "/admin/reload-classifier", {"router_dir": "/nonexistent"})
    assert status == 400
    assert _expert_of(gateway.base_url, router.prompt_for_cluster[2])[0] == 200


def test_api_keys_from_env_and_file(
    fleet: Fleet, router: Router, tmp_path: Path, start_gateway: GatewayFactory
) -> None:
    key_file = tmp_path / "keys.txt"
    key_file.write_text("file-key\n")
    gateway = start_gateway(
        fleet.table(),
        env={"MY_KEYS": "env-key-1, env-key-2"},
        auth={"api_keys_env": "MY_KEYS", "api_keys_file": str(key_file)},
    )
    body = {"model": "expert-router", "prompt": router.prompt_for_cluster[0], "max_tokens": 1}
    url = gateway.base_url + "/v1/completions"
    assert httpx.post(url, json=body).status_code == 401
    wrong = httpx.post(url, json=body, headers={"authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
    for key in ("env-key-1", "env-key-2", "file-key"):
        assert httpx.post(url, json=body, headers={"authorization": f"Bearer {key}"}).is_success
    assert httpx.get(gateway.base_url + "/v1/models").status_code == 401
    client = openai.OpenAI(base_url=gateway.base_url + "/v1", api_key="file-key", max_retries=0)
    assert client.completions.create(**body).choices[0].text  # type: ignore[call-overload]
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=gateway.base_url + "/v1", api_key="bad", max_retries=0).models.list()
    assert "env-key" not in gateway.log_text() and "file-key" not in gateway.log_text()
    assert any(r.get("event") == "auth" and r.get("key_count") == 3 for r in gateway.log_records())


@pytest.mark.parametrize("field", ["http_port", "admin_port", "grpc_port"])
def test_taken_port_is_a_one_line_error(
    fleet: Fleet, start_gateway: GatewayFactory, field: str
) -> None:
    ports = dict(zip(["http_port", "admin_port", "grpc_port"], free_ports(3), strict=True))
    with (
        socket.create_server(("127.0.0.1", ports[field])),
        pytest.raises(RuntimeError, match="gateway exited") as failure,
    ):
        start_gateway(fleet.table(), **ports)
    last_line = str(failure.value).strip().splitlines()[-1]
    assert last_line.startswith(f"error: cannot listen on 127.0.0.1:{ports[field]} (")
    assert last_line.endswith(f"set {field} to a free port")


def test_unreadable_router_is_a_one_line_error(
    fleet: Fleet, tmp_path: Path, start_gateway: GatewayFactory
) -> None:
    empty = tmp_path / "no-router"
    empty.mkdir()
    with pytest.raises(RuntimeError, match="gateway exited") as failure:
        start_gateway(fleet.table(), router_dir=str(empty))
    last_line = str(failure.value).strip().splitlines()[-1]
    assert last_line.startswith(f"error: {empty}/router.json is missing; ")
    assert "Traceback" not in str(failure.value)


def test_cpus_pin_every_thread_of_the_replica(fleet: Fleet, start_gateway: GatewayFactory) -> None:
    cpu = max(os.sched_getaffinity(0))
    gateway = start_gateway(fleet.table(), cpus=[cpu])
    assert gateway.process is not None
    # The gRPC, BLAS and asyncio threads exist by now; each must have inherited the pinning.
    assert thread_cpu_lists(gateway.process.pid) == {str(cpu)}
    started = [r for r in gateway.log_records() if r.get("event") == "started"]
    assert started and started[0]["cpus"] == str(cpu)


def test_cpus_this_host_lacks_are_a_one_line_error(
    fleet: Fleet, start_gateway: GatewayFactory
) -> None:
    missing = max(os.sched_getaffinity(0)) + 1000
    with pytest.raises(RuntimeError, match="gateway exited") as failure:
        start_gateway(fleet.table(), cpus=[missing])
    last_line = str(failure.value).strip().splitlines()[-1]
    assert f": cpus {missing} are not available here (this process may use " in last_line
    assert last_line.startswith("error: ")
    assert last_line.endswith("set cpus (gateway.cpus in the inventory) to some of those")
