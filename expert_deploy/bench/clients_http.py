"""OpenAI-compatible streaming (SSE) over HTTP/1.1: one keep-alive connection per user.

A small ``asyncio.Protocol`` instead of an HTTP library, for the timestamps: the arrival time
is read with ``time.perf_counter_ns()`` as the first thing in ``data_received``, before any
parsing, and no task switch sits between the socket and the clock. Every user owns its own
connection, so there is no pool and no pool cap (httpx's default of 100 connections capped
peers' concurrency). Events that arrive in one read share its timestamp: they did arrive
together.

Counting: a response (SSE event) with non-empty ``text`` / ``delta.content`` is one
token-carrying response with ``n = 1`` (the gateway relays one Triton response per event);
events without text (role-only, finish, usage) are counted as empty and never timed. The
``usage.completion_tokens`` of the last event, when the server sends it, is the request's ``N``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import time
from dataclasses import dataclass
from typing import Literal, cast
from urllib.parse import urlsplit

from expert_deploy.bench.errors import BenchError
from expert_deploy.bench.records import RequestRecord

Endpoint = Literal["completions", "chat"]


@dataclass(frozen=True)
class HttpTarget:
    """Where and how to send: base URL parts, the OpenAI route and the model name."""

    host: str
    port: int
    base_path: str
    is_tls: bool
    model: str
    endpoint: Endpoint = "completions"
    api_key: str | None = None

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        model: str,
        endpoint: Endpoint = "completions",
        api_key: str | None = None,
    ) -> HttpTarget:
        """``http://host:port[/prefix]`` (``/v1/...`` is appended).

        Raises:
            BenchError: not an http(s) URL with a host.
        """
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise BenchError(f"--url {url!r}: expected http://HOST:PORT (or https://)")
        is_tls = parts.scheme == "https"
        port = parts.port or (443 if is_tls else 80)
        return cls(parts.hostname, port, parts.path.rstrip("/"), is_tls, model, endpoint, api_key)

    @property
    def path(self) -> str:
        route = "/v1/completions" if self.endpoint == "completions" else "/v1/chat/completions"
        return self.base_path + route

    def request_bytes(self, prompt: str, max_tokens: int | None) -> bytes:
        """The whole HTTP request, built before the send time is taken."""
        body: dict[str, object] = {"model": self.model, "stream": True}
        body["stream_options"] = {"include_usage": True}
        if self.endpoint == "completions":
            body["prompt"] = prompt
        else:
            body["messages"] = [{"role": "user", "content": prompt}]
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        payload = json.dumps(body, separators=(",", ":")).encode()
        lines = [
            f"POST {self.path} HTTP/1.1",
            f"Host: {self.host}:{self.port}",
            "Content-Type: application/json",
            "Accept: text/event-stream",
            f"Content-Length: {len(payload)}",
        ]
        if self.api_key:
            lines.append(f"Authorization: Bearer {self.api_key}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


class _Response:
    """Incremental HTTP/1.1 response parser feeding SSE events into one record."""

    def __init__(self, record: RequestRecord, endpoint: Endpoint) -> None:
        self.record = record
        self.endpoint = endpoint
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.buffer = bytearray()
        self.status = 0
        self.is_chunked = False
        self.remaining: int | None = None  # Content-Length body bytes left
        self.chunk_left = -1  # -1: expecting a chunk-size line
        self.sse = bytearray()
        self.error_body = bytearray()
        self.keep_alive = True
        self.saw_done = False

    # Framing.

    def feed(self, data: bytes, now: int) -> None:
        self.buffer += data
        if self.status == 0 and not self._headers():
            return
        if self.is_chunked:
            self._chunks(now)
        else:
            body = bytes(self.buffer)
            self.buffer.clear()
            if self.remaining is not None:
                body = body[: self.remaining]
                self.remaining -= len(body)
            self._body(body, now)
            if self.remaining == 0:
                self._finish(now)

    def _headers(self) -> bool:
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return False
        head = self.buffer[:end].decode("latin-1").split("\r\n")
        del self.buffer[: end + 4]
        try:
            self.status = int(head[0].split(" ", 2)[1])
        except (IndexError, ValueError):
            self.status = -1
        headers = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        self.is_chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        if "content-length" in headers:
            self.remaining = int(headers["content-length"])
        self.keep_alive = headers.get("connection", "").lower() != "close"
        record = self.record
        record.expert = headers.get("x-expert-router-expert") or None
        cluster = headers.get("x-expert-router-cluster", "")
        record.routed_cluster = int(cluster) if cluster.isdigit() else None
        overhead = headers.get("x-expert-router-overhead-ms")
        if overhead:
            with contextlib.suppress(ValueError):
                record.gateway_overhead_ms = float(overhead)
        return True

    def _chunks(self, now: int) -> None:
        buffer = self.buffer
        while True:
            if self.chunk_left < 0:
                line_end = buffer.find(b"\r\n")
                if line_end < 0:
                    return
                size = int(bytes(buffer[:line_end]).split(b";", 1)[0] or b"0", 16)
                del buffer[: line_end + 2]
                if size == 0:
                    self._finish(now)
                    return
                self.chunk_left = size
            if len(buffer) < self.chunk_left + 2:
                return
            piece = bytes(buffer[: self.chunk_left])
            del buffer[: self.chunk_left + 2]
            self.chunk_left = -1
            self._body(piece, now)

    def _body(self, piece: bytes, now: int) -> None:
        if self.status != 200:
            self.error_body += piece
            return
        self.sse += piece
        while True:
            end = self.sse.find(b"\n\n")
            if end < 0:
                return
            event = bytes(self.sse[:end])
            del self.sse[: end + 2]
            for line in event.split(b"\n"):
                if line.startswith(b"data:"):
                    self._event(line[5:].strip(), now)

    # Content.

    def _event(self, data: bytes, now: int) -> None:
        record = self.record
        if data == b"[DONE]":
            self.saw_done = True
            return
        try:
            message = json.loads(data)
        except ValueError:
            record.fail("bad_event", f"not JSON: {data[:100]!r}")
            return
        if "error" in message:
            error = message["error"]
            kind = error.get("code") or error.get("type") if isinstance(error, dict) else None
            record.fail(f"stream_{kind or 'error'}", json.dumps(error)[:300])
            return
        usage = message.get("usage")
        if isinstance(usage, dict) and isinstance(usage.get("completion_tokens"), int):
            record.server_tokens = usage["completion_tokens"]
        text = None
        for choice in message.get("choices") or ():
            if self.endpoint == "completions":
                text = choice.get("text")
            else:
                text = (choice.get("delta") or {}).get("content")
        if text:
            record.r_ns.append(now)
            record.n.append(1)
        else:
            record.empty_responses += 1

    def _finish(self, now: int) -> None:
        record = self.record
        record.end_ns = now
        if self.status != 200:
            text = self.error_body.decode("utf-8", "replace")
            record.fail(f"http_{self.status}", text)
        elif record.status != "error":
            if self.saw_done:
                record.status = "ok"
            else:
                record.fail("truncated", "the stream ended without [DONE]")
        if not self.done.done():
            self.done.set_result(None)

    def lost(self, now: int, reason: str) -> None:
        """The connection closed: fine after a Content-Length-less body, else an error."""
        if self.done.done():
            return
        if self.status == 200 and not self.is_chunked and self.remaining is None:
            self._finish(now)
            return
        self.record.end_ns = now
        self.record.fail("connection_lost", reason)
        self.done.set_result(None)


class SseConnection(asyncio.Protocol):
    """One keep-alive connection; one request at a time (the closed-loop user's)."""

    def __init__(self, target: HttpTarget) -> None:
        self.target = target
        self.transport: asyncio.Transport | None = None
        self.response: _Response | None = None
        self.is_closed = True

    @classmethod
    async def open(cls, target: HttpTarget) -> SseConnection:
        loop = asyncio.get_running_loop()
        context = ssl.create_default_context() if target.is_tls else None
        _, protocol = await loop.create_connection(
            lambda: cls(target), target.host, target.port, ssl=context
        )
        return protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport; they behave like one.
        self.transport = cast(asyncio.Transport, transport)
        self.is_closed = False

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter_ns()  # first: the arrival time of these bytes
        if self.response is not None:
            self.response.feed(data, now)

    def connection_lost(self, exc: Exception | None) -> None:
        self.is_closed = True
        if self.response is not None:
            self.response.lost(time.perf_counter_ns(), str(exc) if exc else "closed by server")

    async def send(self, record: RequestRecord, request: bytes) -> None:
        """Send ``request`` and wait until its stream ends; fills ``record``."""
        assert self.transport is not None
        response = _Response(record, self.target.endpoint)
        self.response = response
        record.s_ns = time.perf_counter_ns()
        self.transport.write(request)
        try:
            await response.done
        finally:
            self.response = None
        if not response.keep_alive:
            self.close()

    def close(self) -> None:
        if self.transport is not None and not self.is_closed:
            self.transport.close()
        self.is_closed = True


async def stream_http(
    pool: list[SseConnection], target: HttpTarget, record: RequestRecord, request: bytes
) -> None:
    """Run one request on an idle connection from ``pool`` (or a new one); never raises.

    Connection failures are recorded as errors; a connection that ended its response cleanly
    goes back to ``pool`` for the same user's next request.
    """
    connection = None
    while pool and connection is None:
        candidate = pool.pop()
        if not candidate.is_closed:
            connection = candidate
    if connection is None:
        try:
            connection = await SseConnection.open(target)
        except OSError as error:
            record.end_ns = time.perf_counter_ns()
            record.fail("connect", f"{target.host}:{target.port}: {error}")
            return
    try:
        await connection.send(record, request)
    except asyncio.CancelledError:
        connection.close()
        raise
    if record.status == "ok" and not connection.is_closed:
        pool.append(connection)
    else:
        connection.close()
