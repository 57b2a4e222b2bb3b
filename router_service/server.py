"""Run one gateway replica: public HTTP port (our HttpServer), admin port (uvicorn) and (optional)
gRPC port, in one loop.

Start-up: read secrets once, load the classifier, open upstream channels (first probes), freeze
what is loaded out of the cyclic GC's reach, then serve. SIGTERM/SIGINT: ``/readyz`` turns 503,
both servers stop accepting, in-flight streams get up to ``timeouts.drain_deadline_s`` to
finish, then channels close.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import ipaddress
import json
import logging
import os
import signal
import socket
from collections.abc import Generator, Mapping

import uvicorn

from router_service.admin_app import build_admin_app
from router_service.classifier import Classifier
from router_service.config import ConfigError, GatewayConfig
from router_service.dispatch import Dispatcher
from router_service.grpc_frontend import GrpcFrontEnd, start_grpc_server
from router_service.http_app import HttpFrontEnd
from router_service.http_server import HttpServer
from router_service.keep_warm import Part, keep_warm
from router_service.metrics import GatewayMetrics
from router_service.settings import load_secrets

__all__ = ["serve"]

LOGGER = logging.getLogger("router_service")


class _Server(uvicorn.Server):
    """uvicorn server whose signals are handled by :func:`serve` (two servers share a loop)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _uvicorn_config(app: object, host: str, port: int, config: GatewayConfig) -> uvicorn.Config:
    return uvicorn.Config(
        app,  # type: ignore[arg-type]
        host=host,
        port=port,
        lifespan="off",
        access_log=False,
        log_config=None,
        log_level=config.log_level,
        http="auto",
        timeout_graceful_shutdown=int(config.timeouts.drain_deadline_s) or None,
        timeout_keep_alive=30,
        backlog=4096,
    )


def _listen(host: str, port: int, field: str) -> socket.socket:
    """A listening socket on ``host:port``; bound here so a taken port is a one-line error."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=4096)
    except OSError as exc:
        raise ConfigError(
            f"cannot listen on {host}:{port} ({exc.strerror or exc}); set {field} to a free port"
        ) from exc


def _log(event: str, **fields: object) -> None:
    LOGGER.info(json.dumps({"event": event, **fields}, separators=(",", ":"), default=str))


async def serve(config: GatewayConfig, environ: Mapping[str, str]) -> None:
    """Serve until SIGTERM/SIGINT, then shut down gracefully.

    Raises:
        ConfigError: bad auth setup or a routing table that does not fit the classifier.
        ClassifierError: the classifier artifact cannot be loaded.
    """
    secrets = load_secrets(config.auth, environ)
    if secrets.admin_token is None and not _is_loopback(config.admin_host):
        raise ConfigError(
            f"admin_host {config.admin_host} is not loopback: set {config.auth.admin_token_env}"
        )
    if secrets.is_api_open:
        _log("auth", api="open", detail="no API keys configured; every client is accepted")
    else:
        _log("auth", api="keys", key_count=len(secrets.api_keys))
    if secrets.admin_token is None:
        _log("auth", admin="open", detail="no admin token configured; admin API is loopback-only")

    load_classifier = functools.partial(Classifier.load, mmap=config.classifier.mmap)
    classifier = load_classifier(config.router_dir)
    metrics = GatewayMetrics()
    # The public port opens last: once /readyz answers there, the admin and gRPC ports accept
    # connections too (the kernel queues admin ones until uvicorn starts accepting).
    admin_socket = _listen(config.admin_host, config.admin_port, "admin_port")
    dispatcher = Dispatcher(config, classifier, metrics=metrics, load_classifier=load_classifier)
    front = HttpFrontEnd(config, dispatcher, secrets)
    public = HttpServer(front.handle, max_body_bytes=config.limits.max_body_bytes)
    rehearsals = [
        Part(front.rehearse, lambda: front.requests_started),
        Part(dispatcher.rehearse, lambda: dispatcher.requests_started),
    ]
    grpc_server = None
    grpc_address = None
    try:
        await dispatcher.start()
        if config.grpc_port is not None:
            grpc_front = GrpcFrontEnd(config, dispatcher, secrets)
            rehearsals.append(Part(grpc_front.rehearse, lambda: grpc_front.requests_started))
            grpc_server, bound = await start_grpc_server(config, grpc_front)
            grpc_address = f"{config.host}:{bound}"
        await public.start(_listen(config.host, config.http_port, "http_port"))
    except BaseException:
        admin_socket.close()
        if grpc_server is not None:
            await grpc_server.stop(0)
        await dispatcher.close()
        raise
    admin = _Server(
        _uvicorn_config(
            build_admin_app(dispatcher, secrets), config.admin_host, config.admin_port, config
        )
    )
    stopping = asyncio.Event()

    async def serve_public() -> None:
        await stopping.wait()
        await public.shutdown(config.timeouts.drain_deadline_s or None)

    async def serve_grpc() -> None:
        if grpc_server is None:
            return
        await stopping.wait()
        await grpc_server.stop(config.timeouts.drain_deadline_s or None)

    def request_stop() -> None:
        _log("shutdown", detail="signal received; draining in-flight requests")
        dispatcher.begin_shutdown()
        admin.should_exit = True
        stopping.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, request_stop)
    _log(
        "started",
        http=f"{config.host}:{config.http_port}",
        admin=f"{config.admin_host}:{config.admin_port}",
        grpc=grpc_address,
        generation=dispatcher.state.table.generation,
        classifier_hash=classifier.content_hash,
        k=classifier.k,
        ready=dispatcher.is_ready(),
        cpus=",".join(map(str, sorted(os.sched_getaffinity(0)))),
    )
    # What is loaded by now (classifier, apps, modules) lives as long as the process: take it out
    # of the cyclic GC's scans, so a full collection under load walks request objects only. At
    # 1,000 streams (scripts/bench_gateway.py) a gen-2 pause went from 19 ms to 3.7 ms.
    gc.collect()
    gc.freeze()
    warming = None
    if config.keep_warm.interval_ms > 0:
        warming = loop.create_task(keep_warm(rehearsals, config.keep_warm))
    try:
        await asyncio.gather(serve_public(), admin.serve([admin_socket]), serve_grpc())
    finally:
        if warming is not None:
            warming.cancel()
        if grpc_server is not None:
            await grpc_server.stop(0)
        await dispatcher.close()
        _log("stopped")
