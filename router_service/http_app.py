"""OpenAI-compatible HTTP front end: completions, chat completions, models, health, metrics.

Every routed response carries ``x-expert-router-expert``, ``-cluster``, ``-fallback`` and
``-overhead-ms`` (gateway-added time to first token). A streamed response starts only after
the first upstream token is in hand, so every failure before it still gets a real status code;
a failure after it ends the stream with ``data: {"error": {...}}`` (no ``[DONE]``).
One JSON log line is written per request, without prompt text unless ``log_prompts``.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncGenerator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from router_service.access_log import AccessRecord, done_fields
from router_service.auth import require_api_key
from router_service.config import GatewayConfig
from router_service.dispatch import Dispatcher, GenerateRequest, Generation
from router_service.errors import BadRequestError, GatewayError, NotFoundError, PayloadTooLargeError
from router_service.openai_api import (
    ChunkEncoder,
    ParsedRequest,
    chunk_event,
    estimate_tokens,
    parse_chat,
    parse_completion,
    response_body,
    usage_body,
)
from router_service.settings import Secrets
from router_service.sse import SSEResponse

__all__ = ["HttpFrontEnd", "build_http_app", "error_response"]

_DONE = b"data: [DONE]\n\n"


def error_response(error: GatewayError) -> JSONResponse:
    """The OpenAI-style JSON error response for ``error`` (with Retry-After when set)."""
    headers = {}
    if error.retry_after_s is not None:
        headers["retry-after"] = str(error.retry_after_s)
    return JSONResponse(error.to_body(), status_code=error.http_status, headers=headers)


class HttpFrontEnd:
    """Request handlers of the public HTTP port."""

    def __init__(self, config: GatewayConfig, dispatcher: Dispatcher, secrets: Secrets) -> None:
        self.config = config
        self.dispatcher = dispatcher
        self.secrets = secrets
        self.is_shutting_down = False

    async def _read_body(self, request: Request) -> bytes:
        limit = self.config.limits.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise PayloadTooLargeError(f"Request body is larger than {limit} bytes.")
        parts: list[bytes] = []
        size = 0
        async for part in request.stream():
            size += len(part)
            if size > limit:
                raise PayloadTooLargeError(f"Request body is larger than {limit} bytes.")
            parts.append(part)
        return b"".join(parts)

    def _to_generate_request(
        self, parsed: ParsedRequest, request_id: str, received_at: float
    ) -> GenerateRequest:
        if parsed.model == self.config.routed_model_name:
            expert_id = None
        elif parsed.model in self.dispatcher.state.table.experts:
            expert_id = parsed.model
        else:
            raise NotFoundError(
                f"The model '{parsed.model}' does not exist; see GET /v1/models.",
                param="model",
                code="model_not_found",
            )
        return GenerateRequest(
            prompt=parsed.prompt,
            params=parsed.params,
            classify_text=parsed.classify_text,
            expert_id=expert_id,
            request_id=request_id,
            received_at=received_at,
        )

    async def completions(self, request: Request) -> Response:
        return await self._generate(request, kind="completion")

    async def chat_completions(self, request: Request) -> Response:
        return await self._generate(request, kind="chat")

    async def _generate(self, request: Request, *, kind: str) -> Response:
        received_at = time.perf_counter()
        request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
        access = AccessRecord(request_id, request.url.path, received_at, protocol="http")
        try:
            require_api_key(request.headers.get("authorization"), self.secrets.api_keys)
            raw = await self._read_body(request)
            # The overhead clock starts with the whole body in hand: a client that is slow to
            # send it is not routing overhead (NGINX with request buffering off forwards the
            # headers first). The access log's duration still counts from the headers.
            body_at = time.perf_counter()
            if kind == "completion":
                parsed = parse_completion(raw, self.config.limits)
            else:
                parsed = parse_chat(raw, self.config.limits, self.config.chat)
            access.fields.update(model=parsed.model, stream=parsed.is_stream)
            access.fields["prompt_chars"] = len(parsed.prompt)
            if self.config.log_prompts:
                access.fields["prompt"] = parsed.prompt
            generation = await self.dispatcher.open(
                self._to_generate_request(parsed, request_id, body_at)
            )
        except GatewayError as error:
            access.emit(error.http_status, error=error.code or error.error_type)
            return error_response(error)
        created = int(time.time())
        prefix = "cmpl-" if kind == "completion" else "chatcmpl-"
        response_id = prefix + request_id
        if parsed.is_stream:
            headers = self._routing_headers(generation, generation.mark_first_delivery())
            return SSEResponse(
                self._events(generation, parsed, response_id, created, access),
                headers=headers,
                on_close=generation.aclose,
            )
        return await self._collect(generation, parsed, response_id, created, access)

    @staticmethod
    def _routing_headers(generation: Generation, overhead_s: float) -> dict[str, str]:
        return {
            "x-expert-router-expert": generation.expert_id,
            "x-expert-router-cluster": ""
            if generation.cluster is None
            else str(generation.cluster),
            "x-expert-router-fallback": "true" if generation.is_fallback else "false",
            "x-expert-router-overhead-ms": f"{overhead_s * 1000:.3f}",
        }

    async def _collect(
        self,
        generation: Generation,
        parsed: ParsedRequest,
        response_id: str,
        created: int,
        access: AccessRecord,
    ) -> Response:
        overhead_s = generation.mark_first_delivery()
        texts: list[str] = []
        try:
            async for chunk in generation:
                texts.append(chunk.text)
        except GatewayError as error:
            access.emit(error.http_status, error=error.code, **done_fields(generation))
            return error_response(error)
        finally:
            await generation.aclose()
        usage = usage_body(estimate_tokens(parsed.prompt), generation.completion_tokens)
        body = response_body(
            kind=parsed.kind,
            response_id=response_id,
            created=created,
            model=parsed.model,
            text="".join(texts),
            finish_reason=generation.finish_reason,
            usage=usage,
        )
        access.emit(200, **done_fields(generation))
        return JSONResponse(body, headers=self._routing_headers(generation, overhead_s))

    async def _events(
        self,
        generation: Generation,
        parsed: ParsedRequest,
        response_id: str,
        created: int,
        access: AccessRecord,
    ) -> AsyncGenerator[bytes, None]:
        def event(
            text: str | None,
            *,
            finish_reason: str | None = None,
            is_first: bool = False,
            usage: dict[str, int] | None = None,
        ) -> bytes:
            return chunk_event(
                kind=parsed.kind,
                response_id=response_id,
                created=created,
                model=parsed.model,
                text=text,
                finish_reason=finish_reason,
                is_first=is_first,
                usage=usage,
            )

        encoder = ChunkEncoder(
            kind=parsed.kind, response_id=response_id, created=created, model=parsed.model
        )
        is_first = True
        try:
            async for chunk in generation:
                yield encoder.token(chunk.text, is_first=is_first)
                is_first = False
            yield event(
                None if parsed.kind == "chat" else "",
                finish_reason=generation.finish_reason,
                is_first=is_first,
            )
            if parsed.include_usage:
                usage = usage_body(estimate_tokens(parsed.prompt), generation.completion_tokens)
                yield event(None, usage=usage)
            yield _DONE
        except GatewayError as error:
            # Status 200 is already on the wire: end the stream with an explicit error event.
            access.fields["error"] = error.code
            yield b"data: " + json.dumps(error.to_body()).encode("utf-8") + b"\n\n"
        finally:
            await generation.aclose()
            access.emit(200, **done_fields(generation))

    async def models(self, request: Request) -> Response:
        try:
            require_api_key(request.headers.get("authorization"), self.secrets.api_keys)
        except GatewayError as error:
            return error_response(error)
        names = [self.config.routed_model_name, *self.dispatcher.state.table.experts]
        data = [
            {"id": n, "object": "model", "created": 0, "owned_by": "expert-router"} for n in names
        ]
        return JSONResponse({"object": "list", "data": data})

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "alive"})

    async def readyz(self, request: Request) -> Response:
        state = self.dispatcher.state
        is_ready = self.dispatcher.is_ready() and not self.is_shutting_down
        body: dict[str, object] = {
            "status": "ready" if is_ready else "not_ready",
            "generation": state.table.generation,
            "classifier_hash": state.classifier.content_hash,
        }
        problems = self.dispatcher.problems()
        if problems:
            body["problems"] = problems
        return JSONResponse(body, status_code=200 if is_ready else 503)

    async def metrics(self, request: Request) -> Response:
        self.dispatcher.snapshot()  # refreshes the per-upstream health gauges
        return Response(
            self.dispatcher.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8"
        )

    async def not_found(self, request: Request, exc: Exception) -> Response:
        return error_response(NotFoundError(f"No route for {request.url.path}.", code="not_found"))

    async def method_not_allowed(self, request: Request, exc: Exception) -> Response:
        error = BadRequestError(f"Method {request.method} not allowed.", code="method_not_allowed")
        error.http_status = 405
        return error_response(error)


def build_http_app(
    config: GatewayConfig, dispatcher: Dispatcher, secrets: Secrets
) -> tuple[Starlette, HttpFrontEnd]:
    """The public Starlette app and its front-end object (``is_shutting_down`` flag for readyz)."""
    front = HttpFrontEnd(config, dispatcher, secrets)
    routes = [
        Route("/v1/completions", front.completions, methods=["POST"]),
        Route("/v1/chat/completions", front.chat_completions, methods=["POST"]),
        Route("/v1/models", front.models, methods=["GET"]),
        Route("/healthz", front.healthz, methods=["GET"]),
        Route("/readyz", front.readyz, methods=["GET"]),
        Route("/metrics", front.metrics, methods=["GET"]),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={404: front.not_found, 405: front.method_not_allowed},
    )
    return app, front
