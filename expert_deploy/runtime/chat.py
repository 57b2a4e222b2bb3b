"""A streamed chat completion through a deployment, for ``expert-deploy chat``.

Plain ``urllib`` (no extra needed): POST ``/v1/chat/completions`` with ``stream: true``, read
the Server-Sent Events as they arrive, and report which expert the gateway routed to (its
``x-expert-router-expert`` / ``-cluster`` response headers).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

from expert_deploy.errors import ExpertDeployError
from expert_deploy.runtime.readiness import ROUTED_MODEL


class ChatError(ExpertDeployError):
    """The deployment refused or failed a chat request."""


@dataclass(frozen=True)
class ChatResult:
    text: str
    expert: str | None
    cluster: str | None
    fallback: bool


def stream_chat(
    url: str,
    prompt: str,
    *,
    max_tokens: int,
    api_key: str | None,
    on_text: Callable[[str], None],
    timeout_s: float = 300.0,
) -> ChatResult:
    """Send ``prompt`` as one user message; call ``on_text`` with each piece as it arrives.

    Raises:
        ChatError: nothing answers at ``url``, or it answered with an error.
    """
    body = {
        "model": ROUTED_MODEL,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "stream": True,
    }
    headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    if not url.startswith("http"):
        raise ChatError(f"{url} is not an http(s) URL")
    request = urllib.request.Request(  # noqa: S310 (scheme checked above)
        url, data=json.dumps(body).encode(), headers=headers, method="POST"
    )
    pieces: list[str] = []
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310 (http URL from the state)
            expert = response.headers.get("x-expert-router-expert")
            cluster = response.headers.get("x-expert-router-cluster") or None
            fallback = response.headers.get("x-expert-router-fallback") == "true"
            for raw in response:
                text = _delta(raw.decode(errors="replace").strip())
                if text:
                    pieces.append(text)
                    on_text(text)
    except urllib.error.HTTPError as error:
        detail = error.read().decode(errors="replace")[:300]
        hint = (
            " (set the API key variable the inventory's gateway.auth names)"
            if error.code == 401
            else ""
        )
        raise ChatError(f"{url} answered {error.code}{hint}: {detail}") from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise ChatError(
            f"nothing answers at {url} ({reason}); check `expert-deploy status`"
        ) from None
    return ChatResult("".join(pieces), expert, cluster, fallback)


def _delta(line: str) -> str:
    """The text an SSE ``data:`` line carries ("" for comments, ``[DONE]`` and usage chunks).

    Raises:
        ChatError: the stream carried an error event.
    """
    if not line.startswith("data:"):
        return ""
    payload = line[5:].strip()
    if payload == "[DONE]":
        return ""
    try:
        event = json.loads(payload)
    except json.JSONDecodeError:
        return ""
    if "error" in event:
        raise ChatError(f"the stream failed: {event['error']}")
    choices = event.get("choices") or []
    if not choices:
        return ""
    return str((choices[0].get("delta") or {}).get("content") or "")
