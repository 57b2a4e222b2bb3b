"""Every shipped inventory and toolchain file loads and plans without errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from expert_deploy.inventory import available_toolchains, load_inventory, load_toolchain
from expert_deploy.plan.planner import make_plan

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "path", sorted((REPO / "inventories").glob("*.yaml")), ids=lambda p: p.stem
)
def test_inventory_validates_and_plans(path: Path, engines_dir: Path) -> None:
    plan = make_plan(load_inventory(path, engines_dir))
    assert plan.errors == []
    assert len(plan.servers) >= 1 and len(plan.gateways) >= 1


def test_the_required_examples_exist(inventories_dir: Path) -> None:
    names = {p.stem for p in inventories_dir.glob("*.yaml")}
    assert {"dgx", "dgx-8b", "dgx-baseline-tp8", "dgx-baseline-tp4x2", "local"} <= names


def test_dgx_is_the_paper_configuration(inventories_dir: Path, engines_dir: Path) -> None:
    inventory = load_inventory(inventories_dir / "dgx.yaml", engines_dir).inventory
    assert len(inventory.experts) == 8
    assert {(e.quantization, e.max_batch_size, e.tp_size) for e in inventory.experts} == {
        ("int4_awq", 125, 1)
    }
    assert {e.model.repo for e in inventory.experts if e.model} == {
        "meta-llama/Meta-Llama-3-70B-Instruct"
    }
    assert inventory.gateway.replicas == 16 and inventory.router.k == 8


@pytest.mark.parametrize("name", ["trtllm-0.11", "trtllm-1.2"])
def test_toolchains_load(name: str, engines_dir: Path) -> None:
    toolchain = load_toolchain(name, engines_dir)
    assert "--checkpoint_dir" in toolchain.flags.trtllm_build
    assert set(toolchain.triton_placeholders) == {
        "preprocessing",
        "tensorrt_llm",
        "postprocessing",
        "ensemble",
        "tensorrt_llm_bls",
    }
    assert name in available_toolchains(engines_dir)
