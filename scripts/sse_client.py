"""A lean HTTP/1.1 client for server-sent events, the load generator of bench_gateway.py.

At 1,000 streams the bench's httpx clients were the bottleneck: two client processes and
Triton shared one vCPU, and the direct baseline's TTFT p50 rose to 75 ms against a synthetic
5 ms, so the gateway's added time could not be read. This client does only what the bench
needs: one keep-alive connection, a JSON POST, and a response read as lines (chunked,
Content-Length or close-delimited). It is the same client for the direct and the gateway
paths, so a comparison between them stays fair.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

__all__ = ["HttpError", "SseConnection"]


class HttpError(Exception):
    """A response other than 200; the message holds the status and the start of the body."""


class SseConnection:
    """One keep-alive connection to ``base_url`` (``http://host:port``), reopened when closed.

    No timeouts of its own: the caller bounds a whole request with ``asyncio.timeout``.
    """

    def __init__(self, base_url: str) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or parts.hostname is None or parts.port is None:
            raise ValueError(f"expected http://host:port, got {base_url!r}")
        self.host, self.port = parts.hostname, parts.port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def close(self) -> None:
        """Close the connection (if open)."""
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):  # the server closed it first
                await writer.wait_closed()

    async def post_lines(
        self, path: str, body: bytes, headers: dict[str, str]
    ) -> AsyncIterator[bytes]:
        """POST ``body`` (JSON) and yield the response body's lines, without line endings.

        The response headers (lower-case names) are in ``headers`` before the first line.

        Raises:
            HttpError: the status was not 200.
        """
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        reader, writer = self._reader, self._writer
        assert reader is not None
        writer.write(
            (
                f"POST {path} HTTP/1.1\r\nhost: {self.host}:{self.port}\r\n"
                f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
            ).encode("latin-1")
            + body
        )
        head = await reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        headers.clear()
        for header in header_lines:
            if header:
                name, _, value = header.partition(":")
                headers[name.strip().lower()] = value.strip()
        is_chunked = headers.get("transfer-encoding", "").lower() == "chunked"
        length = int(headers["content-length"]) if "content-length" in headers else None
        keep_alive = headers.get("connection", "").lower() != "close" and (
            is_chunked or length is not None
        )
        try:
            if status != 200:
                text = b"".join([data async for data in self._body(is_chunked, length)])
                raise HttpError(f"status {status}: {text[:200]!r}")
            pending = b""
            async for data in self._body(is_chunked, length):
                *lines, pending = (pending + data).split(b"\n")
                for line in lines:
                    yield line.rstrip(b"\r")
            if pending:
                yield pending.rstrip(b"\r")
        except BaseException:
            keep_alive = False  # the response was not read to its end
            raise
        finally:
            if not keep_alive:
                await self.close()

    async def _body(self, is_chunked: bool, length: int | None) -> AsyncIterator[bytes]:
        reader = self._reader
        assert reader is not None
        if is_chunked:
            while True:
                size_line = await reader.readuntil(b"\r\n")
                size = int(size_line.split(b";", 1)[0], 16)
                if size == 0:
                    await reader.readuntil(b"\r\n")  # the servers here send no trailers
                    return
                chunk = await reader.readexactly(size + 2)
                yield chunk[:-2]
        elif length is not None:
            if length:
                yield await reader.readexactly(length)
        else:
            while data := await reader.read(65536):
                yield data
