"""scripts/tcp_relay.py, the benchmark's bare proxy hop, on real loopback sockets."""

from __future__ import annotations

import asyncio

from scripts.tcp_relay import relay_connection
from tests.support.ports import free_port


class _Relay:
    """A relay on a free loopback port whose connection handlers can be awaited."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.handlers: list[asyncio.Task[None]] = []
        self.port = 0

    async def __aenter__(self) -> _Relay:
        def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.handlers.append(
                asyncio.create_task(relay_connection(reader, writer, self.upstream))
            )

        self.server = await asyncio.start_server(handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        await self.server.wait_closed()
        await asyncio.wait_for(asyncio.gather(*self.handlers), timeout=5)


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    await writer.wait_closed()


def test_bytes_go_both_ways_and_each_end_of_stream_reaches_the_other_side() -> None:
    async def upstream_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"ready\n")  # the server speaks first, before the client's EOF
        await writer.drain()
        request = await reader.read()  # until the client's half-close comes through the relay
        writer.write(request.upper())
        await _close(writer)

    async def scenario() -> tuple[bytes, bytes]:
        upstream = await asyncio.start_server(upstream_handler, "127.0.0.1", 0)
        async with upstream, _Relay(("127.0.0.1", upstream.sockets[0].getsockname()[1])) as relay:
            reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
            greeting = await reader.readline()
            writer.write(b"hello " * 20_000)  # larger than one read: copied in pieces
            writer.write_eof()
            answer = await reader.read()  # until the upstream's close comes through
            await _close(writer)
        return greeting, answer

    greeting, answer = asyncio.run(scenario())
    assert greeting == b"ready\n"
    assert answer == b"HELLO " * 20_000


def test_a_client_of_a_relay_whose_upstream_is_down_sees_the_connection_close() -> None:
    async def scenario() -> bytes:
        async with _Relay(("127.0.0.1", free_port())) as relay:  # nothing listens there
            reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
            writer.write(b"GET / HTTP/1.1\r\n\r\n")
            data = await asyncio.wait_for(reader.read(), timeout=5)
            await _close(writer)
        return data

    assert asyncio.run(scenario()) == b""
