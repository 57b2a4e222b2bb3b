"""`expert-deploy bench run --inventory X` against a deployment `up` started (real processes).

The simulator finds NGINX and the first Triton server in the deployment state, sends the load
through NGINX (routed, with the serving expert read from the gateway's header) and the same
load to one Triton server directly as the baseline.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.inventories import INVENTORIES, materialize

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CLI = str(Path(sys.executable).parent / "expert-deploy")


def _cli(*args: str, workdir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EXPERT_DEPLOY_WORKDIR": str(workdir)}
    return subprocess.run(
        [CLI, *args], env=env, capture_output=True, text=True, timeout=600, check=False
    )


def test_bench_finds_a_deployment_by_its_inventory(tmp_path: Path) -> None:
    inventory = str(materialize("local-synthetic", tmp_path / "inv"))
    workdir, out = tmp_path / "work", tmp_path / "out"
    nothing = _cli(
        "bench", "run", "-i", inventory, "--prompts", "x.jsonl", "--out", str(out),
        workdir=workdir,
    )  # fmt: skip
    assert nothing.returncode != 0 and "up" in nothing.stderr  # says how to get a deployment
    up = _cli("up", "--inventory", inventory, workdir=workdir)
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        bench = _cli(
            "bench", "run", "-i", inventory,
            "--prompts", str(INVENTORIES / "data" / "local-prompts.jsonl"),
            "--users", "1,3", "--requests", "9", "--warmup", "0.5", "--max-tokens", "6",
            "--baseline", "--out", str(out),
            workdir=workdir,
        )  # fmt: skip
        assert bench.returncode == 0, bench.stdout + bench.stderr
    finally:
        down = _cli("down", "--inventory", inventory, workdir=workdir)
        assert down.returncode == 0, down.stdout + down.stderr
    sweep = json.loads((out / "sweep.json").read_text())
    assert [p["point"] for p in sweep["points"]] == ["users-1", "users-3"]
    served: set[str] = set()
    for point in sweep["points"]:
        requests = point["metrics"]["requests"]
        assert requests["ok"] == 9 and requests["errors"] == 0, requests
        assert point["metrics"]["ttft_ms"]["n"] == 9
        served |= set(point["metrics"]["per_expert"])
    # Routed through NGINX and the gateways: the prompts reach more than one expert.
    assert len(served & {"expert-0", "expert-1", "expert-2"}) >= 2, served
    baseline = json.loads((out / "baseline" / "sweep.json").read_text())
    assert baseline["points"][0]["target"].startswith("grpc://")
    assert list((out).glob("*.png")), "no plots written"
