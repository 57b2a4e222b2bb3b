"""Admin API on its own port (loopback by default), guarded by its own bearer token.

* ``GET  /admin/experts``                 state of every expert and server, generation
* ``POST /admin/experts/{id}/drain``      no new requests to that expert (fallback takes them)
* ``POST /admin/experts/{id}/undrain``
* ``PUT  /admin/routing-table``           replace the whole table; body = routing table with a
  higher ``generation`` (409 when stale or equal, 400 when invalid)
* ``POST /admin/reload-classifier``       body ``{"router_dir": "/path"}``; k checked against
  the live table
* ``GET  /admin/generation``
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from router_service.auth import require_admin_token
from router_service.config import ConfigError, parse_routing_table
from router_service.dispatch import Dispatcher
from router_service.errors import BadRequestError, GatewayError
from router_service.settings import Secrets

__all__ = ["build_admin_app"]

LOGGER = logging.getLogger("router_service.admin")

Handler = Callable[[Request], Awaitable[Response]]


def error_response(error: GatewayError) -> JSONResponse:
    """The JSON error response for ``error``, in the public port's shape."""
    return JSONResponse(
        error.to_body(), status_code=error.http_status, headers=dict(error.headers())
    )


def build_admin_app(dispatcher: Dispatcher, secrets: Secrets) -> Starlette:
    """The admin Starlette app for ``dispatcher``."""

    def guarded(handler: Handler) -> Handler:
        async def wrapper(request: Request) -> Response:
            try:
                require_admin_token(request.headers.get("authorization"), secrets.admin_token)
                return await handler(request)
            except GatewayError as error:
                return error_response(error)
            except ConfigError as exc:
                return error_response(BadRequestError(str(exc), code="invalid_config"))

        return wrapper

    async def json_body(request: Request) -> object:
        try:
            return json.loads(await request.body())
        except json.JSONDecodeError as exc:
            raise BadRequestError(f"malformed JSON: {exc}", code="invalid_json") from exc

    async def experts(request: Request) -> Response:
        snapshot = dispatcher.snapshot()
        snapshot["drained"] = sorted(dispatcher.drained)
        return JSONResponse(snapshot)

    async def drain(request: Request) -> Response:
        expert_id = request.path_params["expert_id"]
        dispatcher.drain(expert_id)
        LOGGER.info(json.dumps({"event": "drain", "expert": expert_id}))
        return JSONResponse({"expert": expert_id, "draining": True})

    async def undrain(request: Request) -> Response:
        expert_id = request.path_params["expert_id"]
        dispatcher.undrain(expert_id)
        LOGGER.info(json.dumps({"event": "undrain", "expert": expert_id}))
        return JSONResponse({"expert": expert_id, "draining": False})

    async def routing_table(request: Request) -> Response:
        spec = parse_routing_table(await json_body(request))
        await dispatcher.replace_table(spec)
        LOGGER.info(json.dumps({"event": "routing_table", "generation": spec.generation}))
        return JSONResponse({"generation": spec.generation})

    async def reload_classifier(request: Request) -> Response:
        payload = await json_body(request)
        if not isinstance(payload, dict) or not isinstance(payload.get("router_dir"), str):
            raise BadRequestError('body must be {"router_dir": "<path>"}', param="router_dir")
        directory = Path(payload["router_dir"])
        try:
            content_hash = await dispatcher.reload_classifier(directory)
        except (ConfigError, GatewayError):
            raise
        except Exception as exc:  # the classifier loader's own errors: a bad artifact
            raise BadRequestError(f"cannot load classifier from {directory}: {exc}") from exc
        LOGGER.info(json.dumps({"event": "reload_classifier", "content_hash": content_hash}))
        return JSONResponse({"content_hash": content_hash, "router_dir": str(directory)})

    async def generation(request: Request) -> Response:
        state = dispatcher.state
        return JSONResponse(
            {
                "generation": state.table.generation,
                "classifier_hash": state.classifier.content_hash,
            }
        )

    routes = [
        Route("/admin/experts", guarded(experts), methods=["GET"]),
        Route("/admin/experts/{expert_id}/drain", guarded(drain), methods=["POST"]),
        Route("/admin/experts/{expert_id}/undrain", guarded(undrain), methods=["POST"]),
        Route("/admin/routing-table", guarded(routing_table), methods=["PUT"]),
        Route("/admin/reload-classifier", guarded(reload_classifier), methods=["POST"]),
        Route("/admin/generation", guarded(generation), methods=["GET"]),
    ]
    return Starlette(routes=routes)
