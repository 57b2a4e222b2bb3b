"""Time ``expert-deploy plan`` on the 8-expert inventory, interpreter start included.

Target: ≤ 1 s. Prints the median and worst of several runs, and the import time of the CLI.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

RUNS = 7
BIN = Path(sys.executable).parent / "expert-deploy"


def main() -> None:
    timings = []
    for _ in range(RUNS):
        start = time.perf_counter()
        subprocess.run([str(BIN), "plan", "--inventory", "dgx"], check=True, capture_output=True)
        timings.append(time.perf_counter() - start)
    importing = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import expert_deploy.cli"],
        capture_output=True,
        text=True,
        check=True,
    ).stderr.splitlines()
    cumulative_us = max(int(line.split("|")[1]) for line in importing[1:] if "|" in line)
    median = statistics.median(timings)
    print(
        f"expert-deploy plan --inventory dgx (8 experts), {RUNS} runs, interpreter start included:"
    )
    print(
        f"  median {median * 1000:.0f} ms, worst {max(timings) * 1000:.0f} ms (target <= 1000 ms)"
    )
    print(f"  import expert_deploy.cli: {cumulative_us / 1000:.0f} ms")
    print("  OK" if median <= 1.0 else "  OVER BUDGET")


if __name__ == "__main__":
    main()
