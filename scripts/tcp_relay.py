"""A bare TCP relay: the floor of one proxy hop, for scripts/bench_gateway.py.

Each accepted connection gets its own connection to the upstream, and bytes are copied both
ways as they arrive, with no parsing: whatever a proxy adds beyond what this relay adds (on the
same CPUs, under the same event loop) is the proxy's own work. On the 2-vCPU benchmark VM this
hop added 0.21-0.24 ms to Triton's SSE time to first token, against about 1.1 ms for the gateway.

Usage: ``python scripts/tcp_relay.py --listen PORT --upstream HOST:PORT``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import sys

__all__ = ["relay_connection", "serve"]


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until ``reader`` ends, then half-close ``writer`` (the peer sees the same EOF)."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.close()


def _no_delay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


async def relay_connection(
    client_reader: asyncio.StreamReader,
    client_writer: asyncio.StreamWriter,
    upstream: tuple[str, int],
) -> None:
    """Relay one client connection to a new connection to ``upstream`` until both sides end."""
    try:
        upstream_reader, upstream_writer = await asyncio.open_connection(*upstream)
    except OSError:
        client_writer.close()  # upstream down: the client sees the connection close
        return
    for writer in (client_writer, upstream_writer):
        _no_delay(writer)
    try:
        await asyncio.gather(
            _copy(client_reader, upstream_writer), _copy(upstream_reader, client_writer)
        )
    finally:
        for writer in (client_writer, upstream_writer):
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()


async def serve(listen_port: int, upstream: tuple[str, int]) -> None:
    """Relay every connection to 127.0.0.1:``listen_port`` to ``upstream``, forever."""
    server = await asyncio.start_server(
        lambda r, w: relay_connection(r, w, upstream), "127.0.0.1", listen_port
    )
    async with server:
        await server.serve_forever()


def _upstream(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", type=int, required=True, help="loopback port to accept on")
    parser.add_argument("--upstream", type=_upstream, required=True, help="HOST:PORT to relay to")
    args = parser.parse_args(argv)
    try:
        import uvloop  # the gateway's event loop, so the two hops differ only in their work
    except ImportError:
        asyncio.run(serve(args.listen, args.upstream))
    else:
        uvloop.run(serve(args.listen, args.upstream))
    return 0


if __name__ == "__main__":
    sys.exit(main())
