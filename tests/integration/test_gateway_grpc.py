"""KServe v2 gRPC front end: tritonclient.grpc against the gateway as if it were Triton."""

from __future__ import annotations

import queue
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tests.integration.conftest import Fleet, GatewayFactory, Router
from tests.support.ports import free_port
from tests.support.processes import wait_until

pytestmark = pytest.mark.integration


def _inputs(prompt: str, max_tokens: int) -> list[grpcclient.InferInput]:
    text = grpcclient.InferInput("text_input", [1, 1], "BYTES")
    text.set_data_from_numpy(np.array([[prompt.encode()]], dtype=object))
    tokens = grpcclient.InferInput("max_tokens", [1, 1], "INT32")
    tokens.set_data_from_numpy(np.array([[max_tokens]], dtype=np.int32))
    stream = grpcclient.InferInput("stream", [1, 1], "BOOL")
    stream.set_data_from_numpy(np.array([[True]], dtype=bool))
    return [text, tokens, stream]


def _stream_texts(url: str, model: str, prompt: str, max_tokens: int) -> list[Any]:
    """Stream one request; returns texts in order, or the error (last item) if one came."""
    results: queue.Queue[Any] = queue.Queue()
    client = grpcclient.InferenceServerClient(url)
    client.start_stream(callback=lambda result, error: results.put(error or result))
    try:
        client.async_stream_infer(
            model, _inputs(prompt, max_tokens), enable_empty_final_response=True
        )
        items: list[Any] = []
        while True:
            item = results.get(timeout=20)
            if isinstance(item, InferenceServerException):
                items.append(item)
                return items
            response = item.get_response()
            output = item.as_numpy("text_output")
            if output is not None:
                items.append(output.reshape(-1)[0].decode())
            if response.parameters["triton_final_response"].bool_param:
                return items
    finally:
        client.stop_stream()
        client.close()


def test_stream_through_gateway_matches_direct_triton(
    fleet: Fleet, router: Router, start_gateway: GatewayFactory
) -> None:
    port = free_port()
    gateway = start_gateway(fleet.table(), grpc_port=port)
    prompt = router.prompt_for_cluster[1]
    direct = _stream_texts(f"127.0.0.1:{fleet.ports('e1')[0]}", "ensemble", prompt, 9)
    routed = _stream_texts(f"127.0.0.1:{port}", "expert-router", prompt, 9)
    pinned = _stream_texts(f"127.0.0.1:{port}", "e1", router.prompt_for_cluster[0], 9)
    assert len(direct) == 9 and all(isinstance(t, str) for t in direct)
    assert routed == direct
    assert pinned == direct
    assert gateway.process is not None and gateway.process.poll() is None


def test_model_infer_health_metadata_and_unknown_model(
    fleet: Fleet, router: Router, start_gateway: GatewayFactory
) -> None:
    port = free_port()
    start_gateway(fleet.table(), grpc_port=port)
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
    try:
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready("expert-router") and client.is_model_ready("e2")
        assert not client.is_model_ready("nope")
        metadata = client.get_model_metadata("expert-router")
        assert {t.name for t in metadata.inputs} >= {"text_input", "max_tokens", "stream"}
        assert [t.name for t in metadata.outputs] == ["text_output"]
        result = client.infer("expert-router", _inputs(router.prompt_for_cluster[2], 4))
        text = result.as_numpy("text_output").reshape(-1)[0].decode()
        assert text == "".join(f" e2a-{i}" for i in range(4))
        with pytest.raises(InferenceServerException) as info:
            client.infer("no-such-model", _inputs("hello", 4))
        assert info.value.status() == "StatusCode.NOT_FOUND"
    finally:
        client.close()
    streamed = _stream_texts(f"127.0.0.1:{port}", "no-such-model", "hello", 4)
    assert len(streamed) == 1 and isinstance(streamed[0], InferenceServerException)
    assert "does not exist" in str(streamed[0])


def test_api_key_required_in_metadata(
    fleet: Fleet, router: Router, start_gateway: GatewayFactory
) -> None:
    port = free_port()
    start_gateway(fleet.table(), grpc_port=port, env={"EXPERT_ROUTER_API_KEYS": "k1"})
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
    try:
        with pytest.raises(InferenceServerException) as info:
            client.infer("expert-router", _inputs(router.prompt_for_cluster[0], 2))
        assert info.value.status() == "StatusCode.UNAUTHENTICATED"
        result = client.infer(
            "expert-router",
            _inputs(router.prompt_for_cluster[0], 2),
            headers={"authorization": "Bearer k1"},
        )
        assert result.as_numpy("text_output").reshape(-1)[0].decode() == " e0a-0 e0a-1" or (
            result.as_numpy("text_output").reshape(-1)[0].decode() == " e0b-0 e0b-1"
        )
    finally:
        client.close()


def test_grpc_requests_write_the_access_log_line(
    fleet: Fleet, router: Router, start_gateway: GatewayFactory
) -> None:
    port = free_port()
    gateway = start_gateway(fleet.table(), grpc_port=port)
    streamed = _stream_texts(f"127.0.0.1:{port}", "expert-router", router.prompt_for_cluster[2], 3)
    assert streamed == [f" e2a-{i}" for i in range(3)]
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
    try:
        client.infer("e1", _inputs(router.prompt_for_cluster[1], 2), request_id="unary-1")
        with pytest.raises(InferenceServerException):
            client.infer("expert-router", _inputs("x", 0), request_id="bad-1")
    finally:
        client.close()

    assert wait_until(
        lambda: len([r for r in gateway.log_records() if r.get("protocol") == "grpc"]) == 3,
        timeout_s=10.0,
    ), gateway.log_text()
    lines = [r for r in gateway.log_records() if r.get("protocol") == "grpc"]
    stream_line, unary, bad = lines
    assert stream_line["path"] == "/inference.GRPCInferenceService/ModelStreamInfer"
    assert (stream_line["status"], stream_line["expert"], stream_line["cluster"]) == ("OK", "e2", 2)
    assert stream_line["completion_tokens"] == 3 and stream_line["fallback"] is False
    assert stream_line["ttft_ms"] > 0 and stream_line["upstream_ttft_ms"] > 0
    assert "prompt" not in stream_line
    assert (unary["request_id"], unary["status"], unary["expert"]) == ("unary-1", "OK", "e1")
    assert unary["cluster"] is None and unary["completion_tokens"] == 2
    assert (bad["request_id"], bad["status"]) == ("bad-1", "INVALID_ARGUMENT")


def _first_parameters(url: str, model: str, prompt: str) -> dict[str, Any]:
    """The parameters of the first response of one streamed request."""
    results: queue.Queue[Any] = queue.Queue()
    client = grpcclient.InferenceServerClient(url)
    client.start_stream(callback=lambda result, error: results.put(error or result))
    try:
        client.async_stream_infer(model, _inputs(prompt, 3))
        item = results.get(timeout=20)
        assert not isinstance(item, InferenceServerException), item
        parameters = item.get_response().parameters
        return {
            key: getattr(parameters[key], parameters[key].WhichOneof("parameter_choice"))
            for key in parameters
        }
    finally:
        client.stop_stream()
        client.close()


def test_first_stream_response_says_which_expert_serves(
    fleet: Fleet, router: Router, start_gateway: GatewayFactory
) -> None:
    port = free_port()
    start_gateway(fleet.table(), grpc_port=port)
    routed = _first_parameters(f"127.0.0.1:{port}", "expert-router", router.prompt_for_cluster[1])
    assert routed["expert_router_expert"] == "e1"
    assert routed["expert_router_cluster"] == 1
    assert routed["expert_router_fallback"] is False
    # The gateway's own share of the time to first token (the HTTP header's figure): a
    # measured time, so positive; under a second even on a loaded CI machine.
    assert 0 < routed["expert_router_overhead_ms"] < 1000
    direct = _first_parameters(f"127.0.0.1:{fleet.ports('e1')[0]}", "ensemble", "hello")
    assert not any(key.startswith("expert_router_") for key in direct)
