"""Run real gateway processes (``python -m router_service --config ...``) for tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.support.ports import free_ports
from tests.support.processes import start_group, stop_group, wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]


def routing_table(
    generation: int, experts: dict[str, tuple[list[int], list[int]]], *, model: str = "ensemble"
) -> dict[str, Any]:
    """A routing-table mapping: ``experts[id] = (clusters, [grpc_port, ...])`` on 127.0.0.1."""
    return {
        "generation": generation,
        "experts": [
            {
                "id": expert_id,
                "clusters": clusters,
                "upstreams": [
                    {"host": "127.0.0.1", "grpc_port": port, "model": model} for port in ports
                ],
            }
            for expert_id, (clusters, ports) in experts.items()
        ],
    }


@dataclass
class Gateway:
    """A gateway process, its config file and its loopback ports."""

    workdir: Path
    config: dict[str, Any]
    env: dict[str, str] = field(default_factory=dict)
    extra_args: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def http_port(self) -> int:
        """Public OpenAI-compatible port."""
        return int(self.config["http_port"])

    @property
    def admin_port(self) -> int:
        """Admin API port."""
        return int(self.config["admin_port"])

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<http_port>``."""
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def admin_url(self) -> str:
        """``http://127.0.0.1:<admin_port>``."""
        return f"http://127.0.0.1:{self.admin_port}"

    @property
    def log_path(self) -> Path:
        """The gateway's stdout and stderr."""
        return self.workdir / "gateway.log"

    def start(self, *, ready_timeout_s: float = 30.0, wait_ready: bool = True) -> Gateway:
        """Write the config, start the process, wait for ``/readyz`` (or ``/healthz``)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        if "http_port" not in self.config:
            # A gRPC port the caller picked is not bound yet: the kernel may offer it again.
            picked = [self.config["grpc_port"]] if self.config.get("grpc_port") else []
            self.config["http_port"], self.config["admin_port"] = free_ports(2, exclude=picked)
        config_path = self.workdir / "gateway.yaml"
        config_path.write_text(yaml.safe_dump(self.config))
        env = {k: v for k, v in os.environ.items() if not k.startswith("EXPERT_ROUTER_")}
        env.update(self.env)
        argv = [sys.executable, "-m", "router_service", "--config", str(config_path)]
        argv += self.extra_args
        self.process = start_group(argv, env=env, log_path=self.log_path)
        path = "/readyz" if wait_ready else "/healthz"
        if not wait_until(lambda: self._status(path) == 200, timeout_s=ready_timeout_s):
            self.stop()
            raise RuntimeError(f"gateway not ready; log:\n{self.log_text()[-4000:]}")
        return self

    def _status(self, path: str) -> int | None:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"gateway exited; log:\n{self.log_text()[-4000:]}")
        try:
            with urllib.request.urlopen(self.base_url + path, timeout=1.0) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
        except OSError:
            return None

    def admin(
        self, method: str, path: str, body: object | None = None, *, token: str | None = None
    ) -> tuple[int, Any]:
        """Call the admin API; returns (status, decoded JSON body)."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.admin_url + path, data=data, method=method)
        request.add_header("content-type", "application/json")
        if token is not None:
            request.add_header("authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=30.0) as response:
                return int(response.status), json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return int(exc.code), json.loads(exc.read())

    def stop(self, *, grace_s: float = 10.0) -> int | None:
        """SIGTERM (graceful shutdown), then SIGKILL after ``grace_s``; returns the exit code."""
        if self.process is None:
            return None
        return stop_group(self.process, grace_s=grace_s)

    def log_text(self) -> str:
        """Everything the gateway printed so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_records(self) -> list[dict[str, Any]]:
        """The gateway's JSON log lines, decoded."""
        records = []
        for line in self.log_text().splitlines():
            if line.startswith("{"):
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return records
