"""KServe v2 gRPC front end: ``tritonclient.grpc`` can point at the gateway as if it were Triton.

Served RPCs: ``ServerLive``, ``ServerReady``, ``ModelReady``, ``ServerMetadata``,
``ModelMetadata``, ``ModelInfer`` (collects the whole text) and ``ModelStreamInfer`` (decoupled:
one response per relayed chunk). Every other RPC answers ``UNIMPLEMENTED``.

The model name is the routed name (the prompt is classified) or an expert id (pinned). Inputs
use the configured ensemble tensor names (``text_input``, ``max_tokens``, ``stream``, ...);
the output is ``text_output`` (BYTES, shape ``[1, 1]``).

Errors: a :class:`GatewayError` raised before the first response ends the RPC with a gRPC status
(INVALID_ARGUMENT, UNAUTHENTICATED, NOT_FOUND, RESOURCE_EXHAUSTED, UNAVAILABLE,
DEADLINE_EXCEEDED). On ``ModelStreamInfer`` a failure after a response was written, or while
other requests share the stream, is sent in-stream as ``error_message`` instead, as Triton does.
The last response of a stream request is an empty one flagged ``triton_final_response`` when
the request asked for ``triton_enable_empty_final_response`` (what Triton does for decoupled
models). API keys, when configured, come from the ``authorization: Bearer <key>`` metadata.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc

from router_service.auth import require_api_key
from router_service.config import GatewayConfig
from router_service.dispatch import Dispatcher, GenerateRequest, Generation, SamplingParams
from router_service.errors import (
    AuthenticationError,
    BadRequestError,
    GatewayError,
    NoHealthyUpstreamError,
    NotFoundError,
    OverloadedError,
    UpstreamError,
    UpstreamTimeoutError,
)
from router_service.settings import Secrets

__all__ = ["GrpcFrontEnd", "start_grpc_server", "status_code"]

_LENGTH = struct.Struct("<I")
_SCALARS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "INT32": ("<i", int),
    "INT64": ("<q", int),
    "UINT32": ("<I", int),
    "UINT64": ("<Q", int),
    "FP32": ("<f", float),
    "FP64": ("<d", float),
    "BOOL": ("<?", bool),
}
_STATUS: tuple[tuple[type[GatewayError], grpc.StatusCode], ...] = (
    (BadRequestError, grpc.StatusCode.INVALID_ARGUMENT),
    (AuthenticationError, grpc.StatusCode.UNAUTHENTICATED),
    (NotFoundError, grpc.StatusCode.NOT_FOUND),
    (OverloadedError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (UpstreamTimeoutError, grpc.StatusCode.DEADLINE_EXCEEDED),
    (NoHealthyUpstreamError, grpc.StatusCode.UNAVAILABLE),
    (UpstreamError, grpc.StatusCode.UNAVAILABLE),
)


def status_code(error: GatewayError) -> grpc.StatusCode:
    """The gRPC status code for a gateway error (``INTERNAL`` for anything unlisted)."""
    for kind, code in _STATUS:
        if isinstance(error, kind):
            return code
    return grpc.StatusCode.INTERNAL


def _split_bytes(raw: bytes) -> list[bytes]:
    parts: list[bytes] = []
    offset = 0
    while offset + 4 <= len(raw):
        (length,) = _LENGTH.unpack_from(raw, offset)
        offset += 4
        parts.append(raw[offset : offset + length])
        offset += length
    return parts


def _bytes_tensor(values: list[bytes]) -> bytes:
    return b"".join(_LENGTH.pack(len(v)) + v for v in values)


class _Inputs:
    """The input tensors of one ModelInferRequest, decoded by name (raw or typed contents)."""

    def __init__(self, request: service_pb2.ModelInferRequest) -> None:
        self._tensors: dict[str, tuple[str, bytes | None, Any]] = {}
        use_raw = len(request.raw_input_contents) > 0
        for index, tensor in enumerate(request.inputs):
            raw = request.raw_input_contents[index] if use_raw else None
            if use_raw and index >= len(request.raw_input_contents):
                raise BadRequestError(f"input '{tensor.name}' has no raw contents")
            self._tensors[tensor.name] = (tensor.datatype, raw, tensor.contents)

    def strings(self, name: str) -> list[str] | None:
        found = self._tensors.get(name)
        if found is None:
            return None
        datatype, raw, contents = found
        if datatype != "BYTES":
            raise BadRequestError(f"input '{name}' must be BYTES, got {datatype}", param=name)
        values = _split_bytes(raw) if raw is not None else list(contents.bytes_contents)
        try:
            return [v.decode("utf-8") for v in values]
        except UnicodeDecodeError as exc:
            raise BadRequestError(f"input '{name}' is not UTF-8", param=name) from exc

    def scalar(self, name: str) -> Any:
        found = self._tensors.get(name)
        if found is None:
            return None
        datatype, raw, contents = found
        spec = _SCALARS.get(datatype)
        if spec is None:
            raise BadRequestError(f"input '{name}' has unsupported type {datatype}", param=name)
        fmt, cast = spec
        if raw is not None:
            if len(raw) < struct.calcsize(fmt):
                raise BadRequestError(f"input '{name}' is empty", param=name)
            return cast(struct.unpack_from(fmt, raw)[0])
        for field in ("int_contents", "int64_contents", "uint_contents", "uint64_contents"):
            values = getattr(contents, field)
            if values:
                return cast(values[0])
        for field in ("fp32_contents", "fp64_contents", "bool_contents"):
            values = getattr(contents, field)
            if values:
                return cast(values[0])
        raise BadRequestError(f"input '{name}' is empty", param=name)


class GrpcFrontEnd(service_pb2_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    """KServe v2 GRPCInferenceService handlers backed by the :class:`Dispatcher`."""

    def __init__(self, config: GatewayConfig, dispatcher: Dispatcher, secrets: Secrets) -> None:
        self.config = config
        self.dispatcher = dispatcher
        self.secrets = secrets
        self.is_shutting_down = False

    # -- helpers -------------------------------------------------------------------------------

    async def _authorize(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        if not self.secrets.api_keys:
            return
        authorization = None
        for key, value in context.invocation_metadata() or ():
            if key == "authorization":
                authorization = value if isinstance(value, str) else value.decode("utf-8")
        try:
            require_api_key(authorization, self.secrets.api_keys)
        except AuthenticationError as error:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, error.message)

    def _model_names(self) -> list[str]:
        return [self.config.routed_model_name, *self.dispatcher.state.table.experts]

    def _expert_for(self, model: str) -> str | None:
        if model == self.config.routed_model_name:
            return None
        if model in self.dispatcher.state.table.experts:
            return model
        raise NotFoundError(f"The model '{model}' does not exist.", code="model_not_found")

    def _to_generate_request(
        self, request: service_pb2.ModelInferRequest, received_at: float
    ) -> GenerateRequest:
        expert_id = self._expert_for(request.model_name)
        names = self.config.tensors
        limits = self.config.limits
        inputs = _Inputs(request)
        texts = inputs.strings(names.text_input)
        if not texts:
            raise BadRequestError(f"input '{names.text_input}' is required", param="text_input")
        prompt = texts[0]
        if len(prompt) > limits.max_prompt_chars:
            raise BadRequestError(
                f"the prompt has {len(prompt)} characters; at most {limits.max_prompt_chars}",
                param=names.text_input,
            )
        max_tokens = inputs.scalar(names.max_tokens)
        if max_tokens is None:
            max_tokens = min(limits.default_max_tokens, limits.max_tokens_cap)
        if not 1 <= max_tokens <= limits.max_tokens_cap:
            raise BadRequestError(
                f"max_tokens is {max_tokens}; allowed 1..{limits.max_tokens_cap}",
                param=names.max_tokens,
            )
        params = SamplingParams(
            max_tokens=max_tokens,
            temperature=inputs.scalar(names.temperature),
            top_p=inputs.scalar(names.top_p),
            top_k=inputs.scalar(names.top_k),
            seed=inputs.scalar(names.seed),
            end_id=inputs.scalar(names.end_id),
            stop=tuple(inputs.strings(names.stop_words) or ()),
        )
        return GenerateRequest(
            prompt=prompt,
            params=params,
            expert_id=expert_id,
            request_id=request.id or uuid.uuid4().hex,
            received_at=received_at,
        )

    def _response(
        self, request: service_pb2.ModelInferRequest, text: str | None, *, is_final: bool = False
    ) -> service_pb2.ModelInferResponse:
        response = service_pb2.ModelInferResponse(
            model_name=request.model_name, model_version="1", id=request.id
        )
        if text is not None:
            output = response.outputs.add()
            output.name = self.config.tensors.text_output
            output.datatype = "BYTES"
            output.shape.extend((1, 1))
            response.raw_output_contents.append(_bytes_tensor([text.encode("utf-8")]))
        if is_final:
            response.parameters["triton_final_response"].bool_param = True
        return response

    # -- health and metadata -------------------------------------------------------------------

    async def ServerLive(  # noqa: N802 (gRPC method names)
        self, request: service_pb2.ServerLiveRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> service_pb2.ServerLiveResponse:
        return service_pb2.ServerLiveResponse(live=True)

    async def ServerReady(  # noqa: N802
        self, request: service_pb2.ServerReadyRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> service_pb2.ServerReadyResponse:
        is_ready = self.dispatcher.is_ready() and not self.is_shutting_down
        return service_pb2.ServerReadyResponse(ready=is_ready)

    async def ModelReady(  # noqa: N802
        self, request: service_pb2.ModelReadyRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> service_pb2.ModelReadyResponse:
        await self._authorize(context)
        is_known = request.name in self._model_names()
        is_ready = is_known and self.dispatcher.is_ready() and not self.is_shutting_down
        return service_pb2.ModelReadyResponse(ready=is_ready)

    async def ServerMetadata(  # noqa: N802
        self,
        request: service_pb2.ServerMetadataRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> service_pb2.ServerMetadataResponse:
        return service_pb2.ServerMetadataResponse(
            name="expert-router", version="1", extensions=["expert_routing"]
        )

    async def ModelMetadata(  # noqa: N802
        self,
        request: service_pb2.ModelMetadataRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> service_pb2.ModelMetadataResponse:
        await self._authorize(context)
        if request.name not in self._model_names():
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown model '{request.name}'")
        names = self.config.tensors
        tensor = service_pb2.ModelMetadataResponse.TensorMetadata
        inputs = [
            tensor(name=names.text_input, datatype="BYTES", shape=[-1, 1]),
            tensor(name=names.max_tokens, datatype="INT32", shape=[-1, 1]),
            tensor(name=names.stream, datatype="BOOL", shape=[-1, 1]),
            tensor(name=names.temperature, datatype="FP32", shape=[-1, 1]),
            tensor(name=names.top_p, datatype="FP32", shape=[-1, 1]),
            tensor(name=names.top_k, datatype="INT32", shape=[-1, 1]),
            tensor(name=names.seed, datatype="UINT64", shape=[-1, 1]),
            tensor(name=names.end_id, datatype="INT32", shape=[-1, 1]),
            tensor(name=names.stop_words, datatype="BYTES", shape=[-1, -1]),
        ]
        outputs = [tensor(name=names.text_output, datatype="BYTES", shape=[-1, -1])]
        return service_pb2.ModelMetadataResponse(
            name=request.name, versions=["1"], platform="ensemble", inputs=inputs, outputs=outputs
        )

    # -- inference -----------------------------------------------------------------------------

    async def _open(self, request: service_pb2.ModelInferRequest, received_at: float) -> Generation:
        return await self.dispatcher.open(self._to_generate_request(request, received_at))

    async def ModelInfer(  # noqa: N802
        self, request: service_pb2.ModelInferRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> service_pb2.ModelInferResponse:
        received_at = time.perf_counter()
        await self._authorize(context)
        texts: list[str] = []
        try:
            generation = await self._open(request, received_at)
            generation.mark_first_delivery()
            try:
                async for chunk in generation:
                    texts.append(chunk.text)
            finally:
                await generation.aclose()
        except GatewayError as error:
            await context.abort(status_code(error), error.message)
        return self._response(request, "".join(texts))

    async def ModelStreamInfer(  # noqa: N802
        self,
        request_iterator: AsyncIterator[service_pb2.ModelInferRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[service_pb2.ModelStreamInferResponse]:
        await self._authorize(context)
        out: asyncio.Queue[service_pb2.ModelStreamInferResponse | GatewayError | None] = (
            asyncio.Queue()
        )
        tasks: set[asyncio.Task[None]] = set()
        written = False

        async def run(request: service_pb2.ModelInferRequest, received_at: float) -> None:
            try:
                generation = await self._open(request, received_at)
            except GatewayError as error:
                # Before any response on the stream and alone on it: a real status code.
                if not written and len(tasks) == 1 and reader_done.is_set():
                    await out.put(error)
                else:
                    await out.put(
                        service_pb2.ModelStreamInferResponse(
                            error_message=error.message,
                            infer_response=self._response(request, None, is_final=True),
                        )
                    )
                return
            is_first = True
            try:
                async for chunk in generation:
                    if is_first:
                        generation.mark_first_delivery()
                        is_first = False
                    await out.put(
                        service_pb2.ModelStreamInferResponse(
                            infer_response=self._response(request, chunk.text)
                        )
                    )
                param = request.parameters.get("triton_enable_empty_final_response")
                if param is not None and param.bool_param:
                    await out.put(
                        service_pb2.ModelStreamInferResponse(
                            infer_response=self._response(request, None, is_final=True)
                        )
                    )
            except GatewayError as error:
                await out.put(service_pb2.ModelStreamInferResponse(error_message=error.message))
            finally:
                await generation.aclose()

        reader_done = asyncio.Event()

        def finished(task: asyncio.Task[None]) -> None:
            tasks.discard(task)
            if reader_done.is_set() and not tasks:
                out.put_nowait(None)

        async def read() -> None:
            try:
                async for request in request_iterator:
                    task = asyncio.create_task(run(request, time.perf_counter()))
                    tasks.add(task)
                    task.add_done_callback(finished)
            finally:
                reader_done.set()
                if not tasks:
                    out.put_nowait(None)

        reader = asyncio.create_task(read())
        try:
            while True:
                item = await out.get()
                if item is None:
                    break
                if isinstance(item, GatewayError):
                    await context.abort(status_code(item), item.message)
                written = True
                yield item
        finally:
            reader.cancel()
            for task in list(tasks):
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader


async def start_grpc_server(
    config: GatewayConfig, dispatcher: Dispatcher, secrets: Secrets
) -> tuple[grpc.aio.Server, GrpcFrontEnd, int]:
    """Start the gRPC front end on ``config.host:config.grpc_port``; returns the bound port."""
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", config.limits.max_body_bytes),
            ("grpc.so_reuseport", 0),
        ]
    )
    front = GrpcFrontEnd(config, dispatcher, secrets)
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(front, server)
    port = server.add_insecure_port(f"{config.host}:{config.grpc_port or 0}")
    await server.start()
    return server, front, port
