"""Time a no-op ``expert-deploy build`` on the 8-expert DGX inventory (budget: 2 s).

The whole pipeline runs each time: fetch (checkpoints pinned by the lockfile), engines (cache
lookup), router (cached by its inputs), lock check, render of 8 Triton repositories, 16 gateway
configs and nginx.conf. Setup, done once and not timed:

* a copy of inventories/dgx.yaml in a temp folder (so its lock lands there), with the router
  fitted on the shipped corpus (the c-BTM pickles dgx.yaml names are not shipped);
* the local Hub stand-in (tests/localhub.py) serving a tiny Llama under the 70B repo id;
* a private dockerd with the busybox stand-in image, which "builds" the one shared engine
  (manifests say "stand-in": no TensorRT-LLM runs here).

Then the CLI runs as a fresh process several times; the wall time includes interpreter start.

    .venv/bin/python scripts/bench_build.py [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.dockerd import STAND_IN_TAG, private_dockerd  # noqa: E402
from tests.localhub import LocalHub, tiny_llama_files  # noqa: E402

BUDGET_S = 2.0
REPO_ID = "meta-llama/Meta-Llama-3-70B-Instruct"


def write_inventory(folder: Path) -> Path:
    data = yaml.safe_load((REPO / "inventories" / "dgx.yaml").read_text())
    corpus = REPO / "inventories" / "data" / "local-prompts.jsonl"
    data["router"] = {"source": {"kind": "fit", "corpus": str(corpus), "seed": 0}, "k": 8}
    path = folder / "dgx.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def run(argv: list[str], env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, check=False, cwd=REPO, env=env)
    return time.perf_counter() - started, done


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-build-") as tmp, LocalHub() as hub:
        hub.add_repo(REPO_ID, tiny_llama_files())
        inventory = write_inventory(Path(tmp))
        workdir = Path(tmp) / "work"
        with private_dockerd() as daemon:
            daemon.import_stand_in(STAND_IN_TAG, trtllm_version="0.11.0")
            env = {
                **os.environ,
                "HF_ENDPOINT": hub.url,
                "HF_HOME": str(Path(tmp) / "hf"),
                "DOCKER_HOST": daemon.base_url,
            }
            env.pop("HF_TOKEN", None)
            argv = [
                str(REPO / ".venv" / "bin" / "expert-deploy"),
                "build", "--inventory", str(inventory), "--workdir", str(workdir),
                "--stand-in-image", STAND_IN_TAG,
            ]  # fmt: skip
            seconds, done = run(argv, env)
            if done.returncode != 0:
                print(done.stdout, done.stderr)
                raise SystemExit("the first build failed")
            print(f"first build (download, 1 shared stand-in engine, router fit): {seconds:.2f} s")
            lock = inventory.with_suffix(".lock").read_text()
            requests = len(hub.requests)
            times, steps = [], []
            for _ in range(args.runs):
                seconds, done = run(argv, env)
                times.append(seconds)
                out = done.stdout
                if done.returncode != 0 or out.count(" cached ") < 8 or "unchanged" not in out:
                    print(out, done.stderr)
                    raise SystemExit("the no-op build did not find 8 cached engines")
                steps.append(re.findall(r"(\w+) (\d+\.\d+) s", out.split("steps:")[-1]))
            assert inventory.with_suffix(".lock").read_text() == lock
            print(out)
    median = statistics.median(times)
    per_step = {
        name: statistics.median(float(run[i][1]) for run in steps)
        for i, (name, _) in enumerate(steps[0])
    }
    print("in-process step medians: " + ", ".join(f"{n} {s:.3f} s" for n, s in per_step.items()))
    # huggingface_hub >= 2.x also asks {endpoint}/api/agent-harnesses for its telemetry
    # registry (cached a day in HF_HOME, but never here: the stand-in Hub answers 404).
    checkpoint_requests = [r for r in hub.requests[requests:] if "agent-harnesses" not in r.path]
    print(
        f"Hub requests during the no-op builds: {len(checkpoint_requests)} for checkpoints, "
        f"{len(hub.requests) - requests - len(checkpoint_requests)} telemetry registry lookups"
    )
    print(
        f"no-op build, 8 experts: median {median:.3f} s, max {max(times):.3f} s "
        f"over {args.runs} runs (budget {BUDGET_S:.1f} s)"
    )
    return 0 if max(times) <= BUDGET_S else 1


if __name__ == "__main__":
    raise SystemExit(main())
