"""The public port's HTTP/1.1 server over real loopback sockets, with small handlers.

What the gateway's integration tests do not reach on their own: keep-alive, pipelining,
chunked and 100-continue request bodies, HTTP/1.0 streams, malformed input, flow control
against a client that stops reading, disconnects, handler crashes, idle timeout and shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

import pytest

from router_service.errors import NotFoundError, OverloadedError
from router_service.http_server import (
    HttpRequest,
    HttpResponse,
    HttpServer,
    StreamResponse,
    error_response,
)

Reader = asyncio.StreamReader
Writer = asyncio.StreamWriter


async def _echo(request: HttpRequest) -> HttpResponse:
    body = {"method": request.method, "path": request.path, "body": request.body.decode()}
    return HttpResponse(200, json.dumps(body).encode(), [("x-test", "yes")])


def _serve(
    handler: Callable[[HttpRequest], Awaitable[HttpResponse | StreamResponse]],
    scenario: Callable[[HttpServer], Awaitable[Any]],
    loop: str = "asyncio",
    **options: Any,
) -> Any:
    async def run() -> Any:
        server = HttpServer(handler, max_body_bytes=options.pop("max_body_bytes", 1024), **options)
        await server.start(socket.create_server(("127.0.0.1", 0)))
        try:
            return await asyncio.wait_for(scenario(server), 20)
        finally:
            await server.shutdown(1.0)
            for writer in _WRITERS:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
            _WRITERS.clear()

    if loop == "uvloop":  # the runtime starts gateways with --loop uvloop when installed
        uvloop = pytest.importorskip("uvloop")
        return uvloop.run(run())
    return asyncio.run(run())


_WRITERS: list[Writer] = []


async def _connect(server: HttpServer) -> tuple[Reader, Writer]:
    """A client connection, closed by :func:`_serve` after the scenario."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    _WRITERS.append(writer)
    return reader, writer


async def _read_response(reader: Reader) -> tuple[int, dict[str, str], bytes]:
    """One response: status, headers, body (Content-Length, chunked, or until close)."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    status_line, *lines = head.strip().split("\r\n")
    status = int(status_line.split()[1])
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
    if "content-length" in headers:
        return status, headers, await reader.readexactly(int(headers["content-length"]))
    if headers.get("transfer-encoding") == "chunked":
        body = b""
        while True:
            size = int((await reader.readline()).strip(), 16)
            data = await reader.readexactly(size + 2)
            if size == 0:
                return status, headers, body
            body += data[:-2]
    return status, headers, await reader.read()


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_keep_alive_serves_two_requests_on_one_connection(loop: str) -> None:
    async def scenario(server: HttpServer) -> list[tuple[int, dict[str, str], bytes]]:
        reader, writer = await _connect(server)
        answers = []
        for body in (b"one", b"two!"):
            head = f"POST /a?q=1 HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
            writer.write(head.encode() + body)
            answers.append(await _read_response(reader))
        writer.close()
        return answers

    answers = _serve(_echo, scenario, loop)
    assert [json.loads(body) for _, _, body in answers] == [
        {"method": "POST", "path": "/a", "body": "one"},
        {"method": "POST", "path": "/a", "body": "two!"},
    ]
    assert all(status == 200 and h["x-test"] == "yes" for status, h, _ in answers)
    assert "connection" not in answers[0][1]


def test_pipelined_requests_are_answered_in_order() -> None:
    order: list[str] = []

    async def slow_first(request: HttpRequest) -> HttpResponse:
        if request.path == "/first":
            await asyncio.sleep(0.2)
        order.append(request.path)
        return HttpResponse(200, request.path.encode())

    async def scenario(server: HttpServer) -> list[bytes]:
        reader, writer = await _connect(server)
        writer.write(
            b"GET /first HTTP/1.1\r\nHost: x\r\n\r\nGET /second HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        bodies = [(await _read_response(reader))[2] for _ in range(2)]
        writer.close()
        return bodies

    assert _serve(slow_first, scenario) == [b"/first", b"/second"]
    assert order == ["/first", "/second"]


def test_chunked_request_body_is_joined() -> None:
    async def scenario(server: HttpServer) -> bytes:
        reader, writer = await _connect(server)
        writer.write(
            b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n"
        )
        return (await _read_response(reader))[2]

    assert json.loads(_serve(_echo, scenario))["body"] == "abcdefg"


def test_expect_100_continue_is_answered_before_the_body() -> None:
    async def scenario(server: HttpServer) -> tuple[bytes, bytes]:
        reader, writer = await _connect(server)
        writer.write(
            b"POST /e HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n"
        )
        interim = await reader.readuntil(b"\r\n\r\n")
        writer.write(b"hi")
        return interim, (await _read_response(reader))[2]

    interim, body = _serve(_echo, scenario)
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert json.loads(body)["body"] == "hi"


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n",
        b"POST /big HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"400\r\n" + b"a" * 1024 + b"\r\n" + b"400\r\n" + b"a" * 1024 + b"\r\n",
    ],
    ids=["declared", "chunked"],
)  # fmt: skip
def test_body_over_the_limit_gets_413_and_the_connection_closes(request_bytes: bytes) -> None:
    async def scenario(server: HttpServer) -> tuple[int, dict[str, str], bytes, bytes]:
        reader, writer = await _connect(server)
        writer.write(request_bytes)
        status, headers, body = await _read_response(reader)
        return status, headers, body, await reader.read()

    status, headers, body, rest = _serve(_echo, scenario)
    assert status == 413 and headers["connection"] == "close"
    assert json.loads(body)["error"]["message"] == "Request body is larger than 1024 bytes."
    assert rest == b""  # closed


def test_malformed_request_gets_400_and_close() -> None:
    async def scenario(server: HttpServer) -> tuple[int, bytes, bytes]:
        reader, writer = await _connect(server)
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        status, _, body = await _read_response(reader)
        return status, body, await reader.read()

    status, body, rest = _serve(_echo, scenario)
    assert status == 400 and json.loads(body)["error"]["code"] == "bad_http"
    assert rest == b""


def test_upgrade_request_is_answered_as_plain_http_then_closed() -> None:
    async def scenario(server: HttpServer) -> tuple[int, dict[str, str], bytes]:
        reader, writer = await _connect(server)
        writer.write(b"GET /u HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n")
        status, headers, body = await _read_response(reader)
        assert await reader.read() == b""
        return status, headers, body

    status, headers, body = _serve(_echo, scenario)
    assert status == 200 and json.loads(body)["path"] == "/u"
    assert headers["connection"] == "close"


async def _tokens(count: int, closed: list[str]) -> AsyncGenerator[bytes, None]:
    try:
        for i in range(count):
            await asyncio.sleep(0.01)
            yield f"data: {i}\n\n".encode()
    finally:
        closed.append("generator")


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_stream_is_chunked_on_http11_and_close_delimited_on_http10(loop: str) -> None:
    closed: list[str] = []

    async def stream(request: HttpRequest) -> StreamResponse:
        async def on_close() -> None:
            closed.append("on_close")

        return StreamResponse(_tokens(3, closed), [("x-expert", "e1")], on_close=on_close)

    async def scenario(server: HttpServer) -> list[tuple[int, dict[str, str], bytes]]:
        answers = []
        for version in ("1.1", "1.0"):
            reader, writer = await _connect(server)
            writer.write(f"GET /s HTTP/{version}\r\nHost: x\r\n\r\n".encode())
            answers.append(await _read_response(reader))
            writer.close()
        return answers

    (s11, h11, b11), (s10, h10, b10) = _serve(stream, scenario, loop)
    assert s11 == s10 == 200
    assert b11 == b10 == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"
    assert h11["transfer-encoding"] == "chunked" and "connection" not in h11
    assert "transfer-encoding" not in h10 and h10["connection"] == "close"
    assert h11["x-expert"] == "e1" and h11["content-type"].startswith("text/event-stream")
    assert closed == ["generator", "on_close"] * 2


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_client_disconnect_cancels_the_stream_and_runs_on_close(loop: str) -> None:
    closed: list[str] = []
    produced: list[int] = []

    async def endless(request: HttpRequest) -> StreamResponse:
        async def chunks() -> AsyncGenerator[bytes, None]:
            try:
                while True:
                    produced.append(1)
                    yield b"data: x\n\n"
                    await asyncio.sleep(0.02)
            finally:
                closed.append("generator")

        async def on_close() -> None:
            closed.append("on_close")

        return StreamResponse(chunks(), on_close=on_close)

    async def scenario(server: HttpServer) -> list[str]:
        reader, writer = await _connect(server)
        writer.write(b"GET /s HTTP/1.1\r\nHost: x\r\n\r\n")
        await reader.readuntil(b"data: x")
        writer.close()
        for _ in range(100):
            if closed:
                break
            await asyncio.sleep(0.02)
        count = len(produced)
        await asyncio.sleep(0.2)
        assert len(produced) == count  # nothing produced after the cancel
        return list(closed)

    assert _serve(endless, scenario, loop) == ["generator", "on_close"]


def test_a_client_that_stops_reading_pauses_the_stream() -> None:
    produced: list[int] = []
    closed: list[str] = []
    chunk = b"x" * (1 << 20)

    async def flood(request: HttpRequest) -> StreamResponse:
        async def chunks() -> AsyncGenerator[bytes, None]:
            try:
                for _ in range(1000):
                    produced.append(1)
                    yield chunk
            finally:
                closed.append("generator")

        return StreamResponse(chunks())

    async def scenario(server: HttpServer) -> int:
        _reader, writer = await _connect(server)
        writer.write(b"GET /s HTTP/1.1\r\nHost: x\r\n\r\n")
        await asyncio.sleep(0.5)  # the client reads nothing meanwhile
        count = len(produced)
        writer.close()
        for _ in range(100):  # the paused stream ends when the client goes
            if closed:
                break
            await asyncio.sleep(0.02)
        return count

    # Without flow control all 1,000 MiB would be produced into the transport's buffer.
    assert _serve(flood, scenario) < 100
    assert closed == ["generator"]


def test_a_handler_that_raises_gets_500_and_the_connection_closes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken(request: HttpRequest) -> HttpResponse:
        raise RuntimeError("boom")

    async def scenario(server: HttpServer) -> tuple[int, dict[str, str], bytes]:
        reader, writer = await _connect(server)
        writer.write(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = await _read_response(reader)
        assert await reader.read() == b""
        return answer

    status, headers, body = _serve(broken, scenario)
    assert status == 500 and headers["connection"] == "close"
    assert json.loads(body)["error"]["message"].startswith("Internal gateway error")
    assert "request GET /x failed" in caplog.text and "boom" in caplog.text


def test_idle_connection_closes_after_keep_alive_timeout() -> None:
    async def scenario(server: HttpServer) -> bytes:
        reader, writer = await _connect(server)
        writer.write(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
        await _read_response(reader)
        return await asyncio.wait_for(reader.read(), 5)  # b"" once the server closes

    assert _serve(_echo, scenario, keep_alive_s=0.2) == b""


def test_a_request_stalled_halfway_gets_408_and_the_connection_closes() -> None:
    async def scenario(server: HttpServer) -> tuple[int, dict[str, str], bytes, bytes]:
        reader, writer = await _connect(server)
        writer.write(b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Le")  # ... and nothing more
        status, headers, body = await asyncio.wait_for(_read_response(reader), 5)
        return status, headers, body, await reader.read()

    status, headers, body, rest = _serve(_echo, scenario, request_timeout_s=0.2)
    assert status == 408 and headers["connection"] == "close"
    assert json.loads(body)["error"]["message"] == "Request not complete within 0.2 s."
    assert rest == b""


def test_a_pipelined_request_stalled_during_a_stream_gets_408_after_it() -> None:
    closed: list[str] = []

    async def stream(request: HttpRequest) -> StreamResponse:
        return StreamResponse(_tokens(30, closed))  # ~0.3 s: longer than the request timeout

    async def scenario(server: HttpServer) -> list[Any]:
        reader, writer = await _connect(server)
        writer.write(b"GET /s HTTP/1.1\r\nHost: x\r\n\r\nPOST /a HTTP/1.1\r\nContent-Le")
        first = await asyncio.wait_for(_read_response(reader), 5)
        second = await asyncio.wait_for(_read_response(reader), 5)
        return [first, second, await reader.read()]

    (s1, h1, b1), (s2, h2, b2), rest = _serve(stream, scenario, request_timeout_s=0.1)
    assert s1 == 200 and "connection" not in h1  # the stream ran to its end, kept alive
    assert b1.count(b"data: ") == 30
    assert s2 == 408 and h2["connection"] == "close"
    assert json.loads(b2)["error"]["message"] == "Request not complete within 0.1 s."
    assert rest == b""


def test_an_oversized_pipelined_request_gets_413_after_the_answer_before_it() -> None:
    async def slow(request: HttpRequest) -> HttpResponse:
        await asyncio.sleep(0.2)  # the next request's headers arrive meanwhile
        return HttpResponse(200, b"first")

    async def scenario(server: HttpServer) -> list[Any]:
        reader, writer = await _connect(server)
        writer.write(
            b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
            b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n"
        )
        first = await asyncio.wait_for(_read_response(reader), 5)
        second = await asyncio.wait_for(_read_response(reader), 5)
        return [first, second, await reader.read()]

    (s1, h1, b1), (s2, h2, _b2), rest = _serve(slow, scenario)
    assert (s1, b1) == (200, b"first") and "connection" not in h1
    assert s2 == 413 and h2["connection"] == "close"
    assert rest == b""


def test_shutdown_closes_idle_connections_and_lets_a_stream_finish() -> None:
    closed: list[str] = []

    async def stream(request: HttpRequest) -> HttpResponse | StreamResponse:
        if request.path == "/s":
            return StreamResponse(_tokens(20, closed))
        return await _echo(request)

    async def scenario(server: HttpServer) -> tuple[bytes, bytes, bool]:
        idle_reader, idle_writer = await _connect(server)
        idle_writer.write(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
        await _read_response(idle_reader)
        reader, writer = await _connect(server)
        writer.write(b"GET /s HTTP/1.1\r\nHost: x\r\n\r\n")
        await reader.readuntil(b"data: 0")
        shutdown = asyncio.ensure_future(server.shutdown(5.0))
        idle_rest = await asyncio.wait_for(idle_reader.read(), 5)
        rest = await reader.read()  # the stream runs to its end, then the server closes
        await shutdown
        try:
            await _connect(server)
            refused = False
        except OSError:
            refused = True
        return idle_rest, rest, refused

    idle_rest, rest, refused = _serve(stream, scenario)
    assert idle_rest == b""
    assert b"data: 19\n\n" in rest and rest.endswith(b"0\r\n\r\n")
    assert refused
    assert closed == ["generator"]


def test_shutdown_cancels_a_stream_past_the_deadline() -> None:
    closed: list[str] = []

    async def stream(request: HttpRequest) -> StreamResponse:
        return StreamResponse(_tokens(10_000, closed))

    async def scenario(server: HttpServer) -> bytes:
        reader, writer = await _connect(server)
        writer.write(b"GET /s HTTP/1.1\r\nHost: x\r\n\r\n")
        await reader.readuntil(b"data: 0")
        await server.shutdown(0.2)
        return await reader.read()

    rest = _serve(stream, scenario)
    assert not rest.endswith(b"0\r\n\r\n")  # cut off: no last chunk
    assert closed == ["generator"]


def test_error_response_has_the_status_the_openai_body_and_retry_after_only_when_set() -> None:
    busy = error_response(OverloadedError("full", code="overloaded", retry_after_s=2))
    assert busy.status == 429
    assert list(busy.headers) == [("retry-after", "2")]
    assert json.loads(busy.body)["error"]["code"] == "overloaded"
    missing = error_response(NotFoundError("no such model", code="model_not_found"))
    assert (missing.status, list(missing.headers)) == (404, [])
