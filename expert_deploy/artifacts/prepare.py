"""``prepare``: every artifact a plan needs, in order, then the rendered files and the lock.

One entry point for ``build`` and ``up`` (and ``swap`` for one expert):

    fetch    checkpoints of experts with a model, pinned to the lock's commits
    engines  TensorRT-LLM engines of ``tensorrt_llm`` experts (content-addressed cache)
    router   fitted or imported by its inputs' hash (artifacts/router.py)
    lock     what all of it resolved to, compared with ``<inventory>.lock``
    render   Triton repositories, nginx.conf, gateway configs, Ansible variables

Each step reuses what its inputs say is already there, so a run with nothing changed only
reads manifests and hashes. Nothing is rendered and the lock is not written unless every
step succeeded; an expert that failed leaves the others' artifacts in their caches.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from expert_deploy.artifacts.lockfile import (
    Lock,
    LockedBuilder,
    LockedCheckpoint,
    LockedExpert,
    LockedRouter,
    LockError,
    check_writable,
    current_versions,
    differences,
    inventory_disagreements,
    lock_path,
    read_lock,
    refuse,
    router_inputs,
    toolchain_record,
    write_lock,
)
from expert_deploy.artifacts.router import RouterArtifact, prepare_router
from expert_deploy.errors import ExpertDeployError, UsageError
from expert_deploy.inventory.loader import LoadedInventory
from expert_deploy.inventory.messages import did_you_mean
from expert_deploy.inventory.models import Expert
from expert_deploy.plan.planner import Plan
from expert_deploy.render.deployment import RenderResult, render_deployment
from expert_deploy.settings import Settings

if TYPE_CHECKING:
    from expert_deploy.builder.cache import CheckpointLike
    from expert_deploy.builder.engines import BuildOptions, EngineResult
    from expert_deploy.checkpoints.checkpoint import Checkpoint
    from expert_deploy.checkpoints.progress import DownloadProgress

STEPS = ("fetch", "engines", "router", "render")


class PipelineProgress(Protocol):
    """What the pipeline reports: the step it is in, per-expert events, download bars."""

    def step(self, name: str) -> None: ...

    def update(self, expert_id: str, message: str) -> None: ...

    def downloads(self) -> DownloadProgress | None: ...


class _Silent:
    def step(self, name: str) -> None:
        """Drop the event."""

    def update(self, expert_id: str, message: str) -> None:
        """Drop the event."""

    def downloads(self) -> DownloadProgress | None:
        return None


@dataclass(frozen=True)
class ExpertOutcome:
    """One expert's line in the summary."""

    expert_id: str
    engine: str
    #: ``repo@commit`` of the checkpoint used; None for synthetic experts.
    checkpoint: str | None
    #: fetch: downloaded / cached / pinned / recorded / failed / none.
    checkpoint_status: str
    engine_key: str | None
    #: built / cached / failed / skipped (no engine needed).
    status: str
    seconds: float = 0.0
    message: str = ""


@dataclass(frozen=True)
class Prepared:
    """What ``prepare`` produced: the rendered files and the identities the state records."""

    rendered: RenderResult
    router: RouterArtifact
    #: expert id → engine or checkpoint hash, for experts that have one.
    artifact_hashes: Mapping[str, str] = field(default_factory=dict)
    experts: tuple[ExpertOutcome, ...] = ()
    step_seconds: Mapping[str, float] = field(default_factory=dict)
    lock_path: Path | None = None
    #: How the lock moved in this run (empty: it already said exactly this).
    lock_changes: tuple[str, ...] = ()


class PipelineError(ExpertDeployError):
    """Some experts failed; carries every expert's outcome so the summary can still be shown."""

    def __init__(
        self,
        outcomes: Sequence[ExpertOutcome],
        errors: Sequence[str],
        step_seconds: Mapping[str, float],
    ) -> None:
        self.outcomes = tuple(outcomes)
        self.step_seconds = dict(step_seconds)
        super().__init__(
            "\n".join(errors) + "\nnothing was rendered and the lock is unchanged; "
            "finished artifacts stay cached"
        )


def prepare(
    settings: Settings,
    loaded: LoadedInventory,
    plan: Plan,
    *,
    progress: PipelineProgress | None = None,
    experts: Sequence[str] | None = None,
    locked: bool = False,
    upgrade: bool = False,
    build_options: BuildOptions | None = None,
) -> Prepared:
    """Fetch, build, fit, check the lock, render; then write the lock if it moved.

    ``experts`` limits fetching and building to those ids; the others must already be
    fetched and built (their artifacts are looked up, not made) so the whole deployment
    can still be rendered. ``locked`` refuses any change to ``<inventory>.lock``;
    ``upgrade`` re-resolves branches instead of using the lock's commits.

    Raises:
        UsageError: unknown expert ids, or ``locked`` with ``upgrade``.
        LockError: ``locked`` and something disagrees with the lock (one line each), or the
            lock cannot be read or written.
        PipelineError: a checkpoint or engine failed (the others are kept).
        RouterError, RenderError: the router or the render failed.
    """
    from expert_deploy.builder.engines import BuildOptions, builder_for

    report = progress or _Silent()
    chosen = _select(loaded, experts)
    path = lock_path(loaded.path)
    if locked and upgrade:
        raise UsageError("--locked and --upgrade contradict each other; pass one of them")
    old = read_lock(path)
    if locked and old is None:
        raise LockError(f"--locked needs {path}; run `expert-deploy build` once to write it")
    if not locked:
        check_writable(path)
    options = build_options or BuildOptions()
    if options.docker_base_url is None and settings.docker_host is not None:
        options = dataclasses.replace(options, docker_base_url=settings.docker_host)
    builder = builder_for(options, loaded.toolchain)
    if locked and old is not None:
        refuse(
            path, inventory_disagreements(loaded, plan, old, settings.engines_dir, builder=builder)
        )
    pins = {} if upgrade or old is None else old.checkpoints
    steps: dict[str, float] = {}

    with _timed(steps, "fetch", report):
        fetched = _fetch(settings, loaded, chosen, pins, report)
    with _timed(steps, "engines", report):
        engines = _engines(
            settings,
            loaded=loaded,
            plan=plan,
            chosen=chosen,
            fetched=fetched,
            options=options,
            report=report,
        )
    outcomes = _outcomes(loaded, fetched, engines)
    failed = [o for o in outcomes if o.status == "failed"]
    if failed:
        errors = [*fetched.errors, *(e for r in engines.values() if (e := _error_of(r)))]
        raise PipelineError(
            outcomes, errors or [f"{o.expert_id}: {o.message}" for o in failed], steps
        )

    with _timed(steps, "router", report):
        router = prepare_router(loaded.inventory.router, settings.workdir)
    new = _lock_of(settings, loaded, fetched, engines, router, builder_kind=builder.kind)
    changes = differences(old, new) if old is not None else [f"{path.name} is new"]
    if locked and changes:
        refuse(path, changes)

    with _timed(steps, "render", report):
        rendered = render_deployment(
            loaded,
            plan,
            settings,
            router_dir=router.path,
            engine_dirs={i: r.engine_dir for i, r in engines.items() if r.engine_dir},
            tokenizer_dirs={i: c.path for i, c in fetched.by_expert.items()},
        )
    if not locked and (old is None or old.text() != new.text()):
        write_lock(path, new)
    return Prepared(
        rendered,
        router,
        _artifact_hashes(loaded, fetched, engines),
        outcomes,
        steps,
        path,
        tuple(changes),
    )


def _select(loaded: LoadedInventory, wanted: Sequence[str] | None) -> frozenset[str]:
    known = [e.id for e in loaded.inventory.experts]
    for name in wanted or ():
        if name not in known:
            raise UsageError(
                f"no expert {name!r} in the inventory{did_you_mean(name, known)}; "
                f"known: {', '.join(known)}"
            )
    return frozenset(wanted) if wanted else frozenset(known)


@contextmanager
def _timed(steps: dict[str, float], name: str, report: PipelineProgress) -> Iterator[None]:
    report.step(name)
    started = time.monotonic()
    try:
        yield
    finally:
        steps[name] = time.monotonic() - started


@dataclass
class _Fetched:
    """Checkpoints by ``repo@revision`` and by expert, and what went wrong."""

    by_ref: dict[str, CheckpointLike] = field(default_factory=dict)
    by_expert: dict[str, CheckpointLike] = field(default_factory=dict)
    status: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def _needs_checkpoint(expert: Expert) -> bool:
    return expert.model is not None and expert.engine != "synthetic"


def _ref(expert: Expert) -> str:
    assert expert.model is not None
    return f"{expert.model.repo}@{expert.model.revision}"


def _fetch(
    settings: Settings,
    loaded: LoadedInventory,
    chosen: frozenset[str],
    pins: Mapping[str, LockedCheckpoint],
    report: PipelineProgress,
) -> _Fetched:
    """Fetch the chosen experts' checkpoints (a locked ref at its locked commit); look up
    the others in checkpoints.json without downloading anything."""
    result = _Fetched()
    wanted = [e for e in loaded.inventory.experts if _needs_checkpoint(e)]
    to_fetch = [e for e in wanted if e.id in chosen]
    if to_fetch:
        from expert_deploy.checkpoints import FetchFailedError, fetch_all, write_record

        for expert in to_fetch:
            report.update(expert.id, "checkpoint")
        # A locked checkpoint already complete in the HF cache needs no Hub call at all.
        done = {e.id: c for e in to_fetch if (c := _locked_in_cache(settings, e, pins))}
        pinned = [_pinned(e, pins) for e in to_fetch if e.id not in done]
        try:
            if pinned:
                done |= fetch_all(pinned, settings, progress=report.downloads())
        except FetchFailedError as error:
            done |= error.completed
            result.errors.append(str(error))
            for eid in error.failures:
                result.status[eid] = "failed"
        fetched_now = []
        for expert in to_fetch:
            if expert.id not in done or expert.model is None:
                continue
            # Back under the inventory's revision: checkpoints.json and the engine step
            # look checkpoints up by the ``repo@revision`` the inventory writes.
            checkpoint = dataclasses.replace(done[expert.id], revision=expert.model.revision)
            fetched_now.append(checkpoint)
            result.by_ref[_ref(expert)] = checkpoint
            result.by_expert[expert.id] = checkpoint
            was_pinned = _ref(expert) in pins and checkpoint.commit == pins[_ref(expert)].commit
            result.status[expert.id] = (
                "downloaded" if not checkpoint.cached else "pinned" if was_pinned else "cached"
            )
        if fetched_now:
            write_record(settings.workdir, fetched_now)
    others = [e for e in wanted if e.id not in chosen]
    if others:
        from expert_deploy.builder.checkpoint_index import read_checkpoint_index

        index = read_checkpoint_index(settings.workdir, settings.hf_cache_dir)
        for expert in others:
            record = index.get(_ref(expert))
            if record is None:
                result.status[expert.id] = "failed"
                result.errors.append(
                    f"expert {expert.id}: {_ref(expert)} was never fetched; build it too "
                    "(drop --expert)"
                )
                continue
            result.by_ref[_ref(expert)] = record
            result.by_expert[expert.id] = record
            result.status[expert.id] = "recorded"
    return result


def _locked_in_cache(
    settings: Settings, expert: Expert, pins: Mapping[str, LockedCheckpoint]
) -> Checkpoint | None:
    """The locked checkpoint from the HF cache when every locked file is there with its
    locked hash (read from the blob link, no I/O on the weights) and it verifies; else None.
    """
    from expert_deploy.checkpoints.checkpoint import Checkpoint, file_hash
    from expert_deploy.checkpoints.verify import verify_checkpoint
    from expert_deploy.errors import CheckpointError

    model = expert.model
    pin = pins.get(_ref(expert))
    if model is None or pin is None or model.generate is not None:
        return None
    folder = settings.hf_cache_dir / f"models--{model.repo.replace('/', '--')}"
    snapshot = folder / "snapshots" / pin.commit
    try:
        if any(file_hash(snapshot / name) != digest for name, digest in pin.files.items()):
            return None
        verify_checkpoint(snapshot)
    except (OSError, CheckpointError):
        return None  # incomplete or damaged: the normal fetch repairs it
    files = tuple(sorted(pin.files.items()))
    return Checkpoint(model.repo, model.revision, pin.commit, snapshot, files, cached=True)


def _pinned(expert: Expert, pins: Mapping[str, LockedCheckpoint]) -> Expert:
    """``expert`` with its revision replaced by the locked commit, when the lock has one."""
    model = expert.model
    pin = pins.get(_ref(expert))
    if model is None or pin is None or model.generate is not None:
        return expert
    return expert.model_copy(update={"model": model.model_copy(update={"revision": pin.commit})})


def _engines(
    settings: Settings,
    *,
    loaded: LoadedInventory,
    plan: Plan,
    chosen: frozenset[str],
    fetched: _Fetched,
    options: BuildOptions,
    report: PipelineProgress,
) -> dict[str, EngineResult]:
    """Build the chosen tensorrt_llm experts; look the others' engines up in the cache."""
    from expert_deploy.builder.engines import build_engines

    trt = [
        e.id
        for e in loaded.inventory.experts
        if e.engine == "tensorrt_llm" and e.id in fetched.by_expert
    ]
    results: dict[str, EngineResult] = {}
    for subset, cache_only in (
        ([i for i in trt if i in chosen], False),
        ([i for i in trt if i not in chosen], True),
    ):
        if not subset:
            continue
        run = dataclasses.replace(options, experts=tuple(subset), cache_only=cache_only)
        for r in build_engines(
            loaded, plan, fetched.by_ref, settings, progress=report, options=run
        ):
            results[r.expert_id] = r
    return results


def _error_of(result: EngineResult) -> str | None:
    if result.status != "failed":
        return None
    return (
        str(result.error) if result.error is not None else f"{result.expert_id}: {result.message}"
    )


def _outcomes(
    loaded: LoadedInventory, fetched: _Fetched, engines: Mapping[str, EngineResult]
) -> tuple[ExpertOutcome, ...]:
    outcomes = []
    for expert in loaded.inventory.experts:
        checkpoint = fetched.by_expert.get(expert.id)
        label = f"{checkpoint.repo}@{checkpoint.commit[:12]}" if checkpoint else None
        fetch_status = fetched.status.get(expert.id, "none")
        built = engines.get(expert.id)
        if fetch_status == "failed":
            status, message = "failed", "checkpoint failed"
        elif built is not None:
            status, message = built.status, built.message.splitlines()[0] if built.message else ""
        elif expert.engine == "tensorrt_llm":
            status, message = "failed", "no checkpoint"
        else:
            status, message = "skipped", ""  # transformers and synthetic need no engine
        outcomes.append(
            ExpertOutcome(
                expert.id,
                expert.engine,
                label,
                fetch_status,
                built.key if built else None,
                status,
                built.seconds if built else 0.0,
                message,
            )
        )
    return tuple(outcomes)


def _lock_of(
    settings: Settings,
    loaded: LoadedInventory,
    fetched: _Fetched,
    engines: Mapping[str, EngineResult],
    router: RouterArtifact,
    *,
    builder_kind: str,
) -> Lock:
    from expert_deploy.builder.engines import calib_hash

    memo: dict[Path, str] = {}
    experts: dict[str, LockedExpert] = {}
    for expert in loaded.inventory.experts:
        built = engines.get(expert.id)
        checkpoint = _ref(expert) if expert.id in fetched.by_expert else None
        builder = None
        if built is not None and built.builder is not None:
            manifest_image = _builder_image(built, loaded, builder_kind)
            builder = LockedBuilder(built.builder, manifest_image, built.image_id)
        experts[expert.id] = LockedExpert(
            engine=expert.engine,
            checkpoint=checkpoint,
            calib_dataset_sha256=calib_hash(expert, memo) if built else None,
            engine_key=built.key if built else None,
            engine_sha256=built.engine_sha256 if built else None,
            builder=builder,
        )
    return Lock(
        inventory=loaded.inventory.name,
        toolchain=toolchain_record(loaded, settings.engines_dir),
        checkpoints={
            ref: LockedCheckpoint(c.commit, dict(c.files)) for ref, c in fetched.by_ref.items()
        },
        experts=experts,
        router=LockedRouter(router_inputs(loaded.inventory.router), router.content_hash),
        versions=current_versions(),
    )


def _builder_image(result: EngineResult, loaded: LoadedInventory, builder_kind: str) -> str:
    """The image recorded in the engine's manifest (the key's builder input)."""
    from expert_deploy.builder.cache import read_manifest

    manifest = read_manifest(result.engine_dir.parent) if result.engine_dir else None
    if manifest is not None:
        return manifest.builder.image
    return loaded.toolchain.triton_image if builder_kind == "container" else builder_kind


def _artifact_hashes(
    loaded: LoadedInventory, fetched: _Fetched, engines: Mapping[str, EngineResult]
) -> dict[str, str]:
    """Engine hash for tensorrt_llm experts, checkpoint commit for transformers experts."""
    hashes: dict[str, str] = {}
    for expert in loaded.inventory.experts:
        built = engines.get(expert.id)
        if built is not None and built.engine_sha256 is not None:
            hashes[expert.id] = built.engine_sha256
        elif expert.engine == "transformers" and expert.id in fetched.by_expert:
            hashes[expert.id] = f"git:{fetched.by_expert[expert.id].commit}"
    return hashes
