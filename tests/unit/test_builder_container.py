"""The container spec of a build step and the checkpoint index (no Docker daemon needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from expert_deploy.builder.cache import Builder
from expert_deploy.builder.checkpoint_index import read_checkpoint_index
from expert_deploy.builder.container import ContainerRun, _lines, run_kwargs
from expert_deploy.builder.recipes import CONTAINER_PATHS, BuildStep, Recipe
from expert_deploy.builder.runner import BuildJob, container_run_for
from expert_deploy.errors import CheckpointError


def _job(tmp_path: Path, calib: Path | None = None) -> BuildJob:
    return BuildJob(
        expert_id="e3",
        deployment="dgx",
        key="k" * 64,
        recipe=Recipe(
            (BuildStep("trtllm_build", ("trtllm-build", "--workers", "1")),), "bf16", None
        ),
        builder=Builder("container", "nvcr.io/nvidia/tritonserver:24.07-trtllm-python-py3"),
        model_dir=tmp_path / "model",
        staging=tmp_path / "staging",
        calib_dir=calib,
        gpus=(2, 3),
        log_path=tmp_path / "log",
    )


def test_build_container_gets_gpus_shm_ulimits_mounts_labels_and_host_network(
    tmp_path: Path,
) -> None:
    run = container_run_for(
        _job(tmp_path, calib=tmp_path / "calib"), ("trtllm-build",), with_gpus=True
    )
    kwargs = run_kwargs(run)
    assert kwargs["image"] == "nvcr.io/nvidia/tritonserver:24.07-trtllm-python-py3"
    assert kwargs["command"] == ["trtllm-build"]
    assert kwargs["network_mode"] == "host"
    assert kwargs["shm_size"] == "2g"
    assert kwargs["working_dir"] == CONTAINER_PATHS.output_root
    (request,) = kwargs["device_requests"]
    assert request["DeviceIDs"] == ["2", "3"]
    assert request["Capabilities"] == [["gpu"]]
    assert "Count" not in request or request["Count"] in (None, 0)
    limits = {u["Name"]: (u["Soft"], u["Hard"]) for u in kwargs["ulimits"]}
    assert limits == {"memlock": (-1, -1), "stack": (67108864, 67108864)}
    mounts = {m["Target"]: (m["Source"], m["ReadOnly"]) for m in kwargs["mounts"]}
    assert mounts == {
        "/expert-deploy/model": (str(tmp_path / "model"), True),
        "/expert-deploy/out": (str(tmp_path / "staging"), False),
        "/expert-deploy/calib": (str(tmp_path / "calib"), True),
    }
    assert kwargs["labels"] == {
        "expert-deploy.deployment": "dgx",
        "expert-deploy.expert": "e3",
        "expert-deploy.role": "engine-build",
        "expert-deploy.engine-key": "k" * 64,
    }


def test_stand_in_without_gpus_has_no_device_request(tmp_path: Path) -> None:
    run = container_run_for(_job(tmp_path), ("trtllm-build",), with_gpus=False)
    assert "device_requests" not in run_kwargs(run)
    assert ContainerRun("i", (), (), "/").gpu_ids == ()


def test_log_stream_is_split_into_whole_lines() -> None:
    chunks = [b"first li", b"ne\nsecond\r\nthi", b"rd"]
    assert list(_lines(chunks)) == ["first line", "second", "third"]


def test_checkpoint_index_reads_fetch_output(tmp_path: Path) -> None:
    (tmp_path / "checkpoints.json").write_text(
        json.dumps({"a/b@main": {"commit": "c" * 40, "path": "/x", "files": {"z": "2", "a": "1"}}})
    )
    record = read_checkpoint_index(tmp_path, tmp_path / "hub")["a/b@main"]
    assert (record.repo, record.revision, record.commit) == ("a/b", "main", "c" * 40)
    assert record.path == Path("/x")
    assert record.files == (("a", "1"), ("z", "2"))


def test_checkpoint_index_missing_or_malformed(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="run expert-deploy fetch first"):
        read_checkpoint_index(tmp_path, tmp_path)
    (tmp_path / "checkpoints.json").write_text('{"a/b@main": {"commit": "c"}}')
    with pytest.raises(CheckpointError, match="lacks commit, path or files"):
        read_checkpoint_index(tmp_path, tmp_path)


def test_checkpoint_index_reads_the_fetch_record_format(tmp_path: Path) -> None:
    record = {
        "version": 1,
        "checkpoints": {
            "org/m@main": {
                "repo": "org/m",
                "revision": "main",
                "commit": "d" * 40,
                "files": {"config.json": "e" * 40},
            }
        },
    }
    (tmp_path / "checkpoints.json").write_text(json.dumps(record))
    got = read_checkpoint_index(tmp_path, tmp_path / "hub")["org/m@main"]
    assert got.path == tmp_path / "hub" / "models--org--m" / "snapshots" / ("d" * 40)
    assert got.files == (("config.json", "e" * 40),)
