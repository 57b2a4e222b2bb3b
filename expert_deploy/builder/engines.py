"""``build_engines``: the engines step for every ``tensorrt_llm`` expert of a plan.

For each expert: find its fetched checkpoint, compute the recipe and the cache key, run the
pre-flight checks, and either reuse a verified cache entry or build one. Experts whose engines
would be identical share one key and one build. Builds whose GPU sets are disjoint run in
parallel (one lane per connected group of GPU sets); a failure fails that expert only.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import time
import uuid
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, Protocol

from expert_deploy.builder import preflight
from expert_deploy.builder.cache import (
    ENGINE_SUBDIR,
    Builder,
    CheckpointLike,
    Manifest,
    cache_key,
    hash_outputs,
    key_inputs,
    publish,
    sha256_tree,
    verify_entry,
    write_manifest,
)
from expert_deploy.builder.container import image_identity
from expert_deploy.builder.recipes import (
    CALIB_SIZE,
    CONTAINER_CALIB_DIR,
    CONTAINER_MODEL_DIR,
    CONTAINER_OUTPUT_ROOT,
    BuildPaths,
    Capability,
    Recipe,
    recipe,
)
from expert_deploy.builder.runner import BuildJob, run_in_container, run_on_host
from expert_deploy.errors import EngineBuildError, ExpertDeployError
from expert_deploy.inventory.checks import host_capability
from expert_deploy.inventory.loader import LoadedInventory
from expert_deploy.inventory.models import Expert
from expert_deploy.inventory.toolchain import Toolchain
from expert_deploy.plan.architectures import find_architecture
from expert_deploy.plan.planner import Plan
from expert_deploy.settings import Settings

Status = Literal["built", "cached", "failed", "skipped"]
RunnerChoice = Literal["auto", "container", "host"]


class BuildProgress(Protocol):
    """Receives one short line per event (phase changes and build log lines)."""

    def update(self, expert_id: str, message: str) -> None: ...


class NoProgress:
    def update(self, expert_id: str, message: str) -> None:
        """Drop the event."""


@dataclass(frozen=True)
class BuildOptions:
    """How to build; the defaults are what ``expert-deploy build`` does."""

    experts: tuple[str, ...] | None = None
    #: Run this stand-in image instead of the toolchain image; manifests say "stand-in".
    stand_in_image: str | None = None
    runner: RunnerChoice = "auto"
    docker_base_url: str | None = None
    #: Re-hash every cached output instead of trusting recorded sizes (slow for 70B).
    verify_hashes: bool = False
    step_timeout_s: float = 6 * 3600.0
    #: Only look engines up in the cache; a missing one is a failure, nothing is built
    #: (``build --expert X`` resolves the other experts this way to render them).
    cache_only: bool = False
    #: Locked-memory limit of build containers; -1 (unlimited) except in sandboxes whose
    #: daemon may not raise it.
    memlock_bytes: int = -1


@dataclass(frozen=True)
class EngineResult:
    expert_id: str
    status: Status
    key: str | None = None
    engine_dir: Path | None = None
    seconds: float = 0.0
    builder: str | None = None
    message: str = ""
    error: ExpertDeployError | None = field(default=None, compare=False)
    #: :attr:`Manifest.engine_sha256` of the engine served, and the image that built it.
    engine_sha256: str | None = None
    image_id: str | None = None


@dataclass(frozen=True)
class _Keyed:
    """An expert's recipe with the container paths, its cache key and the key's inputs."""

    recipe: Recipe
    key: str
    inputs: dict[str, Any]
    builder: Builder
    capability: Capability
    gpus: tuple[int, ...]


@dataclass(frozen=True)
class _Prepared:
    expert: Expert
    job: BuildJob
    entry: Path
    inputs: dict[str, Any]
    gpus: tuple[int, ...]


def build_engines(
    loaded: LoadedInventory,
    plan: Plan,
    checkpoints: Mapping[str, CheckpointLike],
    settings: Settings,
    *,
    progress: BuildProgress | None = None,
    options: BuildOptions | None = None,
) -> list[EngineResult]:
    """Build (or reuse) the engine of every ``tensorrt_llm`` expert; one result per expert.

    ``checkpoints`` maps ``repo@revision`` to a fetched checkpoint. Results come back in
    inventory order; failures are results with ``status == "failed"`` and the error.
    """
    progress = progress or NoProgress()
    options = options or BuildOptions()
    engines_root = settings.workdir / "engines"
    logs = settings.workdir / "logs"
    builder = _builder(options)
    calib_hashes: dict[Path, str] = {}
    results: dict[str, EngineResult] = {}
    pending: dict[str, list[_Prepared]] = {}  # key -> experts sharing it
    for expert in loaded.inventory.experts:
        if options.experts is not None and expert.id not in options.experts:
            continue
        outcome = _prepare(
            expert,
            loaded=loaded,
            plan=plan,
            checkpoints=checkpoints,
            settings=settings,
            options=options,
            builder=builder,
            calib_hashes=calib_hashes,
            engines_root=engines_root,
        )
        if isinstance(outcome, EngineResult):
            results[expert.id] = outcome
            continue
        cached = _cached(outcome, loaded, options)
        if cached is not None:
            results[expert.id] = cached
            progress.update(expert.id, cached.status)
        elif options.cache_only:
            results[expert.id] = _failed(
                expert,
                f"no engine for key {outcome.job.key[:12]} in the cache; build this expert too",
                key=outcome.job.key,
            )
        else:
            pending.setdefault(outcome.job.key, []).append(outcome)
    if pending:
        engines_root.mkdir(parents=True, exist_ok=True)
        logs.mkdir(parents=True, exist_ok=True)
        for built in _run_lanes(list(pending.values()), loaded, options, progress):
            results[built.expert_id] = built
    order = [e.id for e in loaded.inventory.experts]
    return sorted(results.values(), key=lambda r: order.index(r.expert_id))


def builder_for(options: BuildOptions, toolchain: Toolchain) -> Builder:
    """Who builds under ``options``: the stand-in image, this host, or the toolchain image."""
    builder = _builder(options)
    return Builder("container", toolchain.triton_image) if builder.kind == "container" else builder


def _builder(options: BuildOptions) -> Builder:
    if options.stand_in_image is not None:
        return Builder("stand-in", options.stand_in_image)
    host = options.runner == "host" or (
        options.runner == "auto" and importlib.util.find_spec("tensorrt_llm") is not None
    )
    return Builder("host", "host") if host else Builder("container", "")


def calib_dataset_of(expert: Expert) -> Path | None:
    """The calibration folder an expert's build reads: only quantized recipes calibrate."""
    return expert.calib_dataset if expert.quantization in CALIB_SIZE else None


def calib_hash(expert: Expert, memo: dict[Path, str] | None = None) -> str | None:
    """SHA-256 over the expert's calibration folder (None without one); ``memo`` shares work.

    Raises:
        EngineBuildError: the folder is missing or empty.
    """
    folder = calib_dataset_of(expert)
    if folder is None:
        return None
    if memo is not None and folder in memo:
        return memo[folder]
    if not folder.is_dir() or not any(p.is_file() for p in folder.rglob("*")):
        raise EngineBuildError(
            expert.id,
            f"calib_dataset {folder} is not a folder with files; point calib_dataset at a "
            "local dataset folder (a train split with a text column) or remove it",
        )
    digest = sha256_tree(folder)
    if memo is not None:
        memo[folder] = digest
    return digest


def engine_key(
    expert: Expert,
    *,
    loaded: LoadedInventory,
    plan: Plan,
    checkpoint: CheckpointLike,
    builder: Builder,
    calib_sha256: str | None,
) -> str | None:
    """The cache key ``build`` would use for ``expert``, or None when it cannot be built.

    Pure given its inputs, so ``plan`` can compare an inventory against its lockfile.
    """
    keyed = _keyed(
        expert,
        loaded=loaded,
        plan=plan,
        checkpoint=checkpoint,
        builder=builder,
        calib_sha256=calib_sha256,
    )
    return keyed.key if isinstance(keyed, _Keyed) else None


def _keyed(
    expert: Expert,
    *,
    loaded: LoadedInventory,
    plan: Plan,
    checkpoint: CheckpointLike,
    builder: Builder,
    calib_sha256: str | None,
) -> _Keyed | str:
    """Recipe and key of one expert, or why there is none (no placement / capability)."""
    server = next((s for s in plan.servers if s.expert_id == expert.id and s.replica == 0), None)
    host = loaded.inventory.host(server.host) if server else None
    capability = host_capability(host) if host else None
    if server is None or capability is None:
        return "no placement with a known GPU compute capability; check `expert-deploy plan`"
    toolchain = loaded.toolchain
    if builder.kind == "container":
        builder = Builder("container", toolchain.triton_image)
    calib = CONTAINER_CALIB_DIR if calib_sha256 is not None else None
    keyed = recipe(
        expert, toolchain, BuildPaths(CONTAINER_MODEL_DIR, CONTAINER_OUTPUT_ROOT, calib), capability
    )
    inputs = key_inputs(
        expert=expert,
        checkpoint=checkpoint,
        toolchain=toolchain,
        builder=builder,
        capability=capability,
        recipe=keyed,
        calib_dataset_sha256=calib_sha256,
    )
    return _Keyed(keyed, cache_key(inputs), inputs, builder, capability, server.gpus)


def _prepare(
    expert: Expert,
    *,
    loaded: LoadedInventory,
    plan: Plan,
    checkpoints: Mapping[str, CheckpointLike],
    settings: Settings,
    options: BuildOptions,
    builder: Builder,
    calib_hashes: dict[Path, str],
    engines_root: Path,
) -> _Prepared | EngineResult:
    """The job of one expert, or a result saying why there is none."""
    if expert.engine != "tensorrt_llm":
        return EngineResult(expert.id, "skipped", message=f"{expert.engine} experts need no engine")
    assert expert.model is not None  # the inventory checks require it
    ref = f"{expert.model.repo}@{expert.model.revision}"
    checkpoint = checkpoints.get(ref)
    if checkpoint is None:
        return _failed(
            expert, f"no checkpoint for {ref} in checkpoints.json; run expert-deploy fetch"
        )
    toolchain = loaded.toolchain
    calib_problems = preflight.check_calibration(expert, toolchain)
    if calib_problems:
        return _failed(expert, "; ".join(str(p) for p in calib_problems))
    try:
        calib_sha = calib_hash(expert, calib_hashes)
    except EngineBuildError as error:
        return _failed(expert, str(error.cause))
    keyed = _keyed(
        expert,
        loaded=loaded,
        plan=plan,
        checkpoint=checkpoint,
        builder=builder,
        calib_sha256=calib_sha,
    )
    if isinstance(keyed, str):
        return _failed(expert, keyed)
    problems = preflight.check_build(
        expert,
        toolchain,
        keyed.recipe,
        capability=keyed.capability,
        rope_type=_rope_type(expert, checkpoint, settings),
        gpus_assigned=len(keyed.gpus),
    )
    if problems:
        return _failed(expert, "; ".join(str(p) for p in problems), key=keyed.key)
    staging = engines_root / f".tmp-{keyed.key}-{uuid.uuid4().hex[:8]}"
    run_recipe = keyed.recipe
    calib_dir = calib_dataset_of(expert)
    if keyed.builder.kind == "host":
        host_calib = str(calib_dir) if calib_dir else None
        run_recipe = recipe(
            expert,
            toolchain,
            BuildPaths(str(checkpoint.path), str(staging), host_calib),
            keyed.capability,
        )
    job = BuildJob(
        expert_id=expert.id,
        deployment=loaded.inventory.name,
        key=keyed.key,
        recipe=run_recipe,
        builder=keyed.builder,
        model_dir=checkpoint.path,
        staging=staging,
        calib_dir=calib_dir,
        gpus=keyed.gpus,
        log_path=settings.workdir / "logs" / f"build-{expert.id}.log",
        memlock_bytes=options.memlock_bytes,
    )
    return _Prepared(expert, job, engines_root / keyed.key, keyed.inputs, keyed.gpus)


def _failed(expert: Expert, message: str, key: str | None = None) -> EngineResult:
    return EngineResult(
        expert.id, "failed", key=key, message=message, error=EngineBuildError(expert.id, message)
    )


def _rope_type(expert: Expert, checkpoint: CheckpointLike, settings: Settings) -> str | None:
    """Rope scaling of the fetched checkpoint's config.json, else of the known architecture."""
    config = checkpoint.path / "config.json"
    try:
        rope = json.loads(config.read_text(encoding="utf-8")).get("rope_scaling") or {}
        return rope.get("rope_type") or rope.get("type")
    except (OSError, ValueError, AttributeError):
        assert expert.model is not None
        arch = find_architecture(expert.model, settings.hf_home)
        return arch.rope_type if arch else None


def _cached(
    prepared: _Prepared, loaded: LoadedInventory, options: BuildOptions
) -> EngineResult | None:
    manifest, _why = verify_entry(prepared.entry, prepared.job.key, hashes=options.verify_hashes)
    if manifest is None:
        return None
    expert = prepared.expert
    problems = preflight.check_engine(
        expert, loaded.toolchain, prepared.entry / ENGINE_SUBDIR, gpus_assigned=len(prepared.gpus)
    )
    if problems:
        return _failed(expert, "; ".join(str(p) for p in problems), key=prepared.job.key)
    return EngineResult(
        expert.id,
        "cached",
        key=prepared.job.key,
        engine_dir=prepared.entry / ENGINE_SUBDIR,
        builder=manifest.builder.kind,
        engine_sha256=manifest.engine_sha256,
        image_id=manifest.image_id,
    )


def _run_lanes(
    groups: list[list[_Prepared]],
    loaded: LoadedInventory,
    options: BuildOptions,
    progress: BuildProgress,
) -> list[EngineResult]:
    """Build each key once on its first expert's GPUs; overlapping GPU sets share a lane."""
    lanes = _lanes(groups)
    needs_docker = any(g[0].job.builder.kind != "host" for g in groups)
    client = None
    if needs_docker:
        from expert_deploy.builder.container import open_client

        try:
            client = open_client(options.docker_base_url)
        except ExpertDeployError as error:
            return [_failed(p.expert, str(error)) for g in groups for p in g]
    try:
        with ThreadPoolExecutor(max_workers=len(lanes), thread_name_prefix="build") as pool:
            futures = [
                pool.submit(_run_lane, lane, loaded, options, progress, client) for lane in lanes
            ]
            return [r for f in futures for r in f.result()]
    finally:
        if client is not None:
            client.close()


def _lanes(groups: list[list[_Prepared]]) -> list[list[list[_Prepared]]]:
    """Groups whose GPU sets (host-local indices of the first expert) overlap go in one lane."""
    lanes: list[tuple[set[int], list[list[_Prepared]]]] = []
    for group in groups:
        gpus = set(group[0].gpus)
        touching = [lane for lane in lanes if lane[0] & gpus]
        merged_gpus, merged = set(gpus), [group]
        for lane in touching:
            merged_gpus |= lane[0]
            merged = lane[1] + merged
            lanes.remove(lane)
        lanes.append((merged_gpus, merged))
    return [lane[1] for lane in lanes]


def _run_lane(
    lane: list[list[_Prepared]],
    loaded: LoadedInventory,
    options: BuildOptions,
    progress: BuildProgress,
    client: Any,
) -> list[EngineResult]:
    results: list[EngineResult] = []
    for group in lane:
        first = group[0]
        try:
            seconds, manifest = _build_one(first, loaded, options, progress, client)
        except ExpertDeployError as error:
            progress.update(first.expert.id, "failed")
            results += [
                EngineResult(p.expert.id, "failed", key=p.job.key, message=str(error), error=error)
                for p in group
            ]
            continue
        for index, prepared in enumerate(group):
            results.append(
                EngineResult(
                    prepared.expert.id,
                    "built" if index == 0 else "cached",
                    key=prepared.job.key,
                    engine_dir=prepared.entry / ENGINE_SUBDIR,
                    seconds=seconds if index == 0 else 0.0,
                    builder=first.job.builder.kind,
                    message="" if index == 0 else f"same engine as {first.expert.id}",
                    engine_sha256=manifest.engine_sha256,
                    image_id=manifest.image_id,
                )
            )
    return results


def _build_one(
    prepared: _Prepared,
    loaded: LoadedInventory,
    options: BuildOptions,
    progress: BuildProgress,
    client: Any,
) -> tuple[float, Manifest]:
    """Build into a staging directory, check it, write the manifest, publish it.

    Raises:
        EngineBuildError: a step failed or the result fails its checks.
    """
    job, expert = prepared.job, prepared.expert
    started = time.monotonic()
    job.staging.mkdir(parents=True)
    job.log_path.write_text(f"# engine build {job.key} for expert {expert.id}\n", encoding="utf-8")

    def on_line(line: str) -> None:
        progress.update(expert.id, line[-120:])

    image_id = None
    try:
        if job.builder.kind == "host":
            step_seconds = run_on_host(job, on_line=on_line, timeout_s=options.step_timeout_s)
        else:
            with_gpus = job.builder.kind == "container" or _has_gpus()
            if not with_gpus:
                on_line("no GPU on this machine: stand-in container runs without a device request")
            step_seconds = run_in_container(
                job, client, with_gpus=with_gpus, on_line=on_line, timeout_s=options.step_timeout_s
            )
            image_id = image_identity(client, job.builder.image)
        # The TensorRT-LLM checkpoint is an intermediate (tens of GB for 70B): not cached.
        shutil.rmtree(job.staging / "checkpoint", ignore_errors=True)
        engine_dir = job.staging / ENGINE_SUBDIR
        problems = preflight.check_engine(
            expert, loaded.toolchain, engine_dir, gpus_assigned=len(prepared.gpus)
        )
        if problems:
            raise EngineBuildError(expert.id, "; ".join(str(p) for p in problems))
        version = json.loads((engine_dir / "config.json").read_text(encoding="utf-8")).get(
            "version"
        )
        manifest = Manifest(
            key=job.key,
            inputs=prepared.inputs,
            builder=job.builder,
            argv=job.recipe.argv_lists,
            step_seconds=[round(s, 3) for s in step_seconds],
            outputs=hash_outputs(job.staging),
            built_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            tensorrt_llm_version=version,
            image_id=image_id,
        )
        write_manifest(job.staging, manifest)
        publish(job.staging, prepared.entry)
    except BaseException:
        shutil.rmtree(job.staging, ignore_errors=True)
        raise
    progress.update(expert.id, "built")
    return time.monotonic() - started, manifest


def _has_gpus() -> bool:
    """Whether an NVIDIA driver is present (only consulted for stand-in runs)."""
    return Path("/dev/nvidiactl").exists()
