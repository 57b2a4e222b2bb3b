"""The README's main command, end to end: `up --inventory local`, `chat`, `status`, `down`.

Eight `transformers` experts (generated Llama checkpoints, PyTorch on the CPU) in real
tritonservers, the router fitted on the shipped corpus, two gateway replicas and NGINX — the
shipped inventory, moved to free ports so the test can run beside other deployments.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from expert_deploy.runtime.state import StateStore
from tests.support.inventories import materialize

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CLI = str(Path(sys.executable).parent / "expert-deploy")


def _cli(*args: str, workdir: Path, timeout_s: float = 600.0) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EXPERT_DEPLOY_WORKDIR": str(workdir)}
    return subprocess.run(
        [CLI, *args], env=env, capture_output=True, text=True, timeout=timeout_s, check=False
    )


def _alive(pid: int) -> bool:
    """Running, not a zombie: a stopped child of `up` is reaped by init, maybe a moment later."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_up_chat_status_down_on_the_embedded_default(tmp_path: Path) -> None:
    inventory = str(materialize("local", tmp_path / "inv"))
    workdir = tmp_path / "work"
    up = _cli("up", "--inventory", inventory, workdir=workdir)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert "/v1/chat/completions (model expert-router)" in up.stdout
        state = StateStore(workdir).load()
        assert state is not None
        assert sum(r.kind == "triton" for r in state.components.values()) == 8
        pids = [int(r.ref.split(":")[0]) for r in state.components.values()]

        chat = _cli(
            "chat",
            "--inventory",
            inventory,
            "How do I fix a recursion bug in my python function?",
            "--max-tokens",
            "12",
            workdir=workdir,
        )
        assert chat.returncode == 0, chat.stdout + chat.stderr
        assert chat.stdout.strip(), "no tokens streamed"
        # The router sends a programming question to the programming expert (cluster 7).
        assert "served by programming (cluster 7)" in chat.stderr

        status = _cli("status", "--inventory", inventory, "--json", workdir=workdir)
        assert status.returncode == 0, status.stdout + status.stderr
    finally:
        down = _cli("down", "--inventory", inventory, workdir=workdir)
    assert down.returncode == 0, down.stdout + down.stderr
    assert StateStore(workdir).load() is None
    assert not [pid for pid in pids if _alive(pid)]
