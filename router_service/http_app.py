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
from collections.abc import AsyncGenerator, Awaitable, Callable

from router_service.access_log import AccessRecord, done_fields, new_request_id
from router_service.auth import require_api_key
from router_service.config import GatewayConfig
from router_service.dispatch import Dispatcher, GenerateRequest, Generation
from router_service.errors import BadRequestError, GatewayError, NotFoundError
from router_service.http_server import (
    HttpRequest,
    HttpResponse,
    Response,
    StreamResponse,
    error_response,
    json_response,
    rehearse_request,
)
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

__all__ = ["HttpFrontEnd"]

_DONE = b"data: [DONE]\n\n"
_METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class HttpFrontEnd:
    """Request handlers of the public HTTP port; :meth:`handle` is the server's handler."""

    def __init__(self, config: GatewayConfig, dispatcher: Dispatcher, secrets: Secrets) -> None:
        self.config = config
        self.dispatcher = dispatcher
        self.secrets = secrets
        self._routes: dict[str, tuple[str, Callable[[HttpRequest], Awaitable[Response]]]] = {
            "/v1/completions": ("POST", self.completions),
            "/v1/chat/completions": ("POST", self.chat_completions),
            "/v1/models": ("GET", self.models),
            "/healthz": ("GET", self.healthz),
            "/readyz": ("GET", self.readyz),
            "/metrics": ("GET", self.metrics),
        }
        #: Completions and chat completions received (router_service.keep_warm watches it).
        self.requests_started = 0
        body = {"model": config.routed_model_name, "prompt": "keep warm", "stream": True}
        self._rehearsal_body = json.dumps(body).encode("utf-8")
        self._rehearsal_bytes = (
            b"POST /v1/completions HTTP/1.1\r\nhost: gateway\r\n"
            b"content-type: application/json\r\ncontent-length: %d\r\n\r\n%b"
            % (len(self._rehearsal_body), self._rehearsal_body)
        )

    async def handle(self, request: HttpRequest) -> Response:
        """Route ``request`` by path (404) and method (405)."""
        route = self._routes.get(request.path)
        if route is None:
            return error_response(NotFoundError(f"No route for {request.path}.", code="not_found"))
        method, handler = route
        if request.method != method:
            error = BadRequestError(
                f"Method {request.method} not allowed.", code="method_not_allowed"
            )
            error.http_status = 405
            return error_response(error)
        return await handler(request)

    def rehearse(self) -> None:
        """A canned streamed completion through this front end's steps that need no I/O: HTTP
        parsing, validation, the first event's encoding and framing (router_service.keep_warm).
        """
        parsed = parse_completion(self._rehearsal_body, self.config.limits)
        self._to_generate_request(parsed, "keep-warm", 0.0)
        encoder = ChunkEncoder(
            kind=parsed.kind, response_id="cmpl-keep-warm", created=0, model=parsed.model
        )
        rehearse_request(self._rehearsal_bytes, encoder.token(" warm", is_first=True))

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

    async def completions(self, request: HttpRequest) -> Response:
        return await self._generate(request, kind="completion")

    async def chat_completions(self, request: HttpRequest) -> Response:
        return await self._generate(request, kind="chat")

    async def _generate(self, request: HttpRequest, *, kind: str) -> Response:
        self.requests_started += 1
        request_id = request.headers.get("x-request-id") or new_request_id()
        # The access log's duration counts from the headers; the overhead clock starts with the
        # whole body in hand (received_at): a client that is slow to send it is not routing
        # overhead (NGINX with request buffering off forwards the headers first).
        access = AccessRecord(request_id, request.path, request.started_at, protocol="http")
        try:
            require_api_key(request.headers.get("authorization"), self.secrets.api_keys)
            if kind == "completion":
                parsed = parse_completion(request.body, self.config.limits)
            else:
                parsed = parse_chat(request.body, self.config.limits, self.config.chat)
            access.fields.update(model=parsed.model, stream=parsed.is_stream)
            access.fields["prompt_chars"] = len(parsed.prompt)
            if self.config.log_prompts:
                access.fields["prompt"] = parsed.prompt
            generation = await self.dispatcher.open(
                self._to_generate_request(parsed, request_id, request.received_at)
            )
        except GatewayError as error:
            access.emit(error.http_status, error=error.code or error.error_type)
            return error_response(error)
        created = int(time.time())
        prefix = "cmpl-" if kind == "completion" else "chatcmpl-"
        response_id = prefix + request_id
        if parsed.is_stream:
            headers = self._routing_headers(generation, generation.mark_first_delivery())
            return StreamResponse(
                self._events(generation, parsed, response_id, created, access),
                headers=headers,
                on_close=generation.aclose,
            )
        return await self._collect(generation, parsed, response_id, created, access)

    @staticmethod
    def _routing_headers(generation: Generation, overhead_s: float) -> list[tuple[str, str]]:
        cluster = "" if generation.cluster is None else str(generation.cluster)
        return [
            ("x-expert-router-expert", generation.expert_id),
            ("x-expert-router-cluster", cluster),
            ("x-expert-router-fallback", "true" if generation.is_fallback else "false"),
            ("x-expert-router-overhead-ms", f"{overhead_s * 1000:.3f}"),
        ]

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
        return json_response(body, headers=self._routing_headers(generation, overhead_s))

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

    async def models(self, request: HttpRequest) -> Response:
        try:
            require_api_key(request.headers.get("authorization"), self.secrets.api_keys)
        except GatewayError as error:
            return error_response(error)
        names = [self.config.routed_model_name, *self.dispatcher.state.table.experts]
        data = [
            {"id": n, "object": "model", "created": 0, "owned_by": "expert-router"} for n in names
        ]
        return json_response({"object": "list", "data": data})

    async def healthz(self, request: HttpRequest) -> Response:
        return json_response({"status": "alive"})

    async def readyz(self, request: HttpRequest) -> Response:
        state = self.dispatcher.state
        is_ready = self.dispatcher.is_ready()
        body: dict[str, object] = {
            "status": "ready" if is_ready else "not_ready",
            "generation": state.table.generation,
            "classifier_hash": state.classifier.content_hash,
        }
        problems = self.dispatcher.problems()
        if problems:
            body["problems"] = problems
        return json_response(body, 200 if is_ready else 503)

    async def metrics(self, request: HttpRequest) -> Response:
        self.dispatcher.snapshot()  # refreshes the per-upstream health gauges
        return HttpResponse(200, self.dispatcher.metrics.render(), content_type=_METRICS_TYPE)
