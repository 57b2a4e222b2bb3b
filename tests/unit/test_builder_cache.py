"""Cache key stability, sensitivity and insensitivity; manifest verification; publish."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from expert_deploy.builder.cache import (
    Builder,
    Manifest,
    cache_key,
    hash_outputs,
    key_inputs,
    publish,
    verify_entry,
    write_manifest,
)
from expert_deploy.builder.recipes import CONTAINER_PATHS, recipe
from expert_deploy.inventory import Expert, Toolchain, load_toolchain

ENGINES = Path(__file__).resolve().parents[2] / "engines"
CONTAINER = Builder("container", "img")


@dataclass(frozen=True)
class Ckpt:
    repo: str = "meta-llama/Meta-Llama-3-8B-Instruct"
    revision: str = "main"
    commit: str = "a" * 40
    path: Path = Path("/ckpt")
    files: tuple[tuple[str, str], ...] = (
        ("config.json", "1" * 64),
        ("model.safetensors", "2" * 64),
    )


BASE_EXPERT: dict[str, Any] = {
    "id": "e0",
    "cluster": 0,
    "model": {"repo": "meta-llama/Meta-Llama-3-8B-Instruct"},
    "quantization": "int4_awq",
}


@pytest.fixture(scope="module")
def toolchains() -> dict[str, Toolchain]:
    return {n: load_toolchain(n, ENGINES) for n in ("trtllm-0.11", "trtllm-1.2")}


def key_of(
    toolchains: dict[str, Toolchain],
    *,
    expert: dict[str, Any] | None = None,
    ckpt: Ckpt | None = None,
    toolchain: Toolchain | None = None,
    builder: Builder = CONTAINER,
    capability: tuple[int, int] = (9, 0),
    calib: str | None = None,
) -> str:
    e = Expert.model_validate({**BASE_EXPERT, **(expert or {})})
    tc = toolchain or toolchains["trtllm-0.11"]
    r = recipe(e, tc, CONTAINER_PATHS, capability)
    return cache_key(
        key_inputs(
            expert=e,
            checkpoint=ckpt or Ckpt(),
            toolchain=tc,
            builder=builder,
            capability=capability,
            recipe=r,
            calib_dataset_sha256=calib,
        )
    )


def test_same_inputs_same_key(toolchains: dict[str, Toolchain]) -> None:
    first = key_of(toolchains)
    assert first == key_of(toolchains)
    assert len(first) == 64
    # File order in the checkpoint record does not matter.
    reordered = Ckpt(files=tuple(reversed(Ckpt().files)))
    assert key_of(toolchains, ckpt=reordered) == first


def test_ports_replicas_placement_id_and_runtime_settings_leave_the_key_alone(
    toolchains: dict[str, Toolchain],
) -> None:
    first = key_of(toolchains)
    for change in (
        {"id": "other"},
        {"cluster": 5},
        {"replicas": 3},
        {"ports": {"http": 9999}},
        {"placement": {"host": "h", "gpus": [3]}},
        {"kv_cache_free_gpu_mem_fraction": 0.5},
        {"startup_budget_s": 10},
    ):
        assert key_of(toolchains, expert=change) == first, change
    # The checkpoint's path and revision name do not matter, only the resolved commit.
    assert key_of(toolchains, ckpt=Ckpt(path=Path("/elsewhere"), revision="v1")) == first


def test_every_engine_input_changes_the_key(toolchains: dict[str, Toolchain]) -> None:
    base = toolchains["trtllm-0.11"]
    keys = {
        "base": key_of(toolchains),
        "repo": key_of(toolchains, ckpt=Ckpt(repo="x/y")),
        "commit": key_of(toolchains, ckpt=Ckpt(commit="b" * 40)),
        "file hash": key_of(
            toolchains,
            ckpt=Ckpt(files=(("config.json", "1" * 64), ("model.safetensors", "3" * 64))),
        ),
        "quantization": key_of(toolchains, expert={"quantization": "bf16"}),
        "kv": key_of(toolchains, expert={"kv_cache_dtype": "int8"}),
        "calib data": key_of(toolchains, calib="c" * 64),
        "toolchain": key_of(toolchains, toolchain=toolchains["trtllm-1.2"]),
        "trt version": key_of(
            toolchains, toolchain=base.model_copy(update={"tensorrt_version": "10.1.1"})
        ),
        "image": key_of(toolchains, toolchain=base.model_copy(update={"triton_image": "other"})),
        "builder kind": key_of(toolchains, builder=Builder("stand-in", "img")),
        "builder image": key_of(toolchains, builder=Builder("container", "img2")),
        "capability": key_of(toolchains, capability=(8, 9)),
        "tp": key_of(toolchains, expert={"tp_size": 2}),
        "pp": key_of(toolchains, expert={"pp_size": 2}),
        "batch": key_of(toolchains, expert={"max_batch_size": 8}),
        "input": key_of(toolchains, expert={"max_input_len": 1000}),
        "seq": key_of(toolchains, expert={"max_seq_len": 8000}),
        "tokens": key_of(toolchains, expert={"max_num_tokens": 4096}),
        "plugin flags": key_of(
            toolchains, toolchain=base.model_copy(update={"plugin_dtype_auto": False})
        ),
        "script path": key_of(
            toolchains,
            toolchain=base.model_copy(
                update={"scripts": base.scripts.model_copy(update={"quantize": "/q.py"})}
            ),
        ),
    }
    assert len(set(keys.values())) == len(keys), keys


def _entry(tmp_path: Path, key: str) -> Path:
    staging = tmp_path / f".tmp-{key}"
    (staging / "engine").mkdir(parents=True)
    (staging / "engine" / "config.json").write_text('{"version": "0.11.0"}')
    (staging / "engine" / "rank0.engine").write_bytes(b"x" * 100)
    manifest = Manifest(
        key=key,
        inputs={"k": 1},
        builder=Builder("stand-in", "img"),
        argv=[["a"], ["b"]],
        step_seconds=[0.1, 0.2],
        outputs=hash_outputs(staging),
        built_at="now",
        tensorrt_llm_version="0.11.0",
    )
    write_manifest(staging, manifest)
    entry = tmp_path / key
    publish(staging, entry)
    return entry


def test_manifest_round_trip_and_verification(tmp_path: Path) -> None:
    entry = _entry(tmp_path, "k1")
    assert not list(tmp_path.glob(".tmp-*"))
    manifest, why = verify_entry(entry, "k1", hashes=True)
    assert why == ""
    assert manifest is not None
    assert manifest.builder.kind == "stand-in"
    assert [o.name for o in manifest.outputs] == ["engine/config.json", "engine/rank0.engine"]
    assert verify_entry(entry, "k2")[1] == "manifest is for key k1"


def test_verification_catches_missing_truncated_and_altered_files(tmp_path: Path) -> None:
    entry = _entry(tmp_path, "k1")
    (entry / "engine" / "rank0.engine").write_bytes(b"y" * 100)
    assert verify_entry(entry, "k1")[0] is not None  # the quick check trusts sizes
    assert "SHA-256" in verify_entry(entry, "k1", hashes=True)[1]
    (entry / "engine" / "rank0.engine").write_bytes(b"y" * 10)
    assert "10 bytes" in verify_entry(entry, "k1")[1]
    (entry / "engine" / "rank0.engine").unlink()
    assert "missing" in verify_entry(entry, "k1")[1]
    (entry / "manifest.json").write_text("{")
    assert verify_entry(entry, "k1") == (None, "no readable manifest")


def test_publish_replaces_a_stale_entry(tmp_path: Path) -> None:
    stale = tmp_path / "k1"
    stale.mkdir()
    (stale / "junk").write_text("old")
    entry = _entry(tmp_path, "k1")
    assert not (entry / "junk").exists()
    assert verify_entry(entry, "k1")[0] is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k1"]


def test_manifest_dataclass_replace_keeps_json_shape(tmp_path: Path) -> None:
    entry = _entry(tmp_path, "k1")
    manifest, _ = verify_entry(entry, "k1")
    assert manifest is not None
    again = Manifest.from_json(replace(manifest, built_at="later").to_json())
    assert again.built_at == "later"
    assert again.to_json()["stand_in"] is True
