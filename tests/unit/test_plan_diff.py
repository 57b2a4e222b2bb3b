"""Spec hashes and the plan-versus-state diff (runtime/diff.py), on shipped inventories."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from expert_deploy.inventory import load_inventory
from expert_deploy.plan.planner import make_plan
from expert_deploy.runtime.diff import diff, spec_hashes
from expert_deploy.runtime.state import ComponentRecord, DeploymentState
from expert_deploy.settings import Settings
from tests.support.inventories import materialize

SETTINGS = Settings.from_environ({})


def _hashes(path: Path) -> dict[str, str]:
    loaded = load_inventory(path, SETTINGS.engines_dir)
    return spec_hashes(loaded, make_plan(loaded, None), SETTINGS.data_dir)


def _state(hashes: dict[str, str]) -> DeploymentState:
    def kind(name: str) -> str:
        return name.split("/", maxsplit=1)[0]

    return DeploymentState(
        deployment="local-synthetic",
        inventory="x.yaml",
        runtime="process",
        started_at=0.0,
        updated_at=0.0,
        components={
            name: ComponentRecord(
                name=name,
                kind=kind(name),  # type: ignore[arg-type]
                host="localhost",
                launcher="process",
                ref="1:1",
                config_hash="c",
                spec_hash=spec,
                phase="ready",
                started_at=0.0,
            )
            for name, spec in hashes.items()
        },
    )


def _edit(path: Path, change: dict[str, object]) -> Path:
    data = yaml.safe_load(path.read_text())
    for key, value in change.items():
        if key == "expert-1":
            data["experts"][1] = {**data["experts"][1], **value}  # type: ignore[dict-item]
        else:
            data[key] = value
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture
def inventory(tmp_path: Path) -> Path:
    return materialize("local-synthetic", tmp_path)


def test_same_inventory_means_no_change(inventory: Path) -> None:
    hashes = _hashes(inventory)
    assert set(hashes) == {
        "triton/expert-0-0",
        "triton/expert-1-0",
        "triton/expert-2-0",
        "gateway/0",
        "gateway/1",
        "nginx",
    }
    assert diff(_hashes(inventory), _state(hashes)) == []


def test_changed_expert_is_replaced_and_nothing_else(inventory: Path) -> None:
    before = _hashes(inventory)
    after = _hashes(_edit(inventory, {"expert-1": {"synthetic": {"tpot_ms": 9, "tokens": 8}}}))
    changes = diff(after, _state(before))
    assert [(c.action, c.name) for c in changes] == [("-/+", "triton/expert-1-0")]


def test_more_replicas_and_fewer_gateways(inventory: Path) -> None:
    before = _hashes(inventory)
    data = yaml.safe_load(inventory.read_text())
    data["experts"][0]["replicas"] = 2
    data["gateway"]["replicas"] = 1
    inventory.write_text(yaml.safe_dump(data, sort_keys=False))
    changes = {(c.action, c.name) for c in diff(_hashes(inventory), _state(before))}
    # The new replica takes the next port block, so later experts' ports (and with them every
    # gateway's routing table and NGINX's upstreams) move too.
    assert ("+", "triton/expert-0-1") in changes
    assert ("-", "gateway/1") in changes
    assert ("~", "gateway/0") in changes
    assert all(action != "-" or name == "gateway/1" for action, name in changes)


def test_router_corpus_change_updates_gateways_only(inventory: Path, tmp_path: Path) -> None:
    before = _hashes(inventory)
    data = yaml.safe_load(inventory.read_text())
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(Path(data["router"]["source"]["corpus"]).read_text() + '{"text": "x"}\n')
    data["router"]["source"]["corpus"] = str(corpus)
    inventory.write_text(yaml.safe_dump(data, sort_keys=False))
    changes = diff(_hashes(inventory), _state(before))
    assert sorted((c.action, c.name) for c in changes) == [("~", "gateway/0"), ("~", "gateway/1")]


def test_unready_component_is_reported(inventory: Path) -> None:
    hashes = _hashes(inventory)
    state = _state(hashes)
    state.components["nginx"] = state.components["nginx"].model_copy(update={"phase": "starting"})
    assert [(c.action, c.name) for c in diff(hashes, state)] == [("~", "nginx")]


def test_spec_hashes_do_not_depend_on_hash_randomization(inventory: Path) -> None:
    """The toolchain holds frozensets: their order must not leak into the digest."""
    code = (
        "import sys; from pathlib import Path; from expert_deploy.inventory import load_inventory;"
        "from expert_deploy.plan.planner import make_plan;"
        "from expert_deploy.runtime.diff import spec_hashes;"
        "from expert_deploy.settings import Settings; s = Settings.from_environ({});"
        "l = load_inventory(Path(sys.argv[1]), s.engines_dir);"
        "print(sorted(spec_hashes(l, make_plan(l, None), s.data_dir).items()))"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code, str(inventory)],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2", "3")
    }
    assert len(outputs) == 1
