"""``expert-deploy build`` end to end: the local Hub stand-in, a private dockerd running the
busybox stand-in image for the TensorRT-LLM container (no engine is really built: TensorRT-LLM
cannot run here; manifests say "stand-in"), a real router fit, render, and the lockfile.

Checks that a lock pins what a moved branch would change, that ``--locked`` rebuilds a wiped
work dir and HF cache into byte-identical rendered files with the same engine keys and router
hash, that ``--upgrade`` moves it, that edits are refused, and that the HF token (the repo is
gated) reaches no file.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from expert_deploy.cli import main
from tests.dockerd import STAND_IN_TAG, Dockerd
from tests.localhub import TINY_LLAMA_CONFIG, LocalHub, tiny_llama_files

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
MODEL = "org/tiny-llama"
TOKEN = "hf_lockTestSecretToken987"


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, dockerd: Dockerd) -> Iterator[LocalHub]:
    with LocalHub() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
        monkeypatch.setenv("HF_TOKEN", TOKEN)
        monkeypatch.setenv("DOCKER_HOST", dockerd.base_url)
        yield server


def _inventory(tmp_path: Path) -> Path:
    folder = tmp_path / "inv"
    (folder / "calib").mkdir(parents=True)
    (folder / "calib" / "train.jsonl").write_text('{"text": "calibrate on this"}\n')
    (folder / "tiny-config.json").write_text(json.dumps(TINY_LLAMA_CONFIG))
    model = {"repo": MODEL, "config": "tiny-config.json"}
    data: dict[str, Any] = {
        "name": "lab",
        "toolchain": "trtllm-0.11",
        "hosts": [
            {"name": "h1", "address": "127.0.0.1", "gpus": {"count": 8, "model": "H100-SXM-80GB"}}
        ],
        "defaults": {
            "engine": "tensorrt_llm",
            "quantization": "int4_awq",
            "max_batch_size": 8,
            "calib_dataset": "calib",
        },
        "experts": [
            {"id": "e0", "cluster": 0, "model": model},
            {"id": "e1", "cluster": 1, "model": model},
            {
                "id": "t0",
                "cluster": 2,
                "engine": "transformers",
                "quantization": "bf16",
                "model": model,
            },
            {"id": "s0", "cluster": 3, "engine": "synthetic", "quantization": "bf16"},
        ],
        "router": {
            "source": {"kind": "fit", "corpus": str(REPO / "inventories/data/local-prompts.jsonl")},
            "k": 4,
        },
        "gateway": {"replicas": 1},
    }
    path = folder / "lab.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _build(path: Path, workdir: Path, *flags: str) -> int:
    argv = ["build", "-i", str(path), "-w", str(workdir), "--stand-in-image", STAND_IN_TAG]
    return main([*argv, *flags])


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_lock_pins_rebuilds_identically_upgrades_and_refuses_edits(
    hub: LocalHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first_commit = hub.add_repo(MODEL, tiny_llama_files(), gated=True, allowed_tokens=(TOKEN,))
    path = _inventory(tmp_path)
    lock_file = path.with_suffix(".lock")
    workdir = tmp_path / "work"

    assert _build(path, workdir) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "built" in out and "same engine as e0" in out
    lock = json.loads(lock_file.read_text())
    assert lock["checkpoints"][f"{MODEL}@main"]["commit"] == first_commit
    assert len(lock["checkpoints"][f"{MODEL}@main"]["files"]) == 10
    e0, e1, t0 = (lock["experts"][i] for i in ("e0", "e1", "t0"))
    assert e0["engine_key"] == e1["engine_key"] and len(e0["engine_key"]) == 64
    assert e0["builder"]["kind"] == "stand-in" and e0["builder"]["image"] == STAND_IN_TAG
    assert e0["builder"]["image_id"].startswith("sha256:")
    assert e0["engine_sha256"].startswith("sha256:") and len(e0["calib_dataset_sha256"]) == 64
    assert t0 == {**t0, "checkpoint": f"{MODEL}@main", "engine": "transformers"}
    assert t0["engine_key"] is None
    manifest = json.loads((workdir / "engines" / e0["engine_key"] / "manifest.json").read_text())
    quantize = manifest["argv"][0]
    assert quantize[quantize.index("--calib_dataset") + 1] == "/expert-deploy/calib"
    rendered = _tree(workdir / "rendered")
    keys = {i: lock["experts"][i]["engine_key"] for i in ("e0", "e1")}

    # The branch moves on the Hub; without --upgrade the lock keeps the build where it was,
    # and a pinned, cached checkpoint costs no request at all.
    hub.commit(MODEL, tiny_llama_files(extra={"README.md": b"# moved\n"}))
    requests = len(hub.requests)
    assert _build(path, workdir) == 0
    out = capsys.readouterr().out
    assert "pinned" in out and "unchanged" in out
    assert len(hub.requests) == requests
    assert json.loads(lock_file.read_text()) == lock
    assert _build(path, workdir, "--locked") == 0
    capsys.readouterr()

    # A wiped work dir and HF cache rebuild from the lock: same bytes, keys and router.
    shutil.rmtree(workdir)
    shutil.rmtree(tmp_path / "hf")
    assert _build(path, workdir, "--locked") == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "downloaded" in out and "built" in out
    assert _tree(workdir / "rendered") == rendered
    assert json.loads(lock_file.read_text()) == lock

    # The HF token reached the Hub (the repo is gated) but no file anywhere.
    for root in (workdir, path.parent):
        for file in (p for p in root.rglob("*") if p.is_file()):
            assert TOKEN.encode() not in file.read_bytes(), file

    # --upgrade re-resolves the branch and moves the lock (new files, so new engine keys).
    assert _build(path, workdir, "--upgrade") == 0
    out = capsys.readouterr().out
    assert f"locked at {first_commit}" in out
    moved = json.loads(lock_file.read_text())
    assert moved["checkpoints"][f"{MODEL}@main"]["commit"] != first_commit
    assert moved["experts"]["e0"]["engine_key"] != keys["e0"]

    # An edited inventory: plan and --locked refuse, one line each, and nothing changes.
    data = yaml.safe_load(path.read_text())
    data["defaults"]["max_batch_size"] = 16
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    upgraded = _tree(workdir / "rendered")
    assert main(["plan", "-i", str(path), "-w", str(workdir)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert [line for line in err if "build settings changed" in line] == err[:2]
    assert _build(path, workdir, "--locked") == 1
    err = capsys.readouterr().err
    assert "lab.lock: expert e0: build settings changed" in err and "--upgrade" in err
    assert _tree(workdir / "rendered") == upgraded
    assert json.loads(lock_file.read_text()) == moved
