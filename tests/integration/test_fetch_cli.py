"""`expert-deploy fetch` end to end: inventory in, checkpoints.json and a summary out."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from expert_deploy.cli import main
from tests.localhub import LocalHub, tiny_llama_files
from tests.unit.inventory_factory import gpu_inventory, write

pytestmark = pytest.mark.integration

REPO = "org/tiny-llama"
TOKEN = "hf_cliSecretTokenValue123"


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[LocalHub]:
    with LocalHub() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
        yield server


def _inventory(tmp_path: Path) -> Path:
    data = gpu_inventory()
    data["experts"] = [
        {"id": "e0", "cluster": 0, "model": {"repo": REPO}},
        {"id": "e1", "cluster": 1, "model": {"repo": REPO, "revision": "main"}},
        {"id": "e2", "cluster": 2, "engine": "synthetic"},
    ]
    data["router"]["k"] = 3
    return write(tmp_path, data)


def test_fetch_writes_the_record_and_a_summary(
    hub: LocalHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    commit = hub.add_repo(REPO, tiny_llama_files())
    workdir = tmp_path / "work"
    inventory = _inventory(tmp_path)
    assert main(["fetch", "-i", str(inventory), "--workdir", str(workdir)]) == 0
    out, err = capsys.readouterr()
    assert "note: e2 is synthetic" in err
    assert f"main → {commit}" in out and "downloaded" in out and "cached" not in out
    record = json.loads((workdir / "checkpoints.json").read_text())
    entry = record["checkpoints"][f"{REPO}@main"]
    assert record["version"] == 1 and list(record["checkpoints"]) == [f"{REPO}@main"]
    assert entry["commit"] == commit and len(entry["files"]) == 10
    shard_gets = hub.seen("GET", "model-00001-of-00002.safetensors")
    assert len(shard_gets) == 1  # two experts, one download

    assert main(["fetch", "-i", str(inventory), "-w", str(workdir), "--expert", "e1"]) == 0
    out = capsys.readouterr().out
    assert "cached" in out and "e0" not in out
    assert len(hub.seen("GET", "model-00001-of-00002.safetensors")) == 1

    assert main(["fetch", "-i", str(inventory), "-w", str(workdir), "--expert", "e9"]) == 2
    assert "no expert 'e9' in the inventory" in capsys.readouterr().err


def test_gated_fetch_with_and_without_token_never_shows_it(
    hub: LocalHub,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    hub.add_repo(REPO, tiny_llama_files(), gated=True, allowed_tokens=(TOKEN,))
    workdir = tmp_path / "work"
    inventory = _inventory(tmp_path)
    assert main(["fetch", "-i", str(inventory), "-w", str(workdir)]) == 1
    out, err = capsys.readouterr()
    assert err.splitlines()[-1] == (
        f"error: experts e0, e1: {REPO} is gated: accept the licence on the Hub and set "
        "HF_TOKEN or run `huggingface-cli login`"
    )
    assert "failed" in out
    assert not (workdir / "checkpoints.json").exists()  # nothing recorded as done

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    assert main(["fetch", "-i", str(inventory), "-w", str(workdir)]) == 0
    out, err = capsys.readouterr()
    assert "downloaded" in out
    assert hub.seen("GET", "/resolve/") and all(r.has_auth for r in hub.seen("GET", "/resolve/"))
    assert TOKEN not in out + err + caplog.text
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "checkpoints.json" for p in written)
    assert not [p for p in written if TOKEN.encode() in p.read_bytes()]
