"""scripts/bench_gateway.py end to end, at a tiny size: a real tritonserver, gateway and nginx.

The script is how the gateway's latency targets are measured, so it must keep running. No
assertion depends on timing: the table must have every path at every level, with every
request done and none failed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_gateway.py"
ROW = re.compile(r"^\s*(\d+) (\S+)\s+(\d+)\s+(\d+)\s+(\d+)\s")
#: "+p50 low..high" of a gateway row.
ADDED = re.compile(r" (-?\d+\.\d\d)\s+(-?\d+\.\d\d)\.\.(-?\d+\.\d\d) ")


def test_every_path_runs_every_level_without_errors() -> None:
    argv = [sys.executable, str(SCRIPT), "--levels", "1", "4", "--max-requests", "6"]
    # 500 tokens/s: at 4 streams the synthetic TPOT rises from 2 to 8 ms (a prompt directive).
    argv += ["--max-seconds", "20", "--token-rate", "500", "--clients", "1"]
    paths = {"triton-http", "gw-http", "triton-grpc", "gw-grpc", "relay-http"}
    if shutil.which("nginx"):
        paths.add("nginx-http")
    else:
        argv.append("--no-nginx")
    if len(os.sched_getaffinity(0)) >= 2:
        argv += ["--pin-gateways", str(max(os.sched_getaffinity(0)))]
    run = subprocess.run(argv, capture_output=True, text=True, timeout=240, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "tpot per level 1: 2 ms, 4: 8 ms" in run.stdout
    rows = [ROW.match(line) for line in run.stdout.splitlines()]
    seen = {(int(m[1]), m[2]): (int(m[4]), int(m[5])) for m in rows if m}
    for level in (1, 4):
        for path in paths:
            done, errors = seen[(level, path)]
            assert done >= 6 and errors == 0, (level, path, run.stdout)
    # Each gateway row brackets its added p50 with a bootstrap interval.
    intervals = [ADDED.search(line) for line in run.stdout.splitlines()]
    found = [m for m in intervals if m]
    assert len(found) == 2 * len(paths - {"triton-http", "triton-grpc"}), run.stdout
    for m in found:
        assert float(m[2]) <= float(m[1]) <= float(m[3]), m[0]
    # Each baseline row ends with how busy the load side's CPUs were, in percent.
    loads = [
        float(line.split()[-1])
        for line, m in zip(run.stdout.splitlines(), rows, strict=True)
        if m and m[2].startswith("triton-")
    ]
    assert len(loads) == len(found), run.stdout  # one baseline row per group and level
    assert all(0.0 <= load <= 100.0 for load in loads), run.stdout
    # Both front ends report the gateway's own overhead (the HTTP header, the gRPC response
    # parameter): own50 is a figure on their rows, third from the end.
    owns = [
        line.split()[-3]
        for line, m in zip(run.stdout.splitlines(), rows, strict=True)
        if m and m[2] in ("gw-http", "gw-grpc")
    ]
    assert len(owns) == 4 and all(float(own) > 0 for own in owns), run.stdout


def test_ref_gateway_runs_interleaved_with_its_own_keep_warm() -> None:
    # The before/after mode: the same checkout as ref-*, rehearsals off there and on here.
    argv = [sys.executable, str(SCRIPT), "--levels", "1", "--max-requests", "6"]
    argv += ["--max-seconds", "20", "--clients", "1", "--no-nginx"]
    argv += ["--paths", "gw-http", "gw-grpc", "--ref-src", str(SCRIPT.parents[1])]
    argv += ["--keep-warm-ms", "1", "--ref-keep-warm-ms", "0"]
    run = subprocess.run(argv, capture_output=True, text=True, timeout=240, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "keep_warm.interval_ms: gateways 1, ref 0\n" in run.stdout
    rows = [ROW.match(line) for line in run.stdout.splitlines()]
    seen = {m[2]: (int(m[4]), int(m[5])) for m in rows if m}
    assert set(seen) == {"triton-http", "gw-http", "ref-http", "triton-grpc", "gw-grpc", "ref-grpc"}
    assert all(done >= 6 and errors == 0 for done, errors in seen.values()), run.stdout


PROBE = SCRIPT.with_name("probe_gateway.py")


@pytest.mark.parametrize(
    ("path", "options"),
    [
        ("gw-http", ["--protocol", "http"]),
        ("gw-grpc", ["--protocol", "grpc"]),
        ("nginx-http", ["--nginx", "--keep-warm-ms", "1"]),
    ],
)
def test_probe_script_prints_a_row_per_level(path: str, options: list[str]) -> None:
    argv = [sys.executable, str(PROBE), "--levels", "1", "4", "--pairs", "8"]
    argv += ["--token-rate", "500", "--gap-ms", "5", *options]
    run = subprocess.run(argv, capture_output=True, text=True, timeout=240, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"over {path};" in run.stdout, run.stdout
    keep_warm = "1" if "--keep-warm-ms" in options else "the gateway's default"
    assert f"keep_warm.interval_ms: {keep_warm}\n" in run.stdout, run.stdout
    assert "cpuidle " in run.stdout, run.stdout  # the gateway CPUs' idle policy
    rows = {
        int(line.split()[0]): line.split()
        for line in run.stdout.splitlines()
        if line.split() and line.split()[0].isdigit()
    }
    assert set(rows) == {1, 4}, run.stdout
    for fields in rows.values():
        # Probe TTFTs both ways, and the added p50 is their difference.
        gw50, tri50, added = float(fields[1]), float(fields[3]), float(fields[5])
        assert gw50 > 0 and tri50 > 0 and abs(gw50 - tri50 - added) < 0.015, fields
        low, high = (float(x) for x in fields[6].split(".."))
        assert low <= high, fields
        assert float(fields[9]) > 0, fields  # own50: header or response parameter
        assert 0.0 <= float(fields[11]) <= 100.0, fields  # load%
