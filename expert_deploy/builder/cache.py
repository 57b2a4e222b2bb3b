"""The content-addressed engine cache: ``<workdir>/engines/<key>/``.

The key is a SHA-256 over a canonical JSON record of everything that makes an engine
non-portable: the checkpoint (repository, resolved commit, file hashes), the precision recipe
with its calibration settings, the toolchain (versions and image), the builder (image actually
used, container / host / stand-in), the GPU compute capability, TP/PP, the build limits and
the argv lists themselves (which carry every plugin flag). Ports, hosts, GPU indices, replica
counts and the expert's id stay out, so identical experts share one engine.

Layout of one entry::

    <key>/engine/config.json, rank<N>.engine   what trtllm-build wrote
    <key>/timing.cache                         TensorRT's timing cache of the build
    <key>/manifest.json                        key inputs, argv, timings, output hashes, builder

An entry is built in ``.tmp-<key>-*`` beside it and renamed into place when complete, so a
directory named by a key is never half-written.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from expert_deploy.builder.recipes import Capability, Recipe, max_num_tokens
from expert_deploy.inventory.models import Expert
from expert_deploy.inventory.toolchain import Toolchain

BuilderKind = Literal["container", "host", "stand-in"]
MANIFEST = "manifest.json"
ENGINE_SUBDIR = "engine"
MANIFEST_FORMAT = 1
_CHUNK = 1 << 20


class CheckpointLike(Protocol):
    """What the cache needs of a fetched checkpoint (``expert_deploy.checkpoints``' type)."""

    @property
    def repo(self) -> str: ...
    @property
    def revision(self) -> str: ...
    @property
    def commit(self) -> str: ...
    @property
    def path(self) -> Path: ...
    @property
    def files(self) -> tuple[tuple[str, str], ...]: ...


@dataclass(frozen=True)
class Builder:
    """Who builds: the kind, and the image (or ``host``) that runs the commands."""

    kind: BuilderKind
    image: str


def key_inputs(
    *,
    expert: Expert,
    checkpoint: CheckpointLike,
    toolchain: Toolchain,
    builder: Builder,
    capability: Capability,
    recipe: Recipe,
    calib_dataset_sha256: str | None,
) -> dict[str, Any]:
    """The canonical record the key hashes; also stored in the manifest for people to read."""
    return {
        "format": MANIFEST_FORMAT,
        "checkpoint": {
            "repo": checkpoint.repo,
            "commit": checkpoint.commit,
            "files": sorted([name, digest] for name, digest in checkpoint.files),
        },
        "precision": {
            "quantization": expert.quantization,
            "kv_cache_dtype": expert.kv_cache_dtype,
            "checkpoint_dtype": recipe.checkpoint_dtype,
            "calib_size": recipe.calib_size,
            "calib_dataset_sha256": calib_dataset_sha256,
        },
        "toolchain": {
            "name": toolchain.name,
            "tensorrt_llm": toolchain.tensorrt_llm_version,
            "tensorrt": toolchain.tensorrt_version,
            "cuda": toolchain.cuda_version,
            "image": toolchain.triton_image,
        },
        "builder": {"kind": builder.kind, "image": builder.image},
        "compute_capability": f"{capability[0]}.{capability[1]}",
        "mapping": {"tp_size": expert.tp_size, "pp_size": expert.pp_size},
        "limits": {
            "max_batch_size": expert.max_batch_size,
            "max_input_len": expert.max_input_len,
            "max_seq_len": expert.max_seq_len,
            "max_num_tokens": max_num_tokens(expert),
        },
        "argv": recipe.argv_lists,
    }


def cache_key(inputs: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the canonical JSON of ``inputs``: sorted keys, no spaces, UTF-8."""
    canonical = json.dumps(inputs, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks.

    Raises:
        OSError: the file cannot be read.
    """
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_tree(root: Path) -> str:
    """One hash over every file under ``root`` (relative names and contents), e.g. calib data.

    Raises:
        OSError: a file cannot be read.
    """
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(root).as_posix()}\0{sha256_file(path)}\n".encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class OutputFile:
    name: str  # relative to the entry, POSIX separators
    size: int
    sha256: str


def hash_outputs(entry: Path, names: Iterable[str] | None = None) -> list[OutputFile]:
    """Every file of a finished entry except the manifest, with size and SHA-256.

    Raises:
        OSError: a file cannot be read.
    """
    paths = (
        [entry / n for n in names]
        if names is not None
        else sorted(p for p in entry.rglob("*") if p.is_file() and p.name != MANIFEST)
    )
    return [
        OutputFile(p.relative_to(entry).as_posix(), p.stat().st_size, sha256_file(p)) for p in paths
    ]


@dataclass(frozen=True)
class Manifest:
    """What ``manifest.json`` says about one cache entry."""

    key: str
    inputs: dict[str, Any]
    builder: Builder
    argv: list[list[str]]
    step_seconds: list[float]
    outputs: list[OutputFile]
    built_at: str
    tensorrt_llm_version: str | None
    #: Digest or local id of the image that ran the build (None for host builds).
    image_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "format": MANIFEST_FORMAT,
            "key": self.key,
            "builder": {
                "kind": self.builder.kind,
                "image": self.builder.image,
                "image_id": self.image_id,
            },
            "stand_in": self.builder.kind == "stand-in",
            "inputs": self.inputs,
            "argv": self.argv,
            "step_seconds": self.step_seconds,
            "outputs": [o.__dict__ for o in self.outputs],
            "built_at": self.built_at,
            "engine_tensorrt_llm_version": self.tensorrt_llm_version,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Manifest:
        """Raises: KeyError, TypeError or ValueError for a malformed manifest."""
        builder = data["builder"]
        return cls(
            key=str(data["key"]),
            inputs=dict(data["inputs"]),
            builder=Builder(builder["kind"], str(builder["image"])),
            argv=[list(map(str, a)) for a in data["argv"]],
            step_seconds=[float(s) for s in data["step_seconds"]],
            outputs=[
                OutputFile(str(o["name"]), int(o["size"]), str(o["sha256"]))
                for o in data["outputs"]
            ],
            built_at=str(data["built_at"]),
            tensorrt_llm_version=data.get("engine_tensorrt_llm_version"),
            image_id=builder.get("image_id"),
        )

    @property
    def engine_sha256(self) -> str:
        """One hash over the engine files (names and SHA-256s): which engine a server loads.

        TensorRT builds are not bit-reproducible (tactic timing), so two builds of one key
        may differ here; the key, not this hash, says whether an engine is up to date.
        """
        digest = hashlib.sha256()
        for output in sorted(self.outputs, key=lambda o: o.name):
            if output.name.startswith(f"{ENGINE_SUBDIR}/"):
                digest.update(f"{output.name}\0{output.sha256}\n".encode())
        return f"sha256:{digest.hexdigest()}"


def entry_dir(engines_root: Path, key: str) -> Path:
    return engines_root / key


def read_manifest(entry: Path) -> Manifest | None:
    """The manifest of an entry, or None when it is missing or unreadable (then: rebuild)."""
    try:
        return Manifest.from_json(json.loads((entry / MANIFEST).read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def verify_entry(entry: Path, key: str, *, hashes: bool = False) -> tuple[Manifest | None, str]:
    """Whether ``entry`` is a complete build for ``key``: (manifest, "") or (None, why not).

    The quick check (manifest key, every output present with its recorded size) keeps a
    no-op ``build`` fast; ``hashes`` re-reads every output, which takes minutes for a 70B engine.
    """
    manifest = read_manifest(entry)
    if manifest is None:
        return None, "no readable manifest"
    if manifest.key != key:
        return None, f"manifest is for key {manifest.key[:12]}"
    if not any(o.name.startswith(f"{ENGINE_SUBDIR}/") for o in manifest.outputs):
        return None, "manifest lists no engine files"
    for output in manifest.outputs:
        path = entry / output.name
        try:
            size = path.stat().st_size
        except OSError:
            return None, f"{output.name} is missing"
        if size != output.size:
            return None, f"{output.name} has {size} bytes, manifest says {output.size}"
        if hashes and sha256_file(path) != output.sha256:
            return None, f"{output.name} does not match its recorded SHA-256"
    return manifest, ""


def write_manifest(entry: Path, manifest: Manifest) -> None:
    """Write ``manifest.json`` (into a not yet published entry, so no partial state leaks)."""
    (entry / MANIFEST).write_text(
        json.dumps(manifest.to_json(), indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )


def publish(staging: Path, entry: Path) -> None:
    """Rename a finished staging directory to its key; replace a stale entry if one exists.

    Raises:
        OSError: the rename failed.
    """
    if entry.exists():
        # A stale or corrupt entry (verify_entry said no): move it aside, then drop it.
        trash = entry.with_name(f".old-{entry.name}-{os.getpid()}")
        entry.rename(trash)
        _remove_tree(trash)
    staging.rename(entry)


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
