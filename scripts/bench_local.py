"""Measure the embedded default: start-up, memory per expert, and streaming through NGINX.

Runs the README's commands on a copy of inventories/local.yaml on free ports: ``expert-deploy
up`` in a fresh work dir (generates the 8 checkpoints, fits the router, starts 8 Triton
servers, 2 gateways and NGINX), then ``down`` and ``up`` again (checkpoints and router
cached: start-up alone). While it runs it reads, per Triton server, the resident and
proportional set size of tritonserver plus its Python-backend stub (PyTorch + the model),
and streams completions through NGINX (time to first event, events per second).
Wall-clock figures on a shared machine are noisy; the script prints them, it asserts nothing.

    .venv/bin/python scripts/bench_local.py [--requests 5] [--max-tokens 64]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import yaml  # noqa: E402

from tests.support.inventories import materialize  # noqa: E402

CLI = [sys.executable, "-m", "expert_deploy"]
PROMPT = "How do I fix this recursion bug in my python code?"


def run(args: list[str], workdir: Path, inventory: Path) -> float:
    """Run one CLI command on the copy; return its wall-clock seconds (exit on failure)."""
    start = time.perf_counter()
    done = subprocess.run(
        [*CLI, *args, "-i", str(inventory), "-w", str(workdir)],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
    )
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        print(done.stdout[-3000:], done.stderr[-3000:], sep="\n")
        sys.exit(f"{args[0]} failed with exit code {done.returncode}")
    return elapsed


def _kib(pid: int, field: str) -> int:
    path = Path(f"/proc/{pid}/smaps_rollup")
    for line in path.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def memory(workdir: Path) -> dict[str, tuple[float, float]]:
    """Per Triton server: (RSS, PSS) in MiB of tritonserver and its stub together."""
    marker = str(workdir.resolve() / "rendered" / "triton")
    groups: dict[str, list[int]] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        text = " ".join(a.decode(errors="replace") for a in argv)
        if marker not in text:
            continue
        # tritonserver names the repository; its stub names the model's files in it.
        server = text.split(marker + "/", 1)[1].split("/", 1)[0].split(" ", 1)[0]
        groups.setdefault(server, []).append(int(proc.name))
    out = {}
    for server, pids in sorted(groups.items()):
        rss = sum(_kib(p, "Rss") for p in pids) / 1024
        pss = sum(_kib(p, "Pss") for p in pids) / 1024
        out[server] = (rss, pss)
    return out


def stream(url: str, max_tokens: int) -> tuple[float, float, int]:
    """One streamed completion: (first event s, total s, events)."""
    body = json.dumps(
        {"model": "expert-router", "prompt": PROMPT, "max_tokens": max_tokens, "stream": True}
    ).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    start = time.perf_counter()
    first, events = 0.0, 0
    with urllib.request.urlopen(request, timeout=300) as response:
        for raw in response:
            line = raw.decode().strip()
            if line.startswith("data:") and line != "data: [DONE]":
                events += 1
                first = first or time.perf_counter() - start
    return first, time.perf_counter() - start, events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-local-") as tmp:
        root = Path(tmp)
        inventory = materialize("local", root)
        workdir = root / "work"
        cold = run(["up"], workdir, inventory)
        try:
            run(["down"], workdir, inventory)
            warm = run(["up"], workdir, inventory)
            per_server = memory(workdir)
            listen = yaml.safe_load(inventory.read_text())["nginx"]["listen_port"]
            url = f"http://127.0.0.1:{listen}/v1/completions"
            stream(url, 1)  # warm the path once
            results = [stream(url, args.max_tokens) for _ in range(args.requests)]
        finally:
            run(["down"], workdir, inventory)
    print(f"machine: {os.cpu_count()} CPUs; figures are noisy on a shared machine")
    print(f"up, fresh work dir (generate 8 checkpoints, fit router, start all): {cold:.1f} s")
    print(f"up, cached artifacts (start 8 Tritons + 2 gateways + NGINX, ready): {warm:.1f} s")
    for server, (rss, pss) in per_server.items():
        print(f"  {server:<16} RSS {rss:6.0f} MiB   PSS {pss:6.0f} MiB (tritonserver + stub)")
    total_pss = sum(p for _, p in per_server.values())
    print(f"  all {len(per_server)} experts: PSS {total_pss:.0f} MiB")
    ttft = statistics.median(r[0] for r in results) * 1000
    rate = statistics.median((r[2] - 1) / (r[1] - r[0]) for r in results if r[2] > 1)
    print(
        f"through NGINX, {args.requests} requests of {args.max_tokens} tokens: first event "
        f"p50 {ttft:.1f} ms, {rate:.0f} events/s p50 ({[r[2] for r in results]} events)"
    )


if __name__ == "__main__":
    main()
