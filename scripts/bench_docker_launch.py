"""Time the docker launcher next to the process launcher on the local-synthetic deployment.

Starts a private dockerd with the busybox stand-in image (tests/dockerd.py; the NGC image
cannot exist here, so containers run this machine's tritonserver, gateway and nginx through
read-only mounts: tests/support/docker_stand_in.py). For each run it measures, per launcher:
one Triton server from launch to its first real inference, its stop, and the whole
deployment (3 Tritons, 2 gateways, NGINX) from the first launch to a completion through
NGINX, then its stop. Figures are wall-clock seconds; on a shared machine they are noisy.

    .venv/bin/python scripts/bench_docker_launch.py [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from expert_deploy.artifacts.prepare import prepare  # noqa: E402
from expert_deploy.inventory import load_inventory  # noqa: E402
from expert_deploy.plan.planner import make_plan  # noqa: E402
from expert_deploy.runtime.components import Component, components_for  # noqa: E402
from expert_deploy.runtime.docker_launcher import DockerLauncher  # noqa: E402
from expert_deploy.runtime.launcher import Handle, Launcher  # noqa: E402
from expert_deploy.runtime.process_launcher import ProcessLauncher  # noqa: E402
from expert_deploy.runtime.readiness import probe_completion  # noqa: E402
from expert_deploy.settings import Settings  # noqa: E402
from tests.dockerd import private_dockerd  # noqa: E402
from tests.support.docker_stand_in import stand_in_setup  # noqa: E402
from tests.support.inventories import materialize  # noqa: E402


def _timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def _one_run(launcher: Launcher, components: list[Component]) -> dict[str, float]:
    triton = components[0]
    figures: dict[str, float] = {}
    start = time.perf_counter()
    handle = launcher.launch(triton)
    figures["launch"] = time.perf_counter() - start
    launcher.wait_ready(triton, handle, budget_s=240)
    figures["triton ready"] = time.perf_counter() - start
    figures["triton stop"] = _timed(lambda: launcher.stop(handle, grace_s=5))

    started: list[Handle] = []
    start = time.perf_counter()
    try:
        for component in components:
            started.append(launcher.launch(component))
            launcher.wait_ready(component, started[-1], budget_s=240)
        nginx = components[-1]
        result = probe_completion(nginx.address, nginx.ports["listen"], timeout_s=30)
        if not result.ok:
            raise RuntimeError(f"no completion through nginx: {result.detail}")
        figures["deployment ready"] = time.perf_counter() - start
    finally:
        stop_start = time.perf_counter()
        for handle in reversed(started):
            launcher.stop(handle, grace_s=5)
        figures["deployment stop"] = time.perf_counter() - stop_start
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-docker-") as temp, private_dockerd() as daemon:
        daemon.import_stand_in()
        root = Path(temp)
        loaded = load_inventory(materialize("local-synthetic", root), REPO / "engines")
        plan = make_plan(loaded)
        # The process launcher hands children this environment (PATH, no credentials).
        settings = replace(
            Settings.from_environ(),
            workdir=root / "work",
            data_dir=REPO,
            docker_host=daemon.base_url,
        )
        components = components_for(plan, prepare(settings, loaded, plan).rendered)
        profiles, options, mounts = stand_in_setup(root)
        launchers: dict[str, Launcher] = {
            "process": ProcessLauncher(settings),
            "docker": DockerLauncher(
                settings,
                deployment="bench",
                profiles=profiles,
                options=options,
                extra_mounts=mounts,
            ),
        }
        results: dict[str, list[dict[str, float]]] = {name: [] for name in launchers}
        for _ in range(args.runs):
            for name, launcher in launchers.items():  # interleaved: load drifts hit both
                results[name].append(_one_run(launcher, components))
        print(f"local-synthetic, {args.runs} runs, median (min-max) seconds")
        for figure in results["process"][0]:
            row = []
            for name in launchers:
                values = [r[figure] for r in results[name]]
                row.append(
                    f"{name} {statistics.median(values):6.2f} ({min(values):.2f}-{max(values):.2f})"
                )
            print(f"  {figure:17s} " + "   ".join(row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
