"""Time a no-op ``expert-deploy build`` on the 8-expert DGX inventory (budget: 2 s).

Prepares a workdir whose engine cache holds stand-in engines for inventories/dgx.yaml (built
for real through a private dockerd running the busybox stand-in image, so the manifests say
"stand-in"), then runs the CLI as a fresh process several times and prints the wall time,
interpreter start included.

    .venv/bin/python scripts/bench_build.py [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from expert_deploy.builder.checkpoint_index import read_checkpoint_index  # noqa: E402
from expert_deploy.builder.engines import BuildOptions, build_engines  # noqa: E402
from expert_deploy.inventory import load_inventory  # noqa: E402
from expert_deploy.plan.planner import make_plan  # noqa: E402
from expert_deploy.settings import Settings  # noqa: E402
from tests.dockerd import STAND_IN_TAG, private_dockerd  # noqa: E402

BUDGET_S = 2.0
REPO_ID = "meta-llama/Meta-Llama-3-70B-Instruct"


def prepare(workdir: Path) -> None:
    model = workdir.parent / "model"
    model.mkdir()
    (model / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
    files = {f"model-{i:05d}-of-00030.safetensors": f"{i:064x}" for i in range(1, 31)}
    record = {"commit": "0" * 40, "path": str(model), "files": {"config.json": "f" * 40, **files}}
    workdir.mkdir()
    (workdir / "checkpoints.json").write_text(json.dumps({f"{REPO_ID}@main": record}))
    loaded = load_inventory(REPO / "inventories" / "dgx.yaml", REPO / "engines")
    settings = Settings(workdir=workdir, data_dir=REPO)
    with private_dockerd() as daemon:
        daemon.import_stand_in(STAND_IN_TAG, trtllm_version=loaded.toolchain.tensorrt_llm_version)
        results = build_engines(
            loaded,
            make_plan(loaded),
            read_checkpoint_index(workdir, workdir / "hub"),
            settings,
            options=BuildOptions(
                stand_in_image=STAND_IN_TAG,
                docker_base_url=daemon.base_url,
                # Sandboxes without CAP_SYS_RESOURCE cannot grant unlimited memlock.
                memlock_bytes=resource.getrlimit(resource.RLIMIT_MEMLOCK)[1],
            ),
        )
    statuses = [r.status for r in results]
    if "failed" in statuses:
        raise SystemExit(f"preparing the cache failed: {[r.message for r in results]}")
    print(f"prepared {len(results)} experts: {statuses}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-build-") as tmp:
        workdir = Path(tmp) / "work"
        prepare(workdir)
        argv = [
            str(REPO / ".venv" / "bin" / "expert-deploy"),
            "build", "--inventory", "dgx", "--workdir", str(workdir),
            "--stand-in-image", STAND_IN_TAG,
        ]  # fmt: skip
        times = []
        for _ in range(args.runs):
            started = time.perf_counter()
            done = subprocess.run(argv, capture_output=True, text=True, check=False, cwd=REPO)
            times.append(time.perf_counter() - started)
            if done.returncode != 0 or done.stdout.count("cached") != 8:
                print(done.stdout, done.stderr)
                raise SystemExit("the no-op build did not report 8 cached engines")
        print(done.stdout)
    median = statistics.median(times)
    print(
        f"no-op build, 8 experts: median {median:.3f} s, max {max(times):.3f} s "
        f"over {args.runs} runs (budget {BUDGET_S:.1f} s)"
    )
    return 0 if max(times) <= BUDGET_S else 1


if __name__ == "__main__":
    raise SystemExit(main())
