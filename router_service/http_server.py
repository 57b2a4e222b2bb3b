"""The HTTP/1.1 server of the gateway's public port: httptools' parser on an asyncio protocol.

Why not uvicorn + Starlette here: at one stream on the 2-vCPU test VM the ASGI layers cost
about 0.28 ms of the ~1.2 ms the gateway added to time to first token (bytes in to handler
0.20 → 0.08 ms, first write 0.16 → 0.10 ms; scripts/bench_gateway.py and a timestamped trace).
The public port has six fixed routes and one streaming shape, so it needs little of HTTP:

* HTTP/1.1 keep-alive (an idle connection closes after ``keep_alive_s``; a request not complete
  within ``request_timeout_s`` of its first byte gets 408 and the connection closes) and HTTP/1.0.
  Requests pipelined on one connection are answered in order: reading pauses while one is
  handled, and a pipelined request that fails meanwhile (408, 413) is answered after it.
* Request bodies by Content-Length or chunked, at most ``max_body_bytes`` (413, then the
  connection closes); ``Expect: 100-continue`` is answered.
* A response is either :class:`HttpResponse` (whole body, Content-Length) or
  :class:`StreamResponse` (an async iterator of byte chunks, each written as it arrives, chunked
  framing; writing waits while the client reads slowly).
* A client that disconnects cancels its request's task, so a stream's ``finally`` cancels the
  upstream call at once.
* Malformed HTTP gets 400 and the connection closes; a handler that raises gets 500.
* :meth:`HttpServer.shutdown`: stop accepting, close idle connections, let in-flight requests
  finish up to a deadline, then cancel them.

The admin port keeps uvicorn + Starlette: it is not on any request's path.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import cast

import httptools

from router_service.errors import (
    BadRequestError,
    GatewayError,
    PayloadTooLargeError,
    RequestTimeoutError,
)

__all__ = [
    "Handler",
    "HttpRequest",
    "HttpResponse",
    "HttpServer",
    "Response",
    "StreamResponse",
    "error_response",
    "json_response",
    "rehearse_request",
]

LOGGER = logging.getLogger("router_service.http")

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
# json.dumps with options would build a new encoder for every response.
_ENCODE_JSON = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode
# Looked up per response; HTTPStatus(status) costs more than a dict on the first-token path.
_STATUS_LINES = {s.value: f"HTTP/1.1 {s.value} {s.phrase}" for s in HTTPStatus}
_LAST_CHUNK = b"0\r\n\r\n"
_EVENT_STREAM = "text/event-stream; charset=utf-8"


@dataclass(slots=True)
class HttpRequest:
    """One complete request.

    Attributes:
        method: ``GET``, ``POST``, ...
        path: the target without its query string.
        headers: lower-case names; a repeated header keeps its last value.
        body: the whole body (de-chunked).
        started_at: ``time.perf_counter()`` when the headers were in.
        received_at: ``time.perf_counter()`` when the whole request was in.
    """

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    started_at: float
    received_at: float


@dataclass(slots=True)
class HttpResponse:
    """A response with its whole body."""

    status: int
    body: bytes
    headers: Sequence[tuple[str, str]] = ()
    content_type: str = "application/json"


@dataclass(slots=True)
class StreamResponse:
    """A 200 response whose body chunks come from ``chunks`` as they are produced.

    When the stream ends for any reason, ``chunks`` is closed (``aclose``), then ``on_close``
    runs: it runs even when ``chunks`` never started, where the generator's own ``finally``
    would not.
    """

    chunks: AsyncGenerator[bytes, None]
    headers: Sequence[tuple[str, str]] = ()
    content_type: str = _EVENT_STREAM
    on_close: Callable[[], Awaitable[None]] | None = None


Response = HttpResponse | StreamResponse
Handler = Callable[[HttpRequest], Awaitable[Response]]


def json_response(
    body: object, status: int = 200, headers: Sequence[tuple[str, str]] = ()
) -> HttpResponse:
    """``body`` as a compact JSON response."""
    data = _ENCODE_JSON(body)
    return HttpResponse(status, data.encode("utf-8"), headers)


def error_response(error: GatewayError) -> HttpResponse:
    """The OpenAI-style JSON error response for ``error`` (with Retry-After when set)."""
    return json_response(error.to_body(), error.http_status, error.headers())


def _head(
    status: int,
    content_type: str,
    headers: Sequence[tuple[str, str]],
    *,
    length: int | None,
    keep_alive: bool,
) -> bytes:
    """Status line and headers; ``length=None`` means chunked (HTTP/1.1) or close-delimited."""
    lines = [_STATUS_LINES[status], f"content-type: {content_type}"]
    if length is not None:
        lines.append(f"content-length: {length}")
    elif keep_alive:
        lines.append("transfer-encoding: chunked")
    for name, value in headers:
        if "\r" in value or "\n" in value:
            raise ValueError(f"header {name!r} has a line break in its value")
        lines.append(f"{name}: {value}")
    if not keep_alive:
        lines.append("connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


class _Discard:
    """httptools callbacks that keep nothing (:func:`rehearse_request`)."""

    def on_url(self, url: bytes) -> None:
        pass

    def on_header(self, name: bytes, value: bytes) -> None:
        pass

    def on_body(self, body: bytes) -> None:
        pass


def rehearse_request(raw: bytes, first_chunk: bytes) -> None:
    """Parse ``raw`` with a fresh parser and frame a stream's first write, keeping nothing: the
    server's part of a request, for router_service.keep_warm."""
    httptools.HttpRequestParser(_Discard()).feed_data(raw)
    _head(200, _EVENT_STREAM, (), length=None, keep_alive=True)
    _chunk(first_chunk)


@dataclass(slots=True)
class _Pending:
    request: HttpRequest
    keep_alive: bool
    is_http11: bool


class _Connection(asyncio.Protocol):
    """One client connection: parses requests and runs them one at a time, in order."""

    def __init__(self, server: HttpServer) -> None:
        self._server = server
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._queue: deque[_Pending] = deque()
        self._task: asyncio.Task[None] | None = None
        self._is_closed = False
        self._is_write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None  # keep-alive idle, or request timeout
        self._is_response_started = False
        # The request being parsed.
        self._is_in_message = False
        self._url = b""
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._body_size = 0
        self._started_at = 0.0
        self._is_rejected = False
        # A pipelined request that failed (408, 413) while an earlier response was being
        # written: answered once that response is complete, then the connection closes.
        self._deferred_error: GatewayError | None = None

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport has the asyncio.Transport methods but is not a subclass.
        self._transport = cast(asyncio.Transport, transport)
        self._server.connections.add(self)
        self._arm_idle_timer()

    def data_received(self, data: bytes) -> None:
        if self._is_rejected:
            return
        try:
            self._parser.feed_data(data)
            if self._is_in_message and self._timer is None:
                # A client that stops halfway through its request must not hold the connection
                # forever. Armed only here: a request that came whole in one read (the usual
                # case) never pays for a timer.
                self._arm_timer(self._server.request_timeout_s, self._request_timed_out)
        except httptools.HttpParserUpgrade:
            # The request is complete (on_message_complete ran); the bytes after it belong to
            # a protocol this server does not speak: answer it, then close.
            self._is_rejected = True
        except httptools.HttpParserError:
            self._reject(BadRequestError("Malformed HTTP request.", code="bad_http"))

    def connection_lost(self, exc: Exception | None) -> None:
        self._is_closed = True
        self._server.connections.discard(self)
        self._cancel_timer()
        if self._task is not None:
            self._task.cancel()  # the client left: stop its stream (and the upstream call)
        self._wake_writer()

    def pause_writing(self) -> None:
        self._is_write_paused = True

    def resume_writing(self) -> None:
        self._is_write_paused = False
        self._wake_writer()

    # -- httptools callbacks ----------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._cancel_timer()  # the keep-alive idle timer
        self._is_in_message = True
        self._url = b""
        self._headers = {}
        self._body = []
        self._body_size = 0

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self._started_at = time.perf_counter()
        declared = self._headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self._server.max_body_bytes:
            self._reject_too_large()
            return
        if self._headers.get("expect", "").lower() == "100-continue" and self._can_write():
            assert self._transport is not None
            self._transport.write(_CONTINUE)

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > self._server.max_body_bytes:
            self._reject_too_large()
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._is_in_message = False
        self._cancel_timer()
        if self._is_rejected:
            return
        path = self._url.split(b"?", 1)[0].decode("latin-1")
        request = HttpRequest(
            method=self._parser.get_method().decode("latin-1"),
            path=path,
            headers=self._headers,
            body=b"".join(self._body),
            started_at=self._started_at,
            received_at=time.perf_counter(),
        )
        pending = _Pending(
            request,
            keep_alive=self._parser.should_keep_alive(),
            is_http11=self._parser.get_http_version() == "1.1",
        )
        self._queue.append(pending)
        if self._task is None:
            self._run_next()
        elif self._transport is not None:
            self._transport.pause_reading()  # pipelined: one request at a time

    # -- running requests -------------------------------------------------------------------

    def _run_next(self) -> None:
        pending = self._queue.popleft()
        self._task = asyncio.get_running_loop().create_task(self._serve(pending))

    async def _serve(self, pending: _Pending) -> None:
        keep_alive = pending.keep_alive
        try:
            response = await self._server.handler(pending.request)
            # After an upgrade request: answer, then close. A pipelined request rejected
            # meanwhile gets its error after this response, which keeps its framing.
            keep_alive = (
                keep_alive
                and not self._server.is_shutting_down
                and (not self._is_rejected or self._deferred_error is not None)
            )
            if isinstance(response, HttpResponse):
                self._write_response(response, keep_alive=keep_alive)
            else:
                # Chunked framing is HTTP/1.1; an HTTP/1.0 stream ends when the connection closes.
                keep_alive = keep_alive and pending.is_http11
                await self._write_stream(response, keep_alive=keep_alive)
        except asyncio.CancelledError:
            if not self._is_closed:
                raise  # shutdown cancelled it: not ours to swallow
            return
        except Exception:
            LOGGER.exception("request %s %s failed", pending.request.method, pending.request.path)
            if not self._is_response_started:
                error = GatewayError("Internal gateway error; see the gateway log.")
                self._write_response(error_response(error), keep_alive=False)
            keep_alive = False
        finally:
            self._task = None
            self._is_response_started = False
        self._after_response(keep_alive)

    def _after_response(self, keep_alive: bool) -> None:
        if self._is_closed or self._transport is None:
            return
        if self._deferred_error is not None:  # then close: _is_rejected is set
            self._write_response(error_response(self._deferred_error), keep_alive=False)
            self._deferred_error = None
        if not keep_alive or self._server.is_shutting_down or self._is_rejected:
            self._transport.close()
        elif self._queue:
            self._run_next()
        else:
            self._transport.resume_reading()
            self._arm_idle_timer()

    def _write_response(self, response: HttpResponse, *, keep_alive: bool) -> None:
        if not self._can_write():
            return
        assert self._transport is not None
        head = _head(
            response.status,
            response.content_type,
            response.headers,
            length=len(response.body),
            keep_alive=keep_alive,
        )
        self._transport.write(head + response.body)

    async def _write_stream(self, response: StreamResponse, *, keep_alive: bool) -> None:
        transport = self._transport
        assert transport is not None
        # Without keep-alive (HTTP/1.0 or shutdown) the body ends when the connection closes.
        frame = _chunk if keep_alive else bytes
        try:
            head = _head(
                200, response.content_type, response.headers, length=None, keep_alive=keep_alive
            )
            async for data in response.chunks:
                if not data:
                    continue
                if head:
                    # The first chunk goes out with the headers: one write, one packet.
                    transport.write(head + frame(data))
                    head = b""
                    self._is_response_started = True
                else:
                    transport.write(frame(data))
                if self._is_write_paused:
                    await self._drain()
            if keep_alive:
                transport.write(head + _LAST_CHUNK)
            elif head:
                transport.write(head)
        finally:
            await response.chunks.aclose()  # cancelled while waiting to write: end it now
            if response.on_close is not None:
                await response.on_close()

    async def _drain(self) -> None:
        """Wait until the transport's buffer drained below its low-water mark."""
        while self._is_write_paused and not self._is_closed:
            self._drain_waiter = asyncio.get_running_loop().create_future()
            await self._drain_waiter
        if self._is_closed:
            raise ConnectionResetError("client disconnected")

    def _wake_writer(self) -> None:
        waiter, self._drain_waiter = self._drain_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- closing ----------------------------------------------------------------------------

    def _can_write(self) -> bool:
        transport = self._transport
        return not self._is_closed and transport is not None and not transport.is_closing()

    def _reject(self, error: GatewayError) -> None:
        """Answer ``error`` and close; the request's remaining bytes are ignored."""
        self._is_rejected = True
        if self._task is not None:
            self._deferred_error = error  # a response is being written: answer after it
            return
        self._write_response(error_response(error), keep_alive=False)
        if self._transport is not None:
            self._transport.close()

    def _reject_too_large(self) -> None:
        limit = self._server.max_body_bytes
        self._reject(PayloadTooLargeError(f"Request body is larger than {limit} bytes."))

    def _arm_idle_timer(self) -> None:
        self._arm_timer(self._server.keep_alive_s, self.close_if_idle)

    def _arm_timer(self, delay_s: float, callback: Callable[[], None]) -> None:
        self._cancel_timer()
        self._timer = asyncio.get_running_loop().call_later(delay_s, callback)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _request_timed_out(self) -> None:
        limit = self._server.request_timeout_s
        self._reject(RequestTimeoutError(f"Request not complete within {limit} s."))

    def close_if_idle(self) -> None:
        """Close the connection unless a request is being handled or waiting."""
        if self._task is None and not self._queue and self._transport is not None:
            self._transport.close()

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The task of the request being handled, if any."""
        return self._task

    def abort(self) -> None:
        """Close at once (end of the shutdown deadline)."""
        if self._transport is not None:
            self._transport.abort()


@dataclass
class HttpServer:
    """Serve ``handler`` on one address; see the module docstring for what it does.

    Attributes:
        handler: turns a request into a response.
        max_body_bytes: larger request bodies get 413.
        keep_alive_s: an idle connection closes after this long.
        request_timeout_s: a request must be complete this long after its first byte (408).
        port: the bound port once started (useful when started on port 0).
    """

    handler: Handler
    max_body_bytes: int
    # Longer than the upstream keepalive_timeout of the rendered nginx.conf (60 s): NGINX then
    # closes an idle connection first, and never sends a POST on one the gateway is closing
    # (it would not retry a non-idempotent request; the client would get a 502).
    keep_alive_s: float = 75.0
    request_timeout_s: float = 60.0
    is_shutting_down: bool = False
    connections: set[_Connection] = field(default_factory=set)
    port: int = 0
    _server: asyncio.Server | None = None

    async def start(self, sock: socket.socket) -> None:
        """Accept connections on ``sock``, a bound and listening socket (owned from now on)."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), sock=sock)
        self.port = sock.getsockname()[1]

    async def shutdown(self, deadline_s: float | None) -> None:
        """Stop accepting, close idle connections, wait for in-flight requests, then cancel."""
        self.is_shutting_down = True
        if self._server is not None:
            self._server.close()
        for connection in list(self.connections):
            connection.close_if_idle()
        tasks = [c.task for c in self.connections if c.task is not None]
        if tasks:
            _done, late = await asyncio.wait(tasks, timeout=deadline_s)
            for task in late:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*late, return_exceptions=True)
        for connection in list(self.connections):
            connection.abort()
