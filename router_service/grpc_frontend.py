"""KServe v2 gRPC front end: ``tritonclient.grpc`` can point at the gateway as if it were Triton.

Served RPCs: ``ServerLive``, ``ServerReady``, ``ModelReady``, ``ServerMetadata``,
``ModelMetadata``, ``ModelInfer`` (collects the whole text) and ``ModelStreamInfer`` (decoupled:
one response per relayed chunk). Every other RPC answers ``UNIMPLEMENTED``.

The model name is the routed name (the prompt is classified) or an expert id (pinned). Inputs
use the configured ensemble tensor names (``text_input``, ``max_tokens``, ``stream``, ...) and
are decoded and checked by :mod:`router_service.grpc_inputs`; the output is ``text_output``
(BYTES, shape ``[1, 1]``). Each request (not each stream) writes one access-log line with the
same fields as the HTTP front end (:mod:`router_service.access_log`), status as a gRPC code name.
The first response of a routed request says what the HTTP front end's ``x-expert-router-*``
headers say, as response parameters: ``expert_router_expert``, ``_cluster``, ``_fallback`` and
``_overhead_ms`` (the gateway's time to first token minus the upstream's).

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
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc

from router_service.access_log import AccessRecord, done_fields, new_request_id
from router_service.auth import require_api_key
from router_service.config import ConfigError, GatewayConfig
from router_service.dispatch import Dispatcher, GenerateRequest, Generation
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
from router_service.grpc_inputs import decode_inputs
from router_service.settings import Secrets
from router_service.triton_codec import SamplingParams, add_text_output, encode_infer_request

__all__ = ["GrpcFrontEnd", "start_grpc_server", "status_code"]

_SERVICE_PATH = "/inference.GRPCInferenceService/"
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


def _rehearsal_request(config: GatewayConfig) -> bytes:
    """A serialized streaming request for the routed model, as tritonclient sends one."""
    return encode_infer_request(
        model=config.routed_model_name,
        request_id="keep-warm",
        prompt="keep warm",
        params=SamplingParams(max_tokens=min(16, config.limits.max_tokens_cap)),
        names=config.tensors,
    )


class GrpcFrontEnd(service_pb2_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    """KServe v2 GRPCInferenceService handlers backed by the :class:`Dispatcher`."""

    def __init__(self, config: GatewayConfig, dispatcher: Dispatcher, secrets: Secrets) -> None:
        self.config = config
        self.dispatcher = dispatcher
        self.secrets = secrets
        #: Inference requests received (router_service.keep_warm watches it).
        self.requests_started = 0
        self._rehearsal_request = _rehearsal_request(config)

    def rehearse(self) -> None:
        """A canned ModelStreamInfer request through this front end's steps that need no I/O:
        parsing, input decoding, the first response's encoding (router_service.keep_warm)."""
        request = service_pb2.ModelInferRequest.FromString(self._rehearsal_request)
        generate = self._to_generate_request(request, "keep-warm", 0.0)
        response = service_pb2.ModelStreamInferResponse(
            infer_response=self._response(request, generate.prompt)
        )
        response.SerializeToString()

    # -- helpers -------------------------------------------------------------------------------

    def _check_key(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        """Raise AuthenticationError unless the ``authorization`` metadata holds a valid key."""
        if not self.secrets.api_keys:
            return
        authorization = None
        for key, value in context.invocation_metadata() or ():
            if key == "authorization":
                authorization = value if isinstance(value, str) else value.decode("utf-8")
        require_api_key(authorization, self.secrets.api_keys)

    async def _authorize(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        try:
            self._check_key(context)
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
        self, request: service_pb2.ModelInferRequest, request_id: str, received_at: float
    ) -> GenerateRequest:
        expert_id = self._expert_for(request.model_name)
        decoded = decode_inputs(request, names=self.config.tensors, limits=self.config.limits)
        return GenerateRequest(
            prompt=decoded.prompt,
            params=decoded.params,
            expert_id=expert_id,
            request_id=request_id,
            received_at=received_at,
        )

    def _access(
        self, request: service_pb2.ModelInferRequest, rpc: str, received_at: float
    ) -> AccessRecord:
        access = AccessRecord(
            request.id or new_request_id(), _SERVICE_PATH + rpc, received_at, protocol="grpc"
        )
        access.fields["model"] = request.model_name
        return access

    async def _open(
        self, request: service_pb2.ModelInferRequest, access: AccessRecord
    ) -> Generation:
        self.requests_started += 1
        generate = self._to_generate_request(request, access.request_id, access.received_at)
        access.fields["prompt_chars"] = len(generate.prompt)
        if self.config.log_prompts:
            access.fields["prompt"] = generate.prompt
        return await self.dispatcher.open(generate)

    def _response(
        self,
        request: service_pb2.ModelInferRequest,
        text: str | None,
        *,
        is_final: bool = False,
        routed: Generation | None = None,
    ) -> service_pb2.ModelInferResponse:
        response = service_pb2.ModelInferResponse(
            model_name=request.model_name, model_version="1", id=request.id
        )
        if routed is not None:
            # What the HTTP front end says in x-expert-router-* headers, as response
            # parameters (gRPC clients see no headers per request on a shared stream).
            response.parameters["expert_router_expert"].string_param = routed.expert_id
            if routed.cluster is not None:
                response.parameters["expert_router_cluster"].int64_param = routed.cluster
            response.parameters["expert_router_fallback"].bool_param = routed.is_fallback
            # The first response is the first delivery: this fixes the overhead, as the HTTP
            # front end's headers do (mark_first_delivery only measures once).
            overhead_ms = routed.mark_first_delivery() * 1000
            response.parameters["expert_router_overhead_ms"].double_param = overhead_ms
        if text is not None:
            add_text_output(response, text, name=self.config.tensors.text_output)
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
        is_ready = self.dispatcher.is_ready()
        return service_pb2.ServerReadyResponse(ready=is_ready)

    async def ModelReady(  # noqa: N802
        self, request: service_pb2.ModelReadyRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> service_pb2.ModelReadyResponse:
        await self._authorize(context)
        is_known = request.name in self._model_names()
        is_ready = is_known and self.dispatcher.is_ready()
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

    async def ModelInfer(  # noqa: N802
        self, request: service_pb2.ModelInferRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> service_pb2.ModelInferResponse:
        access = self._access(request, "ModelInfer", time.perf_counter())
        texts: list[str] = []
        generation: Generation | None = None
        try:
            self._check_key(context)
            generation = await self._open(request, access)
            generation.mark_first_delivery()
            try:
                async for chunk in generation:
                    texts.append(chunk.text)
            finally:
                await generation.aclose()
        except GatewayError as error:
            code = status_code(error)
            routed = done_fields(generation) if generation is not None else {}
            access.emit(code.name, error=error.code or error.error_type, **routed)
            await context.abort(code, error.message)
        except asyncio.CancelledError:
            routed = done_fields(generation) if generation is not None else {}
            access.emit(grpc.StatusCode.CANCELLED.name, **routed)
            raise
        assert generation is not None
        access.emit(grpc.StatusCode.OK.name, **done_fields(generation))
        return self._response(request, "".join(texts), routed=generation)

    async def ModelStreamInfer(  # noqa: N802
        self,
        request_iterator: AsyncIterator[service_pb2.ModelInferRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> None:
        # Each request runs in its own task and writes its responses itself (context.write,
        # one write at a time), rather than through a queue that this handler drains: a queue
        # puts one more hop through the event loop before every token, and under load each hop
        # waits behind the other streams' callbacks.
        try:
            self._check_key(context)
        except AuthenticationError as error:
            rpc = _SERVICE_PATH + "ModelStreamInfer"
            access = AccessRecord("", rpc, time.perf_counter(), protocol="grpc")
            access.emit(grpc.StatusCode.UNAUTHENTICATED.name, error=error.code or error.error_type)
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, error.message)
        tasks: set[asyncio.Task[None]] = set()
        write_lock = asyncio.Lock()
        written = False
        is_reading = True
        # A failure before any response, of the only request on a stream the client has closed
        # for writing, ends the RPC with its status instead of an in-stream error.
        rpc_error: GatewayError | None = None

        async def write(response: service_pb2.ModelStreamInferResponse) -> None:
            nonlocal written
            # grpc.aio allows one write in flight per call. Taking a free lock does not yield.
            async with write_lock:
                written = True
                await context.write(response)

        def error_response(
            request: service_pb2.ModelInferRequest, error: GatewayError
        ) -> service_pb2.ModelStreamInferResponse:
            # The final, empty response carries the request's id, so a client that shares the
            # stream between requests knows which one failed.
            return service_pb2.ModelStreamInferResponse(
                error_message=error.message,
                infer_response=self._response(request, None, is_final=True),
            )

        async def run(request: service_pb2.ModelInferRequest, received_at: float) -> None:
            nonlocal rpc_error
            access = self._access(request, "ModelStreamInfer", received_at)
            try:
                generation = await self._open(request, access)
            except GatewayError as error:
                is_alone = not written and len(tasks) == 1 and not is_reading
                access.emit(
                    status_code(error).name,
                    error=error.code or error.error_type,
                    in_stream=not is_alone,
                )
                if is_alone:
                    rpc_error = error
                else:
                    await write(error_response(request, error))
                return
            failure: GatewayError | None = None
            is_first = True
            try:
                async for chunk in generation:
                    first, is_first = is_first, False
                    await write(
                        service_pb2.ModelStreamInferResponse(
                            infer_response=self._response(
                                request, chunk.text, routed=generation if first else None
                            )
                        )
                    )
                param = request.parameters.get("triton_enable_empty_final_response")
                if param is not None and param.bool_param:
                    await write(
                        service_pb2.ModelStreamInferResponse(
                            infer_response=self._response(request, None, is_final=True)
                        )
                    )
            except GatewayError as error:
                failure = error
                await write(error_response(request, error))
            finally:
                await generation.aclose()
                if failure is not None:
                    access.emit(
                        status_code(failure).name,
                        error=failure.code or failure.error_type,
                        in_stream=True,
                        **done_fields(generation),
                    )
                else:
                    is_ok = generation.outcome == "ok"
                    status = grpc.StatusCode.OK if is_ok else grpc.StatusCode.CANCELLED
                    access.emit(status.name, **done_fields(generation))

        try:
            async for request in request_iterator:
                task = asyncio.create_task(run(request, time.perf_counter()))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            is_reading = False
            while tasks:
                await asyncio.wait(set(tasks))
        finally:
            for task in list(tasks):
                task.cancel()
        if rpc_error is not None:
            await context.abort(status_code(rpc_error), rpc_error.message)


async def start_grpc_server(
    config: GatewayConfig, front: GrpcFrontEnd
) -> tuple[grpc.aio.Server, int]:
    """Serve ``front`` on ``config.host:config.grpc_port``; returns the server and bound port."""
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", config.limits.max_body_bytes),
            ("grpc.so_reuseport", 0),
        ]
    )
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(front, server)
    try:
        port = server.add_insecure_port(f"{config.host}:{config.grpc_port or 0}")
    except RuntimeError as exc:  # grpc's only signal for a failed bind
        raise ConfigError(
            f"cannot listen on {config.host}:{config.grpc_port} (address in use or not local); "
            "set grpc_port to a free port"
        ) from exc
    await server.start()
    return server, port
