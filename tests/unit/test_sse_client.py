"""scripts/sse_client.py, the bench's HTTP client, against small loopback servers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from scripts.sse_client import HttpError, SseConnection

Reply = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _serve(reply: Reply) -> tuple[asyncio.Server, str, list[tuple[int, bytes]]]:
    """A server that records (connection number, head and body) per request, then ``reply``."""
    requests: list[tuple[int, bytes]] = []
    accepted = [0]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted[0] += 1
        number = accepted[0]
        try:
            while not writer.is_closing():
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                requests.append((number, head + await reader.readexactly(length)))
                await reply(reader, writer)
        except asyncio.IncompleteReadError:
            pass  # the client closed the connection
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}", requests


async def _lines(connection: SseConnection, headers: dict[str, str]) -> list[bytes]:
    return [line async for line in connection.post_lines("/v1/x", b'{"a":1}', headers)]


def test_chunked_events_arrive_as_lines_and_the_connection_is_kept() -> None:
    async def reply(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Tag: 7\r\n\r\n")
        # One event split over two chunks, then a chunk with two events.
        for data in (b'data: {"t":', b'"a"}\n\n', b'data: {"t":"b"}\r\n\r\ndata: [DONE]\n\n'):
            writer.write(b"%x\r\n%b\r\n" % (len(data), data))
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    async def main() -> None:
        server, url, requests = await _serve(reply)
        connection = SseConnection(url)
        headers: dict[str, str] = {}
        first = await _lines(connection, headers)
        second = await _lines(connection, headers)
        await connection.close()
        server.close()
        await server.wait_closed()
        expected = [b'data: {"t":"a"}', b"", b'data: {"t":"b"}', b"", b"data: [DONE]", b""]
        assert first == second == expected
        assert headers["x-tag"] == "7"
        assert [number for number, _ in requests] == [1, 1]  # both on one connection
        assert requests[0][1].startswith(b"POST /v1/x HTTP/1.1\r\n")
        assert requests[0][1].endswith(b'\r\n\r\n{"a":1}')

    asyncio.run(main())


def test_length_and_close_delimited_bodies() -> None:
    replies = iter(
        [
            b"content-length: 9\r\n\r\nline\nlast",
            b"connection: close\r\n\r\none\ntwo",
            b"content-length: 11\r\n\r\nafter\nclose",
        ]
    )

    async def reply(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        tail = next(replies)
        writer.write(b"HTTP/1.1 200 OK\r\n" + tail)
        await writer.drain()
        if b"close" in tail:
            writer.close()

    async def main() -> None:
        server, url, requests = await _serve(reply)
        connection = SseConnection(url)
        assert await _lines(connection, {}) == [b"line", b"last"]
        assert await _lines(connection, {}) == [b"one", b"two"]
        assert await _lines(connection, {}) == [b"after", b"close"]  # on a new connection
        assert [number for number, _ in requests] == [1, 1, 2]
        await connection.close()
        server.close()
        await server.wait_closed()

    asyncio.run(main())


def test_a_status_other_than_200_raises_with_the_body() -> None:
    async def reply(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        body = b'{"error":"overloaded"}'
        writer.write(b"HTTP/1.1 429 Too Many\r\ncontent-length: %d\r\n\r\n%b" % (len(body), body))
        await writer.drain()

    async def main() -> None:
        server, url, _ = await _serve(reply)
        connection = SseConnection(url)
        with pytest.raises(HttpError, match=r"status 429.*overloaded"):
            await _lines(connection, {})
        server.close()
        await server.wait_closed()

    asyncio.run(main())
