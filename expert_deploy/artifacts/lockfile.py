"""``<inventory>.lock``: what an inventory resolved to, so a lab can be rebuilt bit for bit.

Written by ``build`` and ``up`` next to the inventory (``dgx.yaml`` → ``dgx.lock``), sorted
JSON, meant to be committed. It holds resolved identities, never ranges or secrets:

* per ``repo@revision``: the commit it resolved to and the Hub hash of every file;
* per expert: the checkpoint it uses, the calibration data hash, the engine cache key and the
  hash of the engine files, and who built it (builder kind, image, image digest or id);
* the toolchain file's hash, the router's inputs and content hash, and the Python and package
  versions that shape artifacts (a router fitted by another scikit-learn may differ).

Without a flag a build pins every ``repo@revision`` the lock knows to its locked commit and
refreshes the rest; ``--upgrade`` re-resolves everything; ``--locked`` refuses to change the
lock at all. Engine hashes are recorded but never compared: TensorRT picks kernels by timing,
so two builds of one key need not be byte-identical (the key says whether one is current).
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from expert_deploy.atomic_file import write_text_atomically
from expert_deploy.builder.cache import sha256_file
from expert_deploy.errors import ExpertDeployError
from expert_deploy.inventory.models import ArtifactSource, CbtmSource, FitSource, RouterSpec

if TYPE_CHECKING:
    from expert_deploy.builder.cache import Builder
    from expert_deploy.inventory.loader import LoadedInventory
    from expert_deploy.plan.planner import Plan

LOCK_VERSION = 1
#: Distributions whose version changes what an artifact contains (router fit, downloads).
PACKAGES = ("expert-deploy", "huggingface-hub", "numpy", "scikit-learn", "scipy")
_COMMENT = "Written by expert-deploy; commit it. `expert-deploy build --upgrade` moves it."
UPGRADE_HINT = "`expert-deploy build --upgrade` moves the lock"


class LockError(ExpertDeployError):
    """The lockfile is unreadable, unwritable, or disagrees with the inventory or artifacts."""


@dataclass(frozen=True)
class LockedCheckpoint:
    commit: str
    #: file name → Hub hash (sha256 for LFS files, git blob id for small ones).
    files: Mapping[str, str]


@dataclass(frozen=True)
class LockedBuilder:
    kind: str
    image: str
    #: Registry digest, or the local image id when the image was never pulled.
    image_id: str | None = None


@dataclass(frozen=True)
class LockedExpert:
    engine: str
    #: ``repo@revision`` as the inventory writes it; a key of :attr:`Lock.checkpoints`.
    checkpoint: str | None = None
    calib_dataset_sha256: str | None = None
    engine_key: str | None = None
    engine_sha256: str | None = None
    builder: LockedBuilder | None = None


@dataclass(frozen=True)
class LockedToolchain:
    name: str
    file_sha256: str
    image: str
    tensorrt_llm: str


@dataclass(frozen=True)
class LockedRouter:
    #: The fit/import inputs (file hashes, k, scaler, seed): what ``plan`` can check cheaply.
    inputs: Mapping[str, Any]
    content_hash: str


@dataclass(frozen=True)
class Lock:
    inventory: str
    toolchain: LockedToolchain
    checkpoints: Mapping[str, LockedCheckpoint]
    experts: Mapping[str, LockedExpert]
    router: LockedRouter
    versions: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "_comment": _COMMENT,
            "lock_version": LOCK_VERSION,
            "inventory": self.inventory,
            "toolchain": _plain(self.toolchain),
            "checkpoints": {
                ref: {"commit": c.commit, "files": dict(c.files)}
                for ref, c in self.checkpoints.items()
            },
            "experts": {eid: _plain(e) for eid, e in self.experts.items()},
            "router": {
                "inputs": dict(self.router.inputs),
                "content_hash": self.router.content_hash,
            },
            "versions": dict(self.versions),
        }

    def text(self) -> str:
        """The file's bytes as text: sorted keys, two-space indent, trailing newline."""
        return json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Lock:
        """Raises: KeyError, TypeError or ValueError for a malformed document."""
        if data.get("lock_version") != LOCK_VERSION:
            raise ValueError(f"lock_version is {data.get('lock_version')!r}, not {LOCK_VERSION}")
        experts = {}
        for eid, e in dict(data["experts"]).items():
            builder = e.get("builder")
            experts[str(eid)] = LockedExpert(
                engine=str(e["engine"]),
                checkpoint=e.get("checkpoint"),
                calib_dataset_sha256=e.get("calib_dataset_sha256"),
                engine_key=e.get("engine_key"),
                engine_sha256=e.get("engine_sha256"),
                builder=LockedBuilder(**builder) if builder else None,
            )
        return cls(
            inventory=str(data["inventory"]),
            toolchain=LockedToolchain(**data["toolchain"]),
            checkpoints={
                str(ref): LockedCheckpoint(str(c["commit"]), dict(c["files"]))
                for ref, c in dict(data["checkpoints"]).items()
            },
            experts=experts,
            router=LockedRouter(
                dict(data["router"]["inputs"]), str(data["router"]["content_hash"])
            ),
            versions=dict(data.get("versions") or {}),
        )


def refuse(path: Path, lines: list[str]) -> None:
    """Raise one error with a line per disagreement, each naming the lock and the way out.

    Raises:
        LockError: when ``lines`` is not empty.
    """
    if lines:
        raise LockError("\n".join(f"{path.name}: {line}; {UPGRADE_HINT}" for line in lines))


def _plain(value: Any) -> Any:
    """A dataclass as a JSON-able dict (nested dataclasses too; None values kept)."""
    if hasattr(value, "__dataclass_fields__"):
        return {name: _plain(getattr(value, name)) for name in value.__dataclass_fields__}
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def lock_path(inventory_path: Path) -> Path:
    """``dgx.yaml`` → ``dgx.lock`` in the same folder."""
    return inventory_path.with_suffix(".lock")


def read_lock(path: Path) -> Lock | None:
    """The lock at ``path``, or None when there is none.

    Raises:
        LockError: the file exists but is not a lock this version understands.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as error:
        raise LockError(f"cannot read {path} ({error}); check its permissions") from None
    try:
        return Lock.from_json(json.loads(text))
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise LockError(
            f"{path} is not a valid lockfile ({error}); restore it from version control, or "
            "delete it and run `expert-deploy build --upgrade` to write a new one"
        ) from None


def check_writable(path: Path) -> None:
    """Refuse early (before hours of work) when the lock could not be written afterwards.

    Raises:
        LockError: the folder is not writable.
    """
    folder = path.parent
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise LockError(
            f"cannot write {path}: {folder} is not writable; copy the inventory to a "
            "writable folder and pass that path with --inventory"
        )


def write_lock(path: Path, lock: Lock) -> None:
    """Replace ``path`` atomically with ``lock`` (a reader never sees half a file).

    Raises:
        LockError: the folder cannot be written.
    """
    try:
        write_text_atomically(path, lock.text())
    except OSError as error:
        raise LockError(f"cannot write {path} ({error}); check the folder's permissions") from None


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file.

    Raises:
        LockError: the file cannot be read.
    """
    try:
        return sha256_file(path)
    except OSError as error:
        raise LockError(f"cannot read {path} to hash it ({error})") from None


def toolchain_record(loaded: LoadedInventory, engines_dir: Path) -> LockedToolchain:
    """The toolchain as the lock records it: its file's hash pins every flag and version."""
    toolchain = loaded.toolchain
    return LockedToolchain(
        name=toolchain.name,
        file_sha256=file_sha256(engines_dir / f"{toolchain.name}.yaml"),
        image=toolchain.triton_image,
        tensorrt_llm=toolchain.tensorrt_llm_version,
    )


def router_inputs(spec: RouterSpec) -> dict[str, Any]:
    """A readable record of what the router is made from (files by hash, never by path).

    Raises:
        LockError: a corpus or pickle file cannot be read.
    """
    source = spec.source
    record: dict[str, Any] = {"k": spec.k, "scaler": spec.scaler}
    if isinstance(source, FitSource):
        record |= {
            "kind": "fit",
            "corpus_sha256": file_sha256(source.corpus),
            "text_field": source.text_field,
            "seed": source.seed,
        }
    elif isinstance(source, CbtmSource):
        record |= {
            "kind": "cbtm",
            "tfidf_sha256": file_sha256(source.tfidf),
            "kmeans_sha256": file_sha256(source.kmeans),
        }
    else:
        assert isinstance(source, ArtifactSource)
        record |= {
            "kind": "artifact",
            "router_json_sha256": file_sha256(source.path / "router.json"),
        }
    return record


def current_versions() -> dict[str, str]:
    """Python and the installed versions of :data:`PACKAGES` (absent ones are left out)."""
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def differences(old: Lock, new: Lock) -> list[str]:
    """One line per way ``new`` (what this run resolved) departs from ``old`` (the file).

    Engine hashes and package versions are not compared (see the module docstring); a version
    change is named where it can explain a different router.
    """
    lines: list[str] = []
    if old.toolchain != new.toolchain:
        lines.append(
            f"toolchain: {_describe(old.toolchain)} in the lock, {_describe(new.toolchain)} now"
        )
    for ref in sorted(old.checkpoints.keys() | new.checkpoints.keys()):
        before, after = old.checkpoints.get(ref), new.checkpoints.get(ref)
        if before is None or after is None:
            if before is None:
                lines.append(f"checkpoint {ref}: not in the lock")
            continue
        if before.commit != after.commit:
            lines.append(f"checkpoint {ref}: locked at {before.commit}, resolved to {after.commit}")
        elif before.files != after.files:
            changed = sorted(
                n for n in before.files.keys() | after.files.keys()
                if before.files.get(n) != after.files.get(n)
            )  # fmt: skip
            lines.append(
                f"checkpoint {ref}@{after.commit[:12]}: files differ ({', '.join(changed)})"
            )
    for eid in sorted(old.experts.keys() | new.experts.keys()):
        lines += _expert_differences(eid, old.experts.get(eid), new.experts.get(eid))
    if old.router.inputs != new.router.inputs:
        lines.append(
            f"router: inputs {_short(old.router.inputs)} locked, now {_short(new.router.inputs)}"
        )
    elif old.router.content_hash != new.router.content_hash:
        lines.append(
            f"router: locked hash {old.router.content_hash}, this build made "
            f"{new.router.content_hash}{_version_note(old, new)}"
        )
    return lines


def _expert_differences(
    eid: str, before: LockedExpert | None, after: LockedExpert | None
) -> list[str]:
    if before is None:
        return [f"expert {eid}: not in the lock"]
    if after is None:
        return [f"expert {eid}: in the lock but not in the inventory"]
    lines = []
    for name in ("engine", "checkpoint", "calib_dataset_sha256", "engine_key"):
        was, now = getattr(before, name), getattr(after, name)
        if was != now:
            lines.append(f"expert {eid}: {name} is {_short(was)} in the lock, {_short(now)} now")
    if before.builder and after.builder:
        if (before.builder.kind, before.builder.image) != (after.builder.kind, after.builder.image):
            lines.append(
                f"expert {eid}: built by {before.builder.kind} {before.builder.image} in the "
                f"lock, {after.builder.kind} {after.builder.image} now"
            )
        elif (
            before.builder.image_id
            and after.builder.image_id
            and before.builder.image_id != after.builder.image_id
        ):
            lines.append(
                f"expert {eid}: image {after.builder.image} is {after.builder.image_id} here, "
                f"the lock has {before.builder.image_id} (docker pull the locked digest)"
            )
    return lines


def _describe(toolchain: LockedToolchain) -> str:
    return f"{toolchain.name} (file sha256 {toolchain.file_sha256[:12]})"


def _short(value: Any) -> str:
    if isinstance(value, str) and len(value) == 64:
        return value[:12]
    if isinstance(value, Mapping):
        return json.dumps({k: _short(v) for k, v in sorted(value.items())}, sort_keys=True)
    return str(value)


def _version_note(old: Lock, new: Lock) -> str:
    changed = [
        f"{name} {old.versions[name]} → {new.versions.get(name, 'absent')}"
        for name in sorted(old.versions)
        if old.versions[name] != new.versions.get(name)
    ]
    return f" (versions changed since the lock: {', '.join(changed)})" if changed else ""


def inventory_disagreements(
    loaded: LoadedInventory,
    plan: Plan,
    lock: Lock,
    engines_dir: Path,
    *,
    builder: Builder | None = None,
) -> list[str]:
    """Where the inventory asks for something other than what the lock recorded.

    Checked before any work (and by ``plan``): toolchain file, the set of experts, each
    expert's engine kind and ``repo@revision``, its engine key recomputed from the locked
    checkpoint (so any build setting that changed shows), and the router's inputs.
    ``builder`` is who would build now; None means the builder the lock recorded.

    Raises:
        LockError: a file the check must hash cannot be read.
    """
    from expert_deploy.builder.checkpoint_index import CheckpointRecord
    from expert_deploy.builder.engines import calib_hash, engine_key
    from expert_deploy.errors import EngineBuildError

    lines: list[str] = []
    toolchain = toolchain_record(loaded, engines_dir)
    if toolchain != lock.toolchain:
        lines.append(
            f"toolchain: {_describe(toolchain)} in the inventory, {_describe(lock.toolchain)} "
            "in the lock"
        )
    experts = {e.id: e for e in loaded.inventory.experts}
    for eid in sorted(lock.experts.keys() - experts.keys()):
        lines.append(f"expert {eid}: in the lock but no longer in the inventory")
    memo: dict[Path, str] = {}
    for expert in loaded.inventory.experts:
        locked = lock.experts.get(expert.id)
        if locked is None:
            lines.append(f"expert {expert.id}: in the inventory but not in the lock")
            continue
        ref = f"{expert.model.repo}@{expert.model.revision}" if expert.model else None
        if locked.engine != expert.engine:
            lines.append(
                f"expert {expert.id}: engine is {expert.engine} in the inventory, "
                f"{locked.engine} in the lock"
            )
            continue
        if expert.engine == "synthetic":
            continue
        if ref != locked.checkpoint:
            lines.append(
                f"expert {expert.id}: model is {ref} in the inventory, {locked.checkpoint} "
                "in the lock"
            )
            continue
        if expert.engine != "tensorrt_llm" or locked.engine_key is None or ref is None:
            continue
        assert expert.model is not None
        pinned = lock.checkpoints.get(ref)
        who = builder or _builder_of(locked)
        if pinned is None or who is None:
            lines.append(f"expert {expert.id}: the lock lacks its checkpoint or builder")
            continue
        try:
            calib = calib_hash(expert, memo)
        except EngineBuildError as error:
            lines.append(str(error.cause))
            continue
        record = CheckpointRecord(
            expert.model.repo,
            expert.model.revision,
            pinned.commit,
            Path(),
            tuple(sorted(pinned.files.items())),
        )
        key = engine_key(
            expert, loaded=loaded, plan=plan, checkpoint=record, builder=who, calib_sha256=calib
        )
        if key != locked.engine_key:
            why = "calibration data" if calib != locked.calib_dataset_sha256 else "build settings"
            lines.append(
                f"expert {expert.id}: {why} changed since the lock (engine key "
                f"{locked.engine_key[:12]} locked, {(key or 'none')[:12]} now)"
            )
    inputs = router_inputs(loaded.inventory.router)
    if inputs != dict(lock.router.inputs):
        lines.append(
            f"router: inputs are {_short(inputs)} in the inventory, {_short(lock.router.inputs)} "
            "in the lock"
        )
    return lines


def _builder_of(locked: LockedExpert) -> Builder | None:
    from expert_deploy.builder.cache import Builder, BuilderKind

    if locked.builder is None or locked.builder.kind not in ("container", "host", "stand-in"):
        return None
    return Builder(cast(BuilderKind, locked.builder.kind), locked.builder.image)
