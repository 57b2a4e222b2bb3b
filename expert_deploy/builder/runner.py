"""Run a recipe's steps, in the toolchain container (Docker SDK) or on the host (proc.run).

Both runners append every line to ``<workdir>/logs/build-<expert>.log`` and report progress;
a step that exits non-zero raises :class:`EngineBuildError` carrying a :class:`CommandError`
(argv, exit code, last lines, log path).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from expert_deploy import proc
from expert_deploy.builder.cache import Builder

# container.py imports docker inside its functions only, so this import stays cheap.
from expert_deploy.builder.container import BindMount, ContainerRun, run_container
from expert_deploy.builder.recipes import (
    CONTAINER_CALIB_DIR,
    CONTAINER_MODEL_DIR,
    CONTAINER_OUTPUT_ROOT,
    Recipe,
)
from expert_deploy.errors import CommandError, EngineBuildError, LaunchError

OnLine = Callable[[str], None]


@dataclass(frozen=True)
class BuildJob:
    """One engine to build: the recipe (with the paths its runner uses) and where it runs."""

    expert_id: str
    deployment: str
    key: str
    recipe: Recipe
    builder: Builder
    model_dir: Path
    staging: Path
    calib_dir: Path | None
    gpus: tuple[int, ...]
    log_path: Path
    memlock_bytes: int = -1


def container_run_for(job: BuildJob, argv: tuple[str, ...], *, with_gpus: bool) -> ContainerRun:
    """The container of one step: model read-only, staging read-write, the plan's GPUs."""
    mounts = [
        BindMount(job.model_dir, CONTAINER_MODEL_DIR, read_only=True),
        BindMount(job.staging, CONTAINER_OUTPUT_ROOT, read_only=False),
    ]
    if job.calib_dir is not None:
        mounts.append(BindMount(job.calib_dir, CONTAINER_CALIB_DIR, read_only=True))
    return ContainerRun(
        image=job.builder.image,
        argv=argv,
        mounts=tuple(mounts),
        working_dir=CONTAINER_OUTPUT_ROOT,
        labels={
            "expert-deploy.deployment": job.deployment,
            "expert-deploy.expert": job.expert_id,
            "expert-deploy.role": "engine-build",
            "expert-deploy.engine-key": job.key,
        },
        gpu_ids=job.gpus if with_gpus else None,
        memlock_bytes=job.memlock_bytes,
    )


def run_in_container(
    job: BuildJob, client: Any, *, with_gpus: bool, on_line: OnLine, timeout_s: float
) -> list[float]:
    """Run every step in its own container; the seconds each took.

    Raises:
        EngineBuildError: a step exited non-zero or Docker refused to run it.
    """
    seconds = []
    for step in job.recipe.steps:
        _log(job.log_path, f"$ {' '.join(step.argv)}")
        started = time.monotonic()
        try:
            run = container_run_for(job, step.argv, with_gpus=with_gpus)
            done = run_container(
                client, run, log_path=job.log_path, on_line=on_line, timeout_s=timeout_s
            )
        except LaunchError as error:
            raise EngineBuildError(job.expert_id, str(error)) from None
        seconds.append(time.monotonic() - started)
        if done.returncode != 0:
            cause = CommandError(list(step.argv), done.returncode, done.tail, job.log_path)
            raise EngineBuildError(job.expert_id, cause)
    return seconds


def run_on_host(job: BuildJob, *, on_line: OnLine, timeout_s: float) -> list[float]:
    """Run every step here with proc.run (``tensorrt_llm`` importable on this machine).

    Raises:
        EngineBuildError: a step exited non-zero, could not start or timed out.
    """
    # The child needs this process's whole environment (PATH, CUDA and MPI variables) plus
    # the GPUs the plan gives this expert; it is passed through, not read as settings.
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ",".join(map(str, job.gpus))}
    seconds = []
    for step in job.recipe.steps:
        _log(job.log_path, f"$ {' '.join(step.argv)}")
        on_line(f"{step.script} running")
        started = time.monotonic()
        try:
            done = proc.run(
                list(step.argv), timeout_s=timeout_s, cwd=job.staging, env=env, check=False
            )
        except CommandError as error:
            raise EngineBuildError(
                job.expert_id,
                CommandError(error.argv, error.returncode, error.output_tail, job.log_path),
            ) from None
        seconds.append(time.monotonic() - started)
        _log(job.log_path, done.output.rstrip("\n"))
        if done.returncode != 0:
            tail = "\n".join(done.output.splitlines()[-20:])
            cause = CommandError(list(step.argv), done.returncode, tail, job.log_path)
            raise EngineBuildError(job.expert_id, cause)
    return seconds


def _log(path: Path, text: str) -> None:
    with path.open("a", encoding="utf-8") as log:
        log.write(text + "\n")
