"""Client of the gateway's admin API (router_service/admin_app.py): the one place that speaks it.

Used by ``swap`` (drain, wait for in-flight requests, undrain, new routing-table generation)
and by ``status`` (generation per replica). The admin API listens on loopback; its token, when
the inventory names one, comes from the environment and travels only in a header.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from expert_deploy.errors import LaunchError
from expert_deploy.settings import Secret

#: The admin API listens on loopback only (ARCHITECTURE.md): the CLI asks the replicas on the
#: host it runs on.
ADMIN_ADDRESS = "127.0.0.1"


class GatewayAdminError(LaunchError):
    """A gateway replica's admin API refused a request or could not be reached."""


@dataclass(frozen=True)
class GatewayAdmin:
    """One gateway replica's admin endpoint."""

    name: str
    host: str
    port: int
    token: Secret | None = None
    timeout_s: float = 5.0

    def drain(self, expert_id: str) -> None:
        """No new requests to ``expert_id``; its clusters go to the next-nearest expert."""
        self._call("POST", f"/admin/experts/{expert_id}/drain")

    def undrain(self, expert_id: str) -> None:
        self._call("POST", f"/admin/experts/{expert_id}/undrain")

    def inflight(self, expert_id: str) -> int:
        """Requests this replica has open on ``expert_id``'s servers right now."""
        return int(self._expert(expert_id).get("inflight", 0))

    def upstreams_healthy(self, expert_id: str) -> bool:
        """Whether every server of ``expert_id`` passed this replica's last health probe."""
        servers = self._expert(expert_id).get("upstreams", [])
        return bool(servers) and all(s.get("state") == "healthy" for s in servers)

    def _expert(self, expert_id: str) -> dict[str, Any]:
        """This replica's view of ``expert_id`` (``GET /admin/experts``)."""
        for expert in self._call("GET", "/admin/experts").get("experts", []):
            if expert.get("id") == expert_id:
                return dict(expert)
        raise GatewayAdminError(f"{self.name} does not know expert {expert_id!r}")

    def generation(self) -> int:
        return int(self._call("GET", "/admin/generation")["generation"])

    def replace_table(self, table: Mapping[str, Any]) -> int:
        """Install ``table`` (it must carry a higher ``generation``); returns that generation."""
        return int(self._call("PUT", "/admin/routing-table", table)["generation"])

    def _call(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        headers = {"Content-Type": "application/json"}
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token.reveal()}"
        data = json.dumps(body).encode() if body is not None else None
        url = f"http://{self.host}:{self.port}{path}"
        request = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:  # noqa: S310
                return json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")[:300]
            hint = (
                " (set the admin token variable the inventory names)" if error.code == 401 else ""
            )
            raise GatewayAdminError(
                f"{self.name}: {method} {path} answered {error.code}{hint}: {detail}"
            ) from None
        except (urllib.error.URLError, OSError, ValueError) as error:
            reason = getattr(error, "reason", error)
            raise GatewayAdminError(
                f"{self.name}: admin API at {self.host}:{self.port} unreachable ({reason}); "
                "check `expert-deploy status`"
            ) from None


def wait_drained(
    admins: list[GatewayAdmin], expert_id: str, *, deadline_s: float, interval_s: float = 0.1
) -> int:
    """Wait until no replica has a request open on ``expert_id``; return what is left at the
    deadline (0 when drained in time)."""
    end = time.monotonic() + deadline_s
    while True:
        left = sum(admin.inflight(expert_id) for admin in admins)
        if left == 0 or time.monotonic() >= end:
            return left
        time.sleep(interval_s)


def wait_healthy(
    admins: list[GatewayAdmin], expert_id: str, *, deadline_s: float, interval_s: float = 0.1
) -> list[str]:
    """Wait until every replica's probes see ``expert_id``'s servers healthy; return the
    replicas that still do not at the deadline (empty when all do)."""
    end = time.monotonic() + deadline_s
    while True:
        lagging = [a.name for a in admins if not a.upstreams_healthy(expert_id)]
        if not lagging or time.monotonic() >= end:
            return lagging
        time.sleep(interval_s)
