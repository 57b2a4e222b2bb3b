"""KServe v2 gRPC front end without a network: input decoding, status codes, access log.

Requests are real ``ModelInferRequest`` protobufs encoded the way ``tritonclient`` encodes them
(raw little-endian buffers, ``serialize_byte_tensor`` for BYTES) or with typed ``contents``.
The handlers run with the real :class:`Generation` relaying scripted Triton messages; two
stand-ins replace what needs a network here and is covered by tests/integration: the gRPC call
(``ScriptedCall``: a list of real ``ModelStreamInferResponse`` messages) and the servicer
context (``RecordingContext``: records ``abort`` as grpc.aio does, by raising).
"""

from __future__ import annotations

import asyncio
import json
import logging
import struct
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2
from tritonclient.utils import serialize_byte_tensor

from router_service.config import (
    GatewayConfig,
    HealthConfig,
    LimitsConfig,
    TensorNames,
    UpstreamSpec,
)
from router_service.dispatch import GenerateRequest
from router_service.errors import (
    AuthenticationError,
    BadRequestError,
    ConflictError,
    GatewayError,
    NoHealthyUpstreamError,
    NotFoundError,
    OverloadedError,
    PayloadTooLargeError,
    UpstreamError,
    UpstreamTimeoutError,
)
from router_service.generation import Chunk, Generation
from router_service.grpc_frontend import GrpcFrontEnd, status_code
from router_service.grpc_inputs import decode_inputs
from router_service.metrics import GatewayMetrics
from router_service.settings import Secrets
from router_service.triton_codec import SamplingParams, build_infer_request
from router_service.upstream import Upstream

NAMES = TensorNames()
LIMITS = LimitsConfig(max_prompt_chars=50, max_tokens_cap=64, default_max_tokens=16)

# -- request building -------------------------------------------------------------------------

_NUMPY = {
    "INT8": "<i1", "INT16": "<i2", "INT32": "<i4", "INT64": "<i8", "UINT8": "<u1",
    "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8", "FP32": "<f4", "FP64": "<f8",
    "BOOL": "?",
}  # fmt: skip
_TYPED_FIELD = {
    "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
    "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents",
    "UINT32": "uint_contents", "UINT64": "uint64_contents", "FP32": "fp32_contents",
    "FP64": "fp64_contents", "BOOL": "bool_contents", "BYTES": "bytes_contents",
}  # fmt: skip


@dataclass
class Tensor:
    name: str
    datatype: str
    values: list[Any]
    shape: tuple[int, ...] | None = None  # default [1, len(values)]


def request_of(*tensors: Tensor, raw: bool = True, model: str = "expert-router") -> Any:
    """A ModelInferRequest as tritonclient builds it (raw) or with typed contents."""
    request = service_pb2.ModelInferRequest(model_name=model, id="req-1")
    for tensor in tensors:
        entry = request.inputs.add()
        entry.name = tensor.name
        entry.datatype = tensor.datatype
        entry.shape.extend(tensor.shape or (1, len(tensor.values)))
        if raw:
            if tensor.datatype == "BYTES":
                array = np.array([tensor.values], dtype=object)
                request.raw_input_contents.append(serialize_byte_tensor(array).item())
            else:
                array = np.array(tensor.values, dtype=_NUMPY[tensor.datatype])
                request.raw_input_contents.append(array.tobytes())
        else:
            getattr(entry.contents, _TYPED_FIELD[tensor.datatype]).extend(tensor.values)
    return request


def prompt(text: str | bytes = "hello world") -> Tensor:
    return Tensor("text_input", "BYTES", [text.encode() if isinstance(text, str) else text])


def decode(request: Any) -> Any:
    return decode_inputs(request, names=NAMES, limits=LIMITS)


# -- decoding: accepted types -----------------------------------------------------------------


@pytest.mark.parametrize("raw", [True, False], ids=["raw", "typed"])
@pytest.mark.parametrize(
    "datatype", ["INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"]
)
def test_integer_inputs_accept_every_integer_type(datatype: str, raw: bool) -> None:
    request = request_of(
        prompt(),
        Tensor("max_tokens", datatype, [7]),
        Tensor("top_k", datatype, [3]),
        Tensor("random_seed", datatype, [11]),
        Tensor("end_id", datatype, [2]),
        raw=raw,
    )
    params = decode(request).params
    assert (params.max_tokens, params.top_k, params.seed, params.end_id) == (7, 3, 11, 2)


@pytest.mark.parametrize("raw", [True, False], ids=["raw", "typed"])
@pytest.mark.parametrize("datatype", ["FP32", "FP64", "INT32", "UINT64"])
def test_float_inputs_accept_float_and_integer_types(datatype: str, raw: bool) -> None:
    request = request_of(
        prompt(),
        Tensor("temperature", datatype, [1]),
        Tensor("top_p", datatype, [1]),
        raw=raw,
    )
    params = decode(request).params
    assert (params.temperature, params.top_p) == (1.0, 1.0)
    assert isinstance(params.temperature, float)


@pytest.mark.parametrize("raw", [True, False], ids=["raw", "typed"])
def test_every_parameter_is_decoded(raw: bool) -> None:
    request = request_of(
        prompt("Bonjour 東京 👋"),
        Tensor("max_tokens", "INT32", [9]),
        Tensor("stream", "BOOL", [True]),
        Tensor("temperature", "FP32", [0.5]),
        Tensor("top_p", "FP32", [0.25]),
        Tensor("top_k", "INT32", [40]),
        Tensor("random_seed", "UINT64", [2**64 - 1]),
        Tensor("end_id", "INT32", [128009]),
        Tensor("stop_words", "BYTES", [b"END", b"\n\n", "fin é".encode()]),
        raw=raw,
    )
    decoded = decode(request)
    assert decoded.prompt == "Bonjour 東京 👋"
    assert decoded.params == SamplingParams(
        max_tokens=9, temperature=0.5, top_p=0.25, top_k=40, seed=2**64 - 1, end_id=128009,
        stop=("END", "\n\n", "fin é"),
    )  # fmt: skip


def test_absent_parameters_keep_the_model_defaults() -> None:
    params = decode(request_of(prompt())).params
    assert params == SamplingParams(max_tokens=LIMITS.default_max_tokens)


def test_the_gateways_own_upstream_encoding_decodes_to_the_same_values() -> None:
    sent = SamplingParams(max_tokens=5, temperature=0.75, top_p=0.5, top_k=2, seed=3, end_id=1,
                          stop=("a", "bc"))  # fmt: skip
    request = build_infer_request(
        model="expert-router", request_id="x", prompt="round trip", params=sent, names=NAMES
    )
    decoded = decode(request)
    assert (decoded.prompt, decoded.params) == ("round trip", sent)


def test_renamed_tensors_follow_the_configured_names() -> None:
    names = TensorNames(text_input="prompt", max_tokens="request_output_len", seed="seed")
    request = request_of(
        Tensor("prompt", "BYTES", [b"renamed"]),
        Tensor("request_output_len", "INT32", [4]),
        Tensor("seed", "UINT64", [8]),
    )
    decoded = decode_inputs(request, names=names, limits=LIMITS)
    assert (decoded.prompt, decoded.params.max_tokens, decoded.params.seed) == ("renamed", 4, 8)


# -- decoding: refused inputs -----------------------------------------------------------------


def _with_raw(request: Any, index: int, raw: bytes) -> Any:
    request.raw_input_contents[index] = raw
    return request


def _typed_in_wrong_field() -> Any:
    request = request_of(prompt(), raw=False)
    entry = request.inputs.add(name="max_tokens", datatype="INT32", shape=[1, 1])
    entry.contents.int64_contents.append(3)  # INT32 data belongs in int_contents
    return request


def _unsupported_type() -> Any:
    request = request_of(prompt())
    request.inputs.add(name="temperature", datatype="FP16", shape=[1, 1])
    request.raw_input_contents.append(b"\0\x3c")
    return request


def _drop_last_raw() -> Any:
    request = request_of(prompt(), Tensor("max_tokens", "INT32", [3]))
    del request.raw_input_contents[1]
    return request


BAD_REQUESTS: list[tuple[str, Callable[[], Any], str]] = [
    ("no prompt", lambda: request_of(Tensor("max_tokens", "INT32", [3])),
     "input 'text_input' is required"),
    ("prompt as INT32", lambda: request_of(Tensor("text_input", "INT32", [1])),
     "input 'text_input' must be BYTES, got INT32"),
    ("two prompts", lambda: request_of(Tensor("text_input", "BYTES", [b"a", b"b"], (2, 1))),
     "must hold one element (batch size 1), got 2"),
    ("shape says 2, one value", lambda: request_of(Tensor("text_input", "BYTES", [b"a"], (1, 2))),
     "has shape [1, 2] (2 elements) but 1 values"),
    ("negative dimension", lambda: request_of(Tensor("text_input", "BYTES", [b"a"], (1, -1))),
     "dimensions must be >= 0"),
    ("truncated BYTES element", lambda: _with_raw(request_of(prompt()), 0, b"\x09\0\0\0abc"),
     "claims 9 bytes but only 3 remain"),
    ("truncated BYTES prefix", lambda: _with_raw(request_of(prompt()), 0, b"\x01\0\0\0a\x02"),
     "truncated BYTES length prefix"),
    ("not UTF-8", lambda: request_of(prompt(b"\xff\xfe")), "is not UTF-8"),
    ("prompt too long", lambda: request_of(prompt("x" * 51)),
     "the prompt has 51 characters; at most 50"),
    ("INT32 buffer of 8 bytes",
     lambda: _with_raw(request_of(prompt(), Tensor("max_tokens", "INT32", [3])), 1, b"\0" * 8),
     "input 'max_tokens' (INT32, shape [1, 1]) needs 4 bytes of raw contents, got 8"),
    ("empty INT32 buffer",
     lambda: _with_raw(request_of(prompt(), Tensor("max_tokens", "INT32", [3])), 1, b""),
     "needs 4 bytes of raw contents, got 0"),
    ("typed contents with two values",
     lambda: request_of(prompt(), Tensor("max_tokens", "INT32", [3, 4], (1, 1)), raw=False),
     "has shape [1, 1] (1 elements) but 2 values"),
    ("typed contents in the wrong field",
     _typed_in_wrong_field, "has shape [1, 1] (1 elements) but 0 values"),
    ("max_tokens as FP32", lambda: request_of(prompt(), Tensor("max_tokens", "FP32", [3.0])),
     "input 'max_tokens' must be one of INT8, INT16, INT32, INT64, UINT8, UINT16, UINT32, "
     "UINT64, got FP32"),
    ("max_tokens as BOOL", lambda: request_of(prompt(), Tensor("max_tokens", "BOOL", [True])),
     "input 'max_tokens' must be one of"),
    ("temperature as BYTES", lambda: request_of(prompt(), Tensor("temperature", "BYTES", [b"1"])),
     "input 'temperature' must be one of"),
    ("FP16 temperature", _unsupported_type, "must be one of INT8, INT16, INT32, INT64, UINT8, UINT16, UINT32, UINT64, FP32, FP64, got FP16"),
    ("max_tokens 0", lambda: request_of(prompt(), Tensor("max_tokens", "INT32", [0])),
     "input 'max_tokens' is 0; allowed 1..64"),
    ("max_tokens above the cap", lambda: request_of(prompt(), Tensor("max_tokens", "INT64", [65])),
     "input 'max_tokens' is 65; allowed 1..64"),
    ("two max_tokens", lambda: request_of(prompt(), Tensor("max_tokens", "INT32", [3, 4])),
     "input 'max_tokens' must hold one element (batch size 1), got 2"),
    ("negative seed", lambda: request_of(prompt(), Tensor("random_seed", "INT64", [-1])),
     "input 'random_seed' is -1; allowed 0..18446744073709551615"),
    ("top_k beyond INT32", lambda: request_of(prompt(), Tensor("top_k", "INT64", [2**31])),
     "input 'top_k' is 2147483648; allowed 0..2147483647"),
    ("temperature 3", lambda: request_of(prompt(), Tensor("temperature", "FP32", [3.0])),
     "input 'temperature' is 3.0; allowed [0.0, 2.0]"),
    ("temperature NaN", lambda: request_of(prompt(), Tensor("temperature", "FP64", [float("nan")])),
     "input 'temperature' is nan"),
    ("top_p 0", lambda: request_of(prompt(), Tensor("top_p", "FP32", [0.0])),
     "input 'top_p' is 0.0; allowed (0.0, 1.0]"),
    ("stop words not BYTES", lambda: request_of(prompt(), Tensor("stop_words", "INT32", [1])),
     "input 'stop_words' must be BYTES"),
    ("input twice", lambda: request_of(prompt(), prompt()), "input 'text_input' is given twice"),
    ("raw buffers missing", _drop_last_raw, "raw_input_contents has 1 entries for 2"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("build", "message"), [(b, m) for _, b, m in BAD_REQUESTS], ids=[i for i, _, _ in BAD_REQUESTS]
)
def test_bad_inputs_are_refused_with_the_tensor_named(
    build: Callable[[], Any], message: str
) -> None:
    with pytest.raises(BadRequestError) as info:
        decode(build())
    assert message in info.value.message
    assert status_code(info.value) is grpc.StatusCode.INVALID_ARGUMENT


# -- status codes -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (BadRequestError("x"), grpc.StatusCode.INVALID_ARGUMENT),
        (PayloadTooLargeError("x"), grpc.StatusCode.INVALID_ARGUMENT),
        (AuthenticationError("x"), grpc.StatusCode.UNAUTHENTICATED),
        (NotFoundError("x"), grpc.StatusCode.NOT_FOUND),
        (OverloadedError("x"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (UpstreamError("x"), grpc.StatusCode.UNAVAILABLE),
        (NoHealthyUpstreamError("x"), grpc.StatusCode.UNAVAILABLE),
        (UpstreamTimeoutError("x"), grpc.StatusCode.DEADLINE_EXCEEDED),
        (ConflictError("x"), grpc.StatusCode.INTERNAL),
        (GatewayError("x"), grpc.StatusCode.INTERNAL),
    ],
)
def test_status_code_of_each_gateway_error(error: GatewayError, code: grpc.StatusCode) -> None:
    assert status_code(error) is code


# -- handlers ---------------------------------------------------------------------------------


class AbortedError(Exception):
    """What grpc.aio's ``context.abort`` does: raise, so the handler stops there."""


@dataclass
class RecordingContext:
    """Stand-in for grpc.aio.ServicerContext: metadata in, writes and abort recorded."""

    metadata: tuple[tuple[str, str], ...] = ()
    aborted: tuple[grpc.StatusCode, str] | None = None
    written: list[Any] = field(default_factory=list)
    is_writing: bool = False

    async def write(self, message: Any) -> None:
        # grpc.aio refuses a second write while one is in flight on the call; so does this.
        assert not self.is_writing, "context.write while another write is in flight"
        self.is_writing = True
        await asyncio.sleep(0)  # in flight: other tasks run meanwhile
        self.written.append(message)
        self.is_writing = False

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self.metadata

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.aborted = (code, details)
        raise AbortedError(details)


def triton_message(text: str | None, *, final: bool = False, error: str = "") -> Any:
    """One ModelStreamInferResponse as a decoupled Triton model sends it."""
    response = service_pb2.ModelInferResponse(model_name="ensemble", id="x")
    if text is not None:
        response.outputs.add(name="text_output", datatype="BYTES", shape=[1, 1])
        encoded = text.encode()
        response.raw_output_contents.append(struct.pack("<I", len(encoded)) + encoded)
    if final:
        response.parameters["triton_final_response"].bool_param = True
    return service_pb2.ModelStreamInferResponse(error_message=error, infer_response=response)


@dataclass
class ScriptedCall:
    """Stand-in for grpc.aio.StreamStreamCall: hands out scripted Triton messages."""

    messages: list[Any]
    cancelled: bool = False

    async def read(self) -> Any:
        return self.messages.pop(0) if self.messages else grpc.aio.EOF

    def done(self) -> bool:
        return self.cancelled or not self.messages

    def cancel(self) -> bool:
        self.cancelled = True
        return True


@dataclass
class ScriptedDispatcher:
    """Stand-in for Dispatcher.open: the first message is in hand, as in the real one."""

    script: list[Any] | GatewayError
    experts: Sequence[str] = ("e0", "e1")
    opened: list[GenerateRequest] = field(default_factory=list)
    metrics: GatewayMetrics = field(default_factory=GatewayMetrics)

    @property
    def state(self) -> Any:
        return SimpleNamespace(table=SimpleNamespace(experts={e: None for e in self.experts}))

    def is_ready(self) -> bool:
        return True

    async def open(self, request: GenerateRequest) -> Generation:
        self.opened.append(request)
        if isinstance(self.script, GatewayError):
            raise self.script
        upstream = Upstream(UpstreamSpec(grpc_port=9), limits=LimitsConfig(), health=HealthConfig())
        messages = list(self.script)
        first = messages.pop(0)
        return Generation(
            call=ScriptedCall(messages),
            upstream=upstream,
            first=Chunk(first, 1),
            is_done=False,
            expert_id=request.expert_id or "e1",
            cluster=None if request.expert_id else 1,
            is_fallback=False,
            max_tokens=request.params.max_tokens,
            pre_upstream_s=0.0002,
            upstream_first_at=0.0,
            upstream_ttft_s=0.005,
            idle_stream_s=5.0,
            text_output="text_output",
            metrics=self.metrics,
        )


def front_end(dispatcher: ScriptedDispatcher, *, keys: tuple[bytes, ...] = ()) -> GrpcFrontEnd:
    config = GatewayConfig.model_validate(
        {
            "router_dir": str(Path("unused")),
            "routing": {"generation": 1, "experts": [
                {"id": "e0", "clusters": [0], "upstreams": [{"grpc_port": 9}]},
                {"id": "e1", "clusters": [1], "upstreams": [{"grpc_port": 9}]},
            ]},
            "limits": LIMITS.model_dump(),
        }
    )  # fmt: skip
    return GrpcFrontEnd(config, dispatcher, Secrets(api_keys=keys))  # type: ignore[arg-type]


def access_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "router_service.access"]


def infer(front: GrpcFrontEnd, request: Any, context: RecordingContext) -> Any:
    async def run() -> Any:
        return await front.ModelInfer(request, context)

    return asyncio.run(run())


def stream(front: GrpcFrontEnd, requests: list[Any], context: RecordingContext) -> list[Any]:
    async def run() -> list[Any]:
        async def incoming() -> AsyncIterator[Any]:
            for request in requests:
                yield request

        await front.ModelStreamInfer(incoming(), context)
        return context.written

    return asyncio.run(run())


def text_of(response: Any) -> str | None:
    if not response.raw_output_contents:
        return None
    raw = response.raw_output_contents[0]
    return bytes(raw[4:]).decode()


def test_model_infer_collects_the_text_and_logs_one_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    dispatcher = ScriptedDispatcher([" a", triton_message(" b"), triton_message(" c", final=True)])
    context = RecordingContext()
    request = request_of(prompt("route me"), Tensor("max_tokens", "INT32", [3]))

    with caplog.at_level(logging.INFO, logger="router_service.access"):
        response = infer(front_end(dispatcher), request, context)

    assert context.aborted is None
    assert (response.model_name, response.id, text_of(response)) == ("expert-router", "req-1",
                                                                     " a b c")  # fmt: skip
    assert dispatcher.opened[0].expert_id is None and dispatcher.opened[0].prompt == "route me"
    [line] = access_lines(caplog)
    assert line["protocol"] == "grpc"
    assert line["path"] == "/inference.GRPCInferenceService/ModelInfer"
    assert (line["request_id"], line["status"], line["model"]) == ("req-1", "OK", "expert-router")
    assert (line["expert"], line["cluster"], line["fallback"]) == ("e1", 1, False)
    assert (line["completion_tokens"], line["outcome"], line["prompt_chars"]) == (3, "ok", 8)
    assert line["upstream_ttft_ms"] == 5.0
    assert line["ttft_ms"] == pytest.approx(line["overhead_ms"] + 5.0)
    assert line["duration_ms"] >= 0 and "prompt" not in line


def test_pinned_expert_model_name_skips_classification() -> None:
    dispatcher = ScriptedDispatcher([" x", triton_message(None, final=True)])
    request = request_of(prompt(), model="e0")

    response = infer(front_end(dispatcher), request, RecordingContext())

    assert dispatcher.opened[0].expert_id == "e0"
    assert text_of(response) == " x"


@pytest.mark.parametrize(
    ("script", "model", "code", "message"),
    [
        ([" x"], "nope", grpc.StatusCode.NOT_FOUND, "The model 'nope' does not exist."),
        (OverloadedError("queue full", code="overloaded"), "expert-router",
         grpc.StatusCode.RESOURCE_EXHAUSTED, "queue full"),
        (NoHealthyUpstreamError("no healthy server for expert 'e1'", code="no_healthy_upstream"),
         "expert-router", grpc.StatusCode.UNAVAILABLE, "no healthy server for expert 'e1'"),
        (UpstreamTimeoutError("expert e1: no first token", code="timeout"), "expert-router",
         grpc.StatusCode.DEADLINE_EXCEEDED, "expert e1: no first token"),
        (UpstreamError("expert e1: boom", code="upstream"), "expert-router",
         grpc.StatusCode.UNAVAILABLE, "expert e1: boom"),
    ],
)  # fmt: skip
def test_model_infer_errors_end_the_rpc_with_their_status(
    script: Any, model: str, code: grpc.StatusCode, message: str, caplog: pytest.LogCaptureFixture
) -> None:
    context = RecordingContext()
    with caplog.at_level(logging.INFO, logger="router_service.access"), pytest.raises(AbortedError):
        infer(front_end(ScriptedDispatcher(script)), request_of(prompt(), model=model), context)

    assert context.aborted == (code, message)
    [line] = access_lines(caplog)
    assert line["status"] == code.name and line["error"]


def test_bad_input_aborts_with_invalid_argument_before_dispatch() -> None:
    dispatcher = ScriptedDispatcher([" x"])
    context = RecordingContext()
    request = request_of(prompt(), Tensor("max_tokens", "FP32", [2.0]))

    with pytest.raises(AbortedError):
        infer(front_end(dispatcher), request, context)

    assert context.aborted is not None
    assert context.aborted[0] is grpc.StatusCode.INVALID_ARGUMENT
    assert "input 'max_tokens' must be one of" in context.aborted[1]
    assert dispatcher.opened == []


def test_api_key_from_metadata(caplog: pytest.LogCaptureFixture) -> None:
    dispatcher = ScriptedDispatcher([" ok", triton_message(None, final=True)])
    front = front_end(dispatcher, keys=(b"k1",))
    missing = RecordingContext()
    with caplog.at_level(logging.INFO, logger="router_service.access"), pytest.raises(AbortedError):
        infer(front, request_of(prompt()), missing)
    assert missing.aborted is not None
    assert missing.aborted[0] is grpc.StatusCode.UNAUTHENTICATED
    assert access_lines(caplog)[0]["status"] == "UNAUTHENTICATED"

    good = RecordingContext(metadata=(("authorization", "Bearer k1"),))
    assert text_of(infer(front, request_of(prompt()), good)) == " ok"
    with pytest.raises(AbortedError):
        stream(front, [request_of(prompt())], RecordingContext())


def test_stream_relays_each_chunk_then_the_empty_final_response(
    caplog: pytest.LogCaptureFixture,
) -> None:
    dispatcher = ScriptedDispatcher([" a", triton_message(" b"), triton_message(None, final=True)])
    request = request_of(prompt())
    request.parameters["triton_enable_empty_final_response"].bool_param = True

    with caplog.at_level(logging.INFO, logger="router_service.access"):
        responses = stream(front_end(dispatcher), [request], RecordingContext())

    assert [r.error_message for r in responses] == ["", "", ""]
    assert [text_of(r.infer_response) for r in responses] == [" a", " b", None]
    final = responses[-1].infer_response.parameters["triton_final_response"]
    assert final.bool_param and responses[-1].infer_response.id == "req-1"
    [line] = access_lines(caplog)
    assert line["path"] == "/inference.GRPCInferenceService/ModelStreamInfer"
    assert (line["status"], line["completion_tokens"], line["outcome"]) == ("OK", 2, "ok")


def test_stream_failure_after_a_token_is_sent_in_stream(caplog: pytest.LogCaptureFixture) -> None:
    dispatcher = ScriptedDispatcher([" a", triton_message(None, error="engine exploded")])
    context = RecordingContext()

    with caplog.at_level(logging.INFO, logger="router_service.access"):
        responses = stream(front_end(dispatcher), [request_of(prompt())], context)

    assert context.aborted is None
    assert text_of(responses[0].infer_response) == " a"
    assert responses[1].error_message == "expert e1: engine exploded"
    assert responses[1].infer_response.id == "req-1"
    [line] = access_lines(caplog)
    assert (line["status"], line["in_stream"], line["error"]) == ("UNAVAILABLE", True, "upstream")
    assert (line["completion_tokens"], line["outcome"]) == (1, "upstream_error")


def test_stream_error_before_any_response_is_the_rpc_status() -> None:
    context = RecordingContext()
    with pytest.raises(AbortedError):
        stream(front_end(ScriptedDispatcher([" a"])), [request_of(prompt(), model="nope")], context)
    assert context.aborted == (grpc.StatusCode.NOT_FOUND, "The model 'nope' does not exist.")


def test_two_requests_on_one_stream_get_one_log_line_each(
    caplog: pytest.LogCaptureFixture,
) -> None:
    dispatcher = ScriptedDispatcher([" a", triton_message(None, final=True)])
    first, second = request_of(prompt()), request_of(prompt("x" * 60))
    second.id = "req-2"

    with caplog.at_level(logging.INFO, logger="router_service.access"):
        responses = stream(front_end(dispatcher), [first, second], RecordingContext())

    errors = [r for r in responses if r.error_message]
    assert len(errors) == 1 and errors[0].infer_response.id == "req-2"
    assert "at most 50" in errors[0].error_message
    lines = {line["request_id"]: line for line in access_lines(caplog)}
    assert lines["req-1"]["status"] == "OK"
    assert lines["req-2"]["status"] == "INVALID_ARGUMENT" and lines["req-2"]["in_stream"]


def test_requests_sharing_a_stream_interleave_and_write_one_at_a_time() -> None:
    script = [" a", triton_message(" b"), triton_message(" c"), triton_message(None, final=True)]
    first, second = request_of(prompt()), request_of(prompt())
    second.id = "req-2"

    # RecordingContext fails on a write while another is in flight, as grpc.aio does.
    responses = stream(front_end(ScriptedDispatcher(script)), [first, second], RecordingContext())

    ids = [r.infer_response.id for r in responses]
    for request_id in ("req-1", "req-2"):
        texts = [text_of(r.infer_response) for r in responses if r.infer_response.id == request_id]
        assert texts == [" a", " b", " c"]
    assert ids != sorted(ids)  # the second request did not wait for the first to finish


def test_no_json_is_built_when_the_access_logger_is_off(caplog: pytest.LogCaptureFixture) -> None:
    dispatcher = ScriptedDispatcher([" a", triton_message(None, final=True)])
    with caplog.at_level(logging.WARNING, logger="router_service.access"):
        infer(front_end(dispatcher), request_of(prompt()), RecordingContext())
    assert access_lines(caplog) == []
