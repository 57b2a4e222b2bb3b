"""A server-sent-events ASGI response that notices a client disconnect while idle.

Starlette's StreamingResponse (ASGI spec 2.4) only sees a disconnect when a write fails, which
can be long after the client left if the expert is slow; here a watcher task reads ``receive``
and cancels the streaming task at once, so the upstream Triton call is cancelled too.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

__all__ = ["SSEResponse"]


class SSEResponse(Response):
    """Stream ``events`` (already-encoded ``data: ...`` frames) with status 200."""

    def __init__(
        self,
        events: AsyncGenerator[bytes, None],
        *,
        headers: Mapping[str, str],
        on_close: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        # Response.__init__ is not called: this class renders its own headers and body.
        self.status_code = 200
        self.background = None
        self._events = events
        self._raw_headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"),
            # Tell NGINX not to buffer the stream (proxy_buffering).
            (b"x-accel-buffering", b"no"),
        ] + [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
        # Runs even when the generator never started (its own finally would not run then).
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The stream runs in this task, so the headers and the first event (already in hand)
        # go out without a hop through the loop; the watcher cancels this task on disconnect.
        task = asyncio.current_task()
        assert task is not None
        disconnected = False
        watcher: asyncio.Future[None] | None = None

        def on_disconnect(done: asyncio.Future[None]) -> None:
            nonlocal disconnected
            if not done.cancelled() and done.exception() is None:
                disconnected = True
                task.cancel()

        try:
            await send({"type": "http.response.start", "status": 200, "headers": self._raw_headers})
            async for event in self._events:
                await send({"type": "http.response.body", "body": event, "more_body": True})
                if watcher is None:
                    # Started after the first event, not before: creating a task is one more
                    # cold step on an idle replica's time-to-first-token path.
                    watcher = asyncio.ensure_future(_wait_disconnect(receive))
                    watcher.add_done_callback(on_disconnect)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not disconnected:
                raise  # cancelled from outside (shutdown): not ours to swallow
            if sys.version_info >= (3, 11):
                task.uncancel()
        except OSError:
            if not disconnected:
                raise
        finally:
            if watcher is not None:
                watcher.remove_done_callback(on_disconnect)
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
            await self._events.aclose()
            if self._on_close is not None:
                await self._on_close()


async def _wait_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
