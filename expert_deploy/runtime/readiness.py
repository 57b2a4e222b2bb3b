"""Readiness: a component is ready when a real one-token inference through it succeeds.

Listing a model comes minutes before it can answer (deploy.md §1.5), so every probe sends a
generate request over the component's own public protocol:

* Triton: ``/v2/health/ready``, then a one-token request to the ``ensemble`` model through
  Triton's HTTP generate-stream endpoint (works for decoupled models);
* gateway and NGINX: ``POST /v1/completions`` with ``max_tokens: 1``, which goes through the
  classifier to an expert and back.

Plain ``urllib`` on purpose: the CLI's core needs no extra to check a deployment.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from expert_deploy.errors import ReadinessTimeoutError
from expert_deploy.runtime.components import Component

#: The served model name in every rendered Triton repository (render/python_models.py).
TRITON_MODEL = "ensemble"
#: The routed model name the gateway answers to (render/gateway.py).
ROUTED_MODEL = "expert-router"


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    detail: str
    #: The expert that answered, when the gateway said (``x-expert-router-expert``).
    expert: str | None = None


def reachable(address: str) -> str:
    """Where to reach a server bound to ``address``: loopback for all interfaces."""
    return "127.0.0.1" if address in ("0.0.0.0", "") else address  # noqa: S104


def client_port(kind: str, ports: Mapping[str, int]) -> int:
    """The OpenAI-compatible port of a gateway replica or of NGINX."""
    return ports["http"] if kind == "gateway" else ports["listen"]


def probe_triton(address: str, http_port: int, *, timeout_s: float = 10.0) -> ProbeResult:
    """Server ready, then one streamed token from the ``ensemble`` model."""
    base = f"http://{reachable(address)}:{http_port}"
    try:
        with urllib.request.urlopen(f"{base}/v2/health/ready", timeout=timeout_s) as response:  # noqa: S310 (http:// built here)
            if response.status != 200:
                return ProbeResult(False, f"/v2/health/ready answered {response.status}")
    except (urllib.error.URLError, OSError) as error:
        return ProbeResult(False, f"/v2/health/ready: {_reason(error)}")
    body = json.dumps({"text_input": "ping", "max_tokens": 1, "stream": True}).encode()
    request = urllib.request.Request(  # noqa: S310 (an http:// URL built here)
        f"{base}/v2/models/{TRITON_MODEL}/generate_stream",
        data=body,
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310
            for raw in response:
                line = raw.decode(errors="replace").strip()
                if not line.startswith("data:"):
                    continue
                event = json.loads(line[5:])
                if "error" in event:
                    return ProbeResult(False, f"generate: {event['error']}")
                if "text_output" in event:
                    return ProbeResult(True, "one token generated")
    except (urllib.error.URLError, OSError, ValueError) as error:
        return ProbeResult(False, f"generate: {_reason(error)}")
    return ProbeResult(False, "generate: the stream ended without a token")


def probe_completion(
    address: str, port: int, *, api_key: str | None = None, timeout_s: float = 10.0
) -> ProbeResult:
    """One-token ``/v1/completions`` through a gateway replica or NGINX."""
    body = json.dumps({"model": ROUTED_MODEL, "prompt": "ping", "max_tokens": 1}).encode()
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    request = urllib.request.Request(
        f"http://{reachable(address)}:{port}/v1/completions",
        data=body,
        headers=headers,
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310
            expert = response.headers.get("x-expert-router-expert")
            payload = json.loads(response.read())
    except urllib.error.HTTPError as error:
        return ProbeResult(False, f"/v1/completions answered {error.code}: {_error_text(error)}")
    except (urllib.error.URLError, OSError, ValueError) as error:
        return ProbeResult(False, f"/v1/completions: {_reason(error)}")
    if not payload.get("choices"):
        return ProbeResult(False, "/v1/completions returned no choices")
    return ProbeResult(True, f"one token from {expert or 'an expert'}", expert)


def probe(component: Component, *, api_key: str | None = None) -> ProbeResult:
    """The probe that fits ``component``'s kind."""
    if component.kind == "triton":
        return probe_triton(component.address, component.ports["http"])
    port = client_port(component.kind, component.ports)
    return probe_completion(component.address, port, api_key=api_key)


def wait_until_ready(
    component: Component,
    *,
    budget_s: float,
    still_running: Callable[[], None],
    api_key: str | None = None,
    interval_s: float = 0.2,
) -> ProbeResult:
    """Probe until success or ``budget_s``; ``still_running`` raises when the component died.

    Raises:
        ReadinessTimeoutError: no successful inference within ``budget_s``.
        whatever ``still_running`` raises (a ``LaunchError`` naming the log).
    """
    deadline = time.monotonic() + budget_s
    last = ProbeResult(False, "not probed yet")
    while True:
        still_running()
        last = probe(component, api_key=api_key)
        if last.ok:
            return last
        if time.monotonic() >= deadline:
            raise ReadinessTimeoutError(
                f"{component.name} did not answer a real request within {budget_s:g} s "
                f"(last: {last.detail}); raise startup_budget_s or see its log"
            )
        time.sleep(interval_s)


def _reason(error: BaseException) -> str:
    if isinstance(error, urllib.error.URLError):
        return str(error.reason)
    return str(error) or type(error).__name__


def _error_text(error: urllib.error.HTTPError) -> str:
    try:
        return error.read().decode(errors="replace")[:200]
    except OSError:
        return ""
