"""Engine builds through a real private dockerd with the busybox stand-in image.

TensorRT-LLM cannot run here, so the container path runs stand-ins named like the real tools:
they record their argv and write marked files. These tests check what expert-deploy does
around a build (argv, mounts, logs, failures, cache, manifest) and never claim an engine.
"""

from __future__ import annotations

import json
import resource
from pathlib import Path
from typing import Any

import pytest
import yaml

from expert_deploy.builder.checkpoint_index import CheckpointRecord, read_checkpoint_index
from expert_deploy.builder.engines import BuildOptions, EngineResult, build_engines
from expert_deploy.errors import CommandError, EngineBuildError
from expert_deploy.inventory import LoadedInventory, load_inventory
from expert_deploy.plan.planner import make_plan
from expert_deploy.settings import Settings
from tests.dockerd import Dockerd

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
# This sandbox's dockerd lacks CAP_SYS_RESOURCE, so runc cannot set memlock to unlimited;
# the tests keep the host's hard limit (the unit tests check production asks for -1).
MEMLOCK = resource.getrlimit(resource.RLIMIT_MEMLOCK)[1]
MODEL = "meta-llama/Meta-Llama-3-8B-Instruct"


def _inventory(tmp_path: Path, **defaults: Any) -> LoadedInventory:
    data = {
        "name": "t",
        "toolchain": "trtllm-0.11",
        "hosts": [
            {"name": "h1", "address": "127.0.0.1", "gpus": {"count": 8, "model": "H100-SXM-80GB"}}
        ],
        "defaults": {"engine": "tensorrt_llm", "quantization": "int4_awq", **defaults},
        "experts": [
            {"id": "e0", "cluster": 0, "model": {"repo": MODEL}},
            {"id": "e1", "cluster": 1, "model": {"repo": MODEL}, "max_batch_size": 8},
            {"id": "syn", "cluster": 2, "engine": "synthetic", "quantization": "bf16"},
        ],
        "router": {"source": {"kind": "artifact", "path": "router"}, "k": 3},
    }
    path = tmp_path / "inv.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_inventory(path, REPO / "engines")


def _checkpoint(tmp_path: Path) -> dict[str, CheckpointRecord]:
    model = tmp_path / "model"
    model.mkdir(exist_ok=True)
    (model / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
    index = {
        f"{MODEL}@main": {
            "commit": "c" * 40,
            "path": str(model),
            "files": {"config.json": "1" * 64},
        }
    }
    workdir = tmp_path / "work"
    workdir.mkdir(exist_ok=True)
    (workdir / "checkpoints.json").write_text(json.dumps(index))
    return read_checkpoint_index(workdir, tmp_path / "hub")


def _build(tmp_path: Path, dockerd: Dockerd, **options: Any) -> list[EngineResult]:
    loaded = _inventory(tmp_path)
    settings = Settings(workdir=tmp_path / "work", data_dir=REPO)
    return build_engines(
        loaded,
        make_plan(loaded),
        _checkpoint(tmp_path),
        settings,
        options=BuildOptions(
            stand_in_image="expert-deploy/stand-in:test",
            docker_base_url=dockerd.base_url,
            memlock_bytes=MEMLOCK,
            **options,
        ),
    )


def test_stand_in_container_build_records_the_builders_argv_then_hits_the_cache(
    tmp_path: Path, dockerd: Dockerd
) -> None:
    first = {r.expert_id: r for r in _build(tmp_path, dockerd)}
    assert first["syn"].status == "skipped"
    assert first["e0"].status == "built", first["e0"].message
    assert first["e1"].status == "built", first["e1"].message
    assert first["e0"].key != first["e1"].key  # max_batch_size differs
    for expert_id in ("e0", "e1"):
        result = first[expert_id]
        assert result.engine_dir is not None
        entry = result.engine_dir.parent
        manifest = json.loads((entry / "manifest.json").read_text())
        builder = manifest["builder"]
        assert (builder["kind"], builder["image"]) == ("stand-in", "expert-deploy/stand-in:test")
        # An imported image has no registry digest: its local id identifies it.
        assert builder["image_id"].startswith("sha256:")
        assert result.image_id == builder["image_id"]
        assert result.engine_sha256 and result.engine_sha256.startswith("sha256:")
        assert manifest["stand_in"] is True
        # What the stand-in trtllm-build received is exactly what the builder emitted.
        recorded = (result.engine_dir / "argv.txt").read_text().splitlines()
        assert recorded == manifest["argv"][1]
        assert recorded[0] == "trtllm-build" and "--use_paged_context_fmha" in recorded
        assert json.loads((result.engine_dir / "config.json").read_text())["stand_in"] is True
        assert not (entry / "checkpoint").exists()  # the intermediate is not cached
        assert {o["name"] for o in manifest["outputs"]} >= {
            "engine/config.json",
            "engine/rank0.engine",
            "engine/argv.txt",
        }
        log = (tmp_path / "work" / "logs" / f"build-{expert_id}.log").read_text()
        assert "stand-in: converted checkpoint" in log and "[TRT] done" in log
        assert "$ python3 /app/tensorrt_llm/examples/quantization/quantize.py" in log
    engines = tmp_path / "work" / "engines"
    assert not [p for p in engines.iterdir() if p.name.startswith(".")]

    again = {r.expert_id: r for r in _build(tmp_path, dockerd)}
    assert again["e0"].status == "cached" and again["e0"].key == first["e0"].key
    assert again["e1"].status == "cached"
    hashed = _build(tmp_path, dockerd, verify_hashes=True)
    assert [r.status for r in hashed] == ["cached", "cached", "skipped"]


def test_quantize_step_argv_reaches_the_container_unchanged(
    tmp_path: Path, dockerd: Dockerd
) -> None:
    (result, *_) = _build(tmp_path, dockerd, experts=("e0",))
    assert result.status == "built", result.message
    assert result.engine_dir is not None
    manifest = json.loads((result.engine_dir.parent / "manifest.json").read_text())
    quantize = manifest["argv"][0]
    assert quantize[:2] == ["python3", "/app/tensorrt_llm/examples/quantization/quantize.py"]
    assert quantize[quantize.index("--qformat") + 1] == "int4_awq"


def test_identical_experts_share_one_build(tmp_path: Path, dockerd: Dockerd) -> None:
    loaded = _inventory(tmp_path)
    data = yaml.safe_load((tmp_path / "inv.yaml").read_text())
    data["experts"][1].pop("max_batch_size")
    (tmp_path / "inv.yaml").write_text(yaml.safe_dump(data))
    loaded = load_inventory(tmp_path / "inv.yaml", REPO / "engines")
    results = build_engines(
        loaded,
        make_plan(loaded),
        _checkpoint(tmp_path),
        Settings(workdir=tmp_path / "work", data_dir=REPO),
        options=BuildOptions(
            stand_in_image="expert-deploy/stand-in:test",
            docker_base_url=dockerd.base_url,
            memlock_bytes=MEMLOCK,
        ),
    )
    assert [r.status for r in results] == ["built", "cached", "skipped"]
    assert results[0].key == results[1].key
    assert "same engine as e0" in results[1].message


def test_failing_stand_in_raises_engine_build_error_with_log_and_tail(
    tmp_path: Path, dockerd: Dockerd
) -> None:
    _checkpoint(tmp_path)
    (tmp_path / "model" / "STAND_IN_FAIL").write_text("")
    results = _build(tmp_path, dockerd, experts=("e0",))
    (result,) = results
    assert result.status == "failed"
    error = result.error
    assert isinstance(error, EngineBuildError)
    assert error.expert == "e0"
    cause = error.cause
    assert isinstance(cause, CommandError)
    assert cause.returncode == 3
    assert cause.argv[:2] == ["python3", "/app/tensorrt_llm/examples/quantization/quantize.py"]
    assert "stand-in failure requested" in cause.output_tail
    assert cause.log_path == tmp_path / "work" / "logs" / "build-e0.log"
    assert "stand-in failure requested" in cause.log_path.read_text()
    text = str(error)
    assert "'e0'" in text and "exited with 3" in text and "build-e0.log" in text
    # Nothing half-written is left in the cache.
    assert not list((tmp_path / "work" / "engines").iterdir())


def test_missing_image_fails_with_a_pull_hint(tmp_path: Path, dockerd: Dockerd) -> None:
    loaded = _inventory(tmp_path)
    results = build_engines(
        loaded,
        make_plan(loaded),
        _checkpoint(tmp_path),
        Settings(workdir=tmp_path / "work", data_dir=REPO),
        options=BuildOptions(
            experts=("e0",),
            stand_in_image="nope/missing:1",
            docker_base_url=dockerd.base_url,
            memlock_bytes=MEMLOCK,
        ),
    )
    assert results[0].status == "failed"
    assert "docker pull nope/missing:1" in results[0].message
