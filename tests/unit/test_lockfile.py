"""The lockfile: format, comparison, and ``plan``'s check of an inventory against its lock."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from expert_deploy.artifacts.lockfile import (
    Lock,
    LockedBuilder,
    LockedCheckpoint,
    LockedExpert,
    LockedRouter,
    LockError,
    differences,
    inventory_disagreements,
    lock_path,
    read_lock,
    router_inputs,
    toolchain_record,
    write_lock,
)
from expert_deploy.builder.cache import Builder
from expert_deploy.builder.checkpoint_index import CheckpointRecord
from expert_deploy.builder.engines import calib_hash, engine_key
from expert_deploy.cli import main
from expert_deploy.inventory import LoadedInventory, load_inventory
from expert_deploy.plan.planner import make_plan
from tests.unit.inventory_factory import gpu_inventory, write

REPO = Path(__file__).resolve().parents[2]
ENGINES = REPO / "engines"
MODEL = "meta-llama/Meta-Llama-3-8B-Instruct"
COMMIT = "a" * 40
FILES = {"config.json": "1" * 40, "model.safetensors": "2" * 64}
STAND_IN = Builder("stand-in", "expert-deploy/stand-in:test")


def _inventory_data(tmp_path: Path, **defaults: Any) -> dict[str, Any]:
    router = tmp_path / "router"
    router.mkdir(exist_ok=True)
    (router / "router.json").write_text('{"content_hash": "sha256:abc"}')
    data = gpu_inventory()
    data["defaults"].update(defaults)
    data["experts"].append(
        {"id": "syn", "cluster": 2, "engine": "synthetic", "quantization": "bf16"}
    )
    data["router"]["k"] = 3
    return data


def _load(tmp_path: Path, data: dict[str, Any]) -> LoadedInventory:
    return load_inventory(write(tmp_path, data), ENGINES)


def _lock_for(loaded: LoadedInventory) -> Lock:
    """The lock a build of ``loaded`` with the stand-in builder would write."""
    plan = make_plan(loaded)
    experts = {}
    for expert in loaded.inventory.experts:
        if expert.engine == "synthetic":
            experts[expert.id] = LockedExpert("synthetic")
            continue
        record = CheckpointRecord(MODEL, "main", COMMIT, Path(), tuple(sorted(FILES.items())))
        calib = calib_hash(expert)
        key = engine_key(
            expert,
            loaded=loaded,
            plan=plan,
            checkpoint=record,
            builder=STAND_IN,
            calib_sha256=calib,
        )
        experts[expert.id] = LockedExpert(
            "tensorrt_llm",
            checkpoint=f"{MODEL}@main",
            calib_dataset_sha256=calib,
            engine_key=key,
            engine_sha256="sha256:" + "e" * 64,
            builder=LockedBuilder(STAND_IN.kind, STAND_IN.image, "sha256:" + "f" * 64),
        )
    return Lock(
        inventory=loaded.inventory.name,
        toolchain=toolchain_record(loaded, ENGINES),
        checkpoints={f"{MODEL}@main": LockedCheckpoint(COMMIT, FILES)},
        experts=experts,
        router=LockedRouter(router_inputs(loaded.inventory.router), "sha256:abc"),
        versions={"python": "3.11.7", "scikit-learn": "1.5.0"},
    )


def test_lock_text_is_sorted_json_and_round_trips(tmp_path: Path) -> None:
    lock = _lock_for(_load(tmp_path, _inventory_data(tmp_path)))
    text = lock.text()
    assert text.endswith("}\n")
    data = json.loads(text)
    assert text == json.dumps(data, indent=2, sort_keys=True) + "\n"
    assert Lock.from_json(data) == lock
    path = tmp_path / "inv.lock"
    write_lock(path, lock)
    assert path.read_text() == text
    assert read_lock(path) == lock
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".inv.lock")]


def test_lock_path_sits_next_to_the_inventory() -> None:
    assert lock_path(Path("/x/inventories/dgx.yaml")) == Path("/x/inventories/dgx.lock")


def test_missing_lock_is_none_and_a_corrupt_one_is_a_one_line_error(tmp_path: Path) -> None:
    assert read_lock(tmp_path / "absent.lock") is None
    bad = tmp_path / "bad.lock"
    bad.write_text('{"lock_version": 1, "experts": ')
    with pytest.raises(LockError) as caught:
        read_lock(bad)
    assert "restore it from version control" in str(caught.value)
    assert "\n" not in str(caught.value)
    bad.write_text('{"lock_version": 99}')
    with pytest.raises(LockError, match="lock_version is 99"):
        read_lock(bad)


def test_an_unchanged_inventory_agrees_with_its_lock(tmp_path: Path) -> None:
    loaded = _load(tmp_path, _inventory_data(tmp_path))
    lock = _lock_for(loaded)
    assert inventory_disagreements(loaded, make_plan(loaded), lock, ENGINES) == []
    # The builder that would run now is part of the key: a container build is another key.
    container = Builder("container", "")
    found = inventory_disagreements(loaded, make_plan(loaded), lock, ENGINES, builder=container)
    assert len(found) == 2 and all("build settings changed" in line for line in found)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"max_batch_size": 16}, "e0: build settings changed since the lock"),
        ({"max_seq_len": 8192}, "e1: build settings changed since the lock"),
        ({"quantization": "int4_awq"}, "e0: build settings changed"),
    ],
)
def test_a_changed_build_setting_disagrees_with_the_lock(
    tmp_path: Path, change: dict[str, Any], expected: str
) -> None:
    lock = _lock_for(_load(tmp_path, _inventory_data(tmp_path)))
    changed = _load(tmp_path, _inventory_data(tmp_path, **change))
    found = inventory_disagreements(changed, make_plan(changed), lock, ENGINES)
    assert any(expected in line for line in found), found


def test_model_expert_set_router_and_toolchain_changes_each_get_a_line(tmp_path: Path) -> None:
    data = _inventory_data(tmp_path)
    lock = _lock_for(_load(tmp_path, data))
    data["experts"][0]["model"]["revision"] = "v2"
    data["experts"].append(
        {"id": "e3", "cluster": 2, "model": {"repo": MODEL}, "placement": {"host": "h1"}}
    )
    data["experts"] = [e for e in data["experts"] if e["id"] != "syn"]
    data["router"]["scaler"] = "standard"
    data["toolchain"] = "trtllm-1.2"
    changed = _load(tmp_path, data)
    found = inventory_disagreements(changed, make_plan(changed), lock, ENGINES)
    joined = "\n".join(found)
    assert f"expert e0: model is {MODEL}@v2 in the inventory, {MODEL}@main in the lock" in joined
    assert "expert e3: in the inventory but not in the lock" in joined
    assert "expert syn: in the lock but no longer in the inventory" in joined
    assert "router: inputs are" in joined and '"scaler": "standard"' in joined
    assert "toolchain: trtllm-1.2" in joined


def test_calibration_data_is_part_of_what_the_lock_pins(tmp_path: Path) -> None:
    calib = tmp_path / "calib"
    calib.mkdir()
    (calib / "train.jsonl").write_text('{"text": "hello"}\n')
    data = _inventory_data(tmp_path, quantization="int4_awq", calib_dataset="calib")
    loaded = _load(tmp_path, data)
    lock = _lock_for(loaded)
    assert lock.experts["e0"].calib_dataset_sha256 is not None
    assert inventory_disagreements(loaded, make_plan(loaded), lock, ENGINES) == []
    (calib / "train.jsonl").write_text('{"text": "other"}\n')
    found = inventory_disagreements(loaded, make_plan(loaded), lock, ENGINES)
    assert any("e0: calibration data changed since the lock" in line for line in found)


def test_differences_name_each_resolved_change_but_not_engine_bytes(tmp_path: Path) -> None:
    old = _lock_for(_load(tmp_path, _inventory_data(tmp_path)))
    assert differences(old, old) == []
    rebuilt = {
        eid: replace(e, engine_sha256="sha256:" + "9" * 64) for eid, e in old.experts.items()
    }
    # TensorRT builds are not bit-reproducible: another engine hash alone is no disagreement.
    assert differences(old, replace(old, experts=rebuilt)) == []
    moved = replace(old, checkpoints={f"{MODEL}@main": LockedCheckpoint("b" * 40, FILES)})
    assert differences(old, moved) == [
        f"checkpoint {MODEL}@main: locked at {COMMIT}, resolved to {'b' * 40}"
    ]
    files = replace(
        old, checkpoints={f"{MODEL}@main": LockedCheckpoint(COMMIT, {**FILES, "x.json": "3"})}
    )
    assert differences(old, files) == [
        f"checkpoint {MODEL}@main@{COMMIT[:12]}: files differ (x.json)"
    ]
    refit = replace(
        old,
        router=LockedRouter(old.router.inputs, "sha256:def"),
        versions={**old.versions, "scikit-learn": "1.9.1"},
    )
    (line,) = differences(old, refit)
    assert "router: locked hash sha256:abc, this build made sha256:def" in line
    assert "scikit-learn 1.5.0 → 1.9.1" in line
    e0 = old.experts["e0"]
    assert e0.builder is not None
    other_image = replace(e0, builder=replace(e0.builder, image_id="sha256:" + "0" * 64))
    (line,) = differences(old, replace(old, experts={**old.experts, "e0": other_image}))
    assert "expert e0: image expert-deploy/stand-in:test is sha256:000" in line


def test_plan_fails_when_the_inventory_disagrees_with_its_lock(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _inventory_data(tmp_path)
    loaded = _load(tmp_path, data)
    write_lock(lock_path(loaded.path), _lock_for(loaded))
    assert main(["plan", "-i", str(loaded.path), "-w", str(tmp_path / "w")]) == 0
    capsys.readouterr()
    data["defaults"]["max_batch_size"] = 32
    (tmp_path / "inv.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    assert main(["plan", "-i", str(loaded.path), "-w", str(tmp_path / "w")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2  # one line per disagreeing expert
    for line in err:
        assert "inv.lock:" in line and "build settings changed" in line
        assert line.endswith("`expert-deploy build --upgrade` moves the lock")


def test_the_lock_holds_no_secret(tmp_path: Path) -> None:
    lock = _lock_for(_load(tmp_path, _inventory_data(tmp_path)))
    text = lock.text().lower()
    for word in ("token", "password", "api_key", "secret", "hf_"):
        assert word not in text
