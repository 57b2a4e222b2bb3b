"""verify_checkpoint, checkpoints.json and the token's Secret, on folders the tests write."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from expert_deploy.checkpoints import (
    RECORD_FILE,
    Checkpoint,
    read_record,
    verify_checkpoint,
    write_record,
)
from expert_deploy.checkpoints.progress import DownloadProgress
from expert_deploy.errors import CheckpointError
from expert_deploy.settings import Secret, Settings
from tests.localhub import lfs_pointer, tiny_llama_files

SHARD1 = "model-00001-of-00002.safetensors"
SHARD2 = "model-00002-of-00002.safetensors"


def _checkpoint_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "ckpt"
    for name, content in tiny_llama_files().items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(content)
    return folder


def _write(folder: Path, name: str, content: bytes | None) -> None:
    if content is None:
        (folder / name).unlink()
    else:
        (folder / name).write_bytes(content)


def test_a_complete_checkpoint_passes(tmp_path: Path) -> None:
    folder = _checkpoint_dir(tmp_path)
    verify_checkpoint(folder)  # raises on any problem
    assert (folder / SHARD1).stat().st_size > 135


def test_lfs_pointer_shard_is_named(tmp_path: Path) -> None:
    folder = _checkpoint_dir(tmp_path)
    _write(folder, SHARD2, lfs_pointer(b"real weights"))
    with pytest.raises(CheckpointError) as caught:
        verify_checkpoint(folder)
    message = str(caught.value)
    assert f"{folder / SHARD2} is a Git LFS pointer" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        (SHARD1, None, f"shard {SHARD1} named in model.safetensors.index.json is missing"),
        ("config.json", b"{not json", "config.json is not readable JSON"),
        ("config.json", None, "config.json is missing"),
        ("config.json", b'{"hidden_size": 8}', "is not a model config (no model_type)"),
        ("tokenizer.json", None, "has no tokenizer"),
        ("model.safetensors.index.json", b'{"weight_map": {}}', "has no weight_map"),
    ],
)
def test_broken_checkpoints_say_which_file(
    tmp_path: Path, name: str, content: bytes | None, expected: str
) -> None:
    folder = _checkpoint_dir(tmp_path)
    _write(folder, name, content)
    with pytest.raises(CheckpointError) as caught:
        verify_checkpoint(folder)
    assert expected in str(caught.value)


def test_truncated_and_garbage_shards_are_corrupt(tmp_path: Path) -> None:
    folder = _checkpoint_dir(tmp_path)
    good = (folder / SHARD1).read_bytes()
    _write(folder, SHARD1, good[:-10])
    with pytest.raises(CheckpointError, match="cut short or corrupt"):
        verify_checkpoint(folder)
    _write(folder, SHARD1, b"\xff" * 2048)
    with pytest.raises(CheckpointError, match="is corrupt"):
        verify_checkpoint(folder)


def test_index_naming_a_tensor_the_shard_lacks(tmp_path: Path) -> None:
    folder = _checkpoint_dir(tmp_path)
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    index["weight_map"]["model.layers.0.mlp.up_proj.weight"] = SHARD1
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(
        CheckpointError, match=re.escape("lacks tensor model.layers.0.mlp.up_proj.weight")
    ):
        verify_checkpoint(folder)


def test_record_is_merged_and_atomic(tmp_path: Path) -> None:
    a = Checkpoint("org/a", "main", "a" * 40, tmp_path, (("config.json", "1" * 40),))
    b = Checkpoint("org/b", "v1", "b" * 40, tmp_path, (("config.json", "2" * 40),))
    write_record(tmp_path, [a])
    path = write_record(tmp_path, [b])
    entries = read_record(tmp_path)
    assert sorted(entries) == ["org/a@main", "org/b@v1"]
    assert entries["org/b@v1"] == {
        "repo": "org/b",
        "revision": "v1",
        "commit": "b" * 40,
        "files": {"config.json": "2" * 40},
    }
    write_record(tmp_path, [], drop=["org/a@main"])
    assert list(read_record(tmp_path)) == ["org/b@v1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [RECORD_FILE]  # no temp files left
    path.write_text("{broken")
    with pytest.raises(CheckpointError, match=re.escape("delete it and run `expert-deploy fetch`")):
        read_record(tmp_path)


def test_token_is_read_from_env_or_file_and_never_shown(tmp_path: Path) -> None:
    settings = Settings.from_environ({"HF_TOKEN": "hf_secret_value", "HF_HOME": str(tmp_path)})
    assert settings.hf_token == Secret("hf_secret_value")
    assert settings.hf_token is not None and settings.hf_token.reveal() == "hf_secret_value"
    assert "hf_secret_value" not in repr(settings) + str(settings.hf_token)
    assert settings.hf_cache_dir == tmp_path / "hub"
    (tmp_path / "token").write_text("hf_from_file\n")
    from_file = Settings.from_environ({"HF_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"})
    assert from_file.hf_token == Secret("hf_from_file") and from_file.hf_hub_offline
    assert Settings.from_environ({"HF_HOME": str(tmp_path / "none")}).hf_token is None


def test_progress_bars_follow_tqdm_calls() -> None:
    from rich.console import Console

    progress = DownloadProgress(Console(quiet=True), enabled=True)
    bar_class = progress.bar_class("org/tiny")
    with progress:
        files = bar_class(total=3, desc="Fetching 3 files")
        written = bar_class(total=0, unit="B", desc="Reconstructing (incomplete total...)")
        network = bar_class(total=0, unit="B", desc="Downloading bytes")
        written.total = 100
        written.update(60)
        files.update(1)
        network.update(60)
        tasks = {t.description: t for t in progress._progress.tasks}
    assert set(tasks) == {"org/tiny files", "org/tiny bytes"}  # network bar not shown twice
    assert (tasks["org/tiny bytes"].completed, tasks["org/tiny bytes"].total) == (60, 100)
    assert tasks["org/tiny files"].completed == 1
