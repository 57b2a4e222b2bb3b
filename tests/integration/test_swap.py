"""Swap one expert under constant streaming load, on the process runtime with real servers.

Real tritonservers (synthetic experts), real gateway replicas and NGINX, started by
`expert-deploy up`; clients stream chat completions through NGINX the whole time. A swap
must fail no request, leave every other process alone, and move the gateways to the next
routing generation; a swap whose new server cannot start must roll back, equally quietly.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import yaml

from expert_deploy.runtime.state import DeploymentState, StateStore
from tests.support.inventories import materialize

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CLI = [str(Path(sys.executable).parent / "expert-deploy")]
CORPUS = Path(__file__).resolve().parents[2] / "inventories" / "data" / "local-prompts.jsonl"


def _cli(*args: str, workdir: Path, timeout_s: float = 240.0) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EXPERT_DEPLOY_WORKDIR": str(workdir)}
    return subprocess.run(
        [*CLI, *args], env=env, capture_output=True, text=True, timeout=timeout_s, check=False
    )


@dataclass
class Load:
    """Closed-loop streaming clients through NGINX, recording every outcome."""

    url: str
    prompts: list[str]
    users: int = 4
    ok: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def _user(self, index: int) -> None:
        with httpx.Client(timeout=30.0) as client:
            n = index
            while not self._stop.is_set():
                prompt = self.prompts[n % len(self.prompts)]
                n += self.users
                body = {
                    "model": "expert-router",
                    "messages": [{"role": "user", "content": prompt}],
                    "max_tokens": 12,
                    "stream": True,
                }
                try:
                    with client.stream("POST", self.url, json=body) as response:
                        if response.status_code != 200:
                            self.failures.append(f"{response.status_code} {response.read()!r}")
                            continue
                        lines = list(response.iter_lines())
                        if "data: [DONE]" not in lines:
                            self.failures.append(f"stream ended early: {lines[-3:]}")
                            continue
                        self.ok[response.headers.get("x-expert-router-expert", "?")] += 1
                except httpx.HTTPError as error:
                    self.failures.append(f"{type(error).__name__}: {error}")

    def __enter__(self) -> Load:
        for i in range(self.users):
            thread = threading.Thread(target=self._user, args=(i,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)


def _prompts() -> list[str]:
    return [json.loads(line)["text"] for line in CORPUS.read_text().splitlines() if line.strip()]


def _state(workdir: Path) -> DeploymentState:
    state = StateStore(workdir).load()
    assert state is not None
    return state


def _generation(port: int) -> int:
    return int(httpx.get(f"http://127.0.0.1:{port}/admin/generation").json()["generation"])


def _set_expert(inventory: Path, index: int, **values: object) -> None:
    data = yaml.safe_load(inventory.read_text())
    data["experts"][index] = {**data["experts"][index], **values}
    inventory.write_text(yaml.safe_dump(data, sort_keys=False))


@pytest.fixture
def deployed(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    inventory = materialize("local-synthetic", tmp_path / "inv")
    workdir = tmp_path / "work"
    up = _cli("up", "--inventory", str(inventory), workdir=workdir)
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        yield inventory, workdir
    finally:
        down = _cli("down", "--inventory", str(inventory), workdir=workdir)
        assert down.returncode == 0, down.stdout + down.stderr


def _nginx_url(state: DeploymentState) -> str:
    port = state.components["nginx"].ports["listen"]
    return f"http://127.0.0.1:{port}/v1/chat/completions"


def test_swap_under_load_fails_no_request(deployed: tuple[Path, Path]) -> None:
    inventory, workdir = deployed
    before = _state(workdir)
    refs = {name: record.ref for name, record in before.components.items()}
    with Load(_nginx_url(before), _prompts()) as load:
        time.sleep(2.0)
        unchanged = _cli("plan", "--inventory", str(inventory), workdir=workdir)
        _set_expert(inventory, 1, synthetic={"ttft_ms": 10, "tpot_ms": 2, "tokens": 24})
        changed = _cli("plan", "--inventory", str(inventory), workdir=workdir)
        swap = _cli("swap", "--inventory", str(inventory), "expert-1", workdir=workdir)
        time.sleep(2.0)
        after_swap = _cli("plan", "--inventory", str(inventory), workdir=workdir)
    # plan against the deployed state, Terraform's exit codes: 0 nothing to do, 2 changes.
    assert unchanged.returncode == 0 and "no changes" in unchanged.stdout, unchanged.stdout
    assert changed.returncode == 2, changed.stdout + changed.stderr
    assert "-/+  triton/expert-1-0" in changed.stdout and "1 to replace" in changed.stdout
    assert after_swap.returncode == 0, after_swap.stdout
    assert swap.returncode == 0, swap.stdout + swap.stderr
    assert "swapped expert-1" in swap.stdout
    assert load.failures == []
    assert load.ok["expert-1"] > 0 and sum(load.ok.values()) > 20, load.ok

    after = _state(workdir)
    assert after.generation == before.generation + 1
    for name, ref in refs.items():
        if name == "triton/expert-1-0":
            assert after.components[name].ref != ref
        else:
            assert after.components[name].ref == ref, f"{name} was restarted"
    old, new = before.components["triton/expert-1-0"], after.components["triton/expert-1-0"]
    assert new.artifact_hash != old.artifact_hash
    assert new.phase == "ready"
    gateways = [r for r in after.components.values() if r.kind == "gateway"]
    assert [_generation(r.ports["admin"]) for r in gateways] == [after.generation] * len(gateways)

    again = _cli("swap", "--inventory", str(inventory), "expert-1", workdir=workdir)
    assert again.returncode == 0 and "nothing to swap" in again.stdout

    # A gateway that dies after the swap comes back at the swapped generation, not at 1.
    os.kill(int(after.components["gateway/0"].ref.split(":")[0]), signal.SIGKILL)
    up = _cli("up", "--inventory", str(inventory), workdir=workdir)
    assert up.returncode == 0, up.stdout + up.stderr
    restarted = _state(workdir).components["gateway/0"]
    assert restarted.ref != after.components["gateway/0"].ref
    assert _generation(restarted.ports["admin"]) == after.generation


def test_swap_that_cannot_start_rolls_back(deployed: tuple[Path, Path]) -> None:
    inventory, workdir = deployed
    before = _state(workdir)
    refs = {name: record.ref for name, record in before.components.items()}
    with socket.socket() as blocker, Load(_nginx_url(before), _prompts()) as load:
        # The new definition asks for an HTTP port something else already holds.
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        _set_expert(inventory, 1, ports={"http": blocker.getsockname()[1]})
        time.sleep(1.0)
        swap = _cli("swap", "--inventory", str(inventory), "expert-1", workdir=workdir)
        time.sleep(2.0)
    assert swap.returncode == 1, swap.stdout + swap.stderr
    assert "rolled back" in swap.stderr
    assert load.failures == []

    after = _state(workdir)
    record = after.components["triton/expert-1-0"]
    assert record.config_hash == before.components["triton/expert-1-0"].config_hash
    assert record.phase == "ready"
    assert after.generation == before.generation
    for name, ref in refs.items():
        if name != "triton/expert-1-0":
            assert after.components[name].ref == ref, f"{name} was restarted"
    # The restored expert serves its cluster again (not drained, not a fallback).
    served = Counter[str]()
    with httpx.Client(timeout=30.0) as client:
        for prompt in _prompts()[:60]:
            response = client.post(
                _nginx_url(after).replace("chat/completions", "completions"),
                json={"model": "expert-router", "prompt": prompt, "max_tokens": 2},
            )
            assert response.status_code == 200
            served[response.headers["x-expert-router-expert"]] += 1
    assert served["expert-1"] > 0
