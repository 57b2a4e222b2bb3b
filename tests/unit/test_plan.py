"""Planner arithmetic against hand-computed values, placement and port assignment."""

from __future__ import annotations

from pathlib import Path

import pytest

from expert_deploy.inventory import load_inventory
from expert_deploy.plan.architectures import BUILT_IN, Architecture
from expert_deploy.plan.memory import kv_bytes_per_token, weight_bytes
from expert_deploy.plan.planner import make_plan
from tests.unit.inventory_factory import gpu_inventory, write

LLAMA3_8B = BUILT_IN["meta-llama-3-8b-instruct"]
LLAMA3_70B = BUILT_IN["meta-llama-3-70b-instruct"]


def test_parameter_counts_match_the_published_models() -> None:
    # embedding + untied LM head + per layer (attention, SwiGLU MLP, 2 RMSNorms) + final norm
    assert LLAMA3_8B.parameter_count == 8_030_261_248
    assert LLAMA3_70B.parameter_count == 70_553_706_496


def test_weight_bytes_per_quantization() -> None:
    assert weight_bytes(LLAMA3_8B, "bf16") == 2 * 8_030_261_248
    # 70B INT4-AWQ by hand: 16-bit embeddings/head/norms, half a byte per projection weight,
    # an FP16 scale per 128-input group, an FP16 pre-quant scale per projection input.
    embeddings_norms = 2 * 128_256 * 8192 + (2 * 80 + 1) * 8192
    projections = 80 * (8192 * 8192 * 2 + 2 * 8192 * 1024 + 3 * 8192 * 28672)
    assert projections == 68_451_041_280
    expected = (
        2 * embeddings_norms
        + projections // 2
        + 2 * projections // 128
        + 2 * 80 * (4 * 8192 + 28672)
    )
    assert weight_bytes(LLAMA3_70B, "int4_awq") == expected == 39_510_228_992
    # FP8: one byte per projection weight plus per-tensor scales.
    assert weight_bytes(LLAMA3_70B, "fp8") == 2 * embeddings_norms + projections + 80 * 7 * 2 * 4


def test_kv_bytes_per_token() -> None:
    assert kv_bytes_per_token(LLAMA3_8B, "fp16") == 32 * 8 * 128 * 2 * 2 == 131_072
    assert kv_bytes_per_token(LLAMA3_70B, "fp16") == 80 * 8 * 128 * 2 * 2 == 327_680
    assert kv_bytes_per_token(LLAMA3_70B, "fp8", tp_size=4) == 80 * 2 * 128 * 2
    assert kv_bytes_per_token(LLAMA3_70B, "int8", tp_size=16) == 80 * 1 * 128 * 2


def test_dgx_8b_memory_fit_by_hand(inventories_dir: Path, engines_dir: Path) -> None:
    plan = make_plan(load_inventory(inventories_dir / "dgx-8b.yaml", engines_dir))
    fit = plan.memory_of("expert-0")
    assert fit is not None
    gpu = 81_559 * 1024**2  # H100 SXM as nvidia-smi reports it
    free = gpu - 2 * 8_030_261_248 - 3 * 1024**3
    assert fit.kv_budget_bytes == int(free * 0.9)
    assert fit.sequences_fit == int(free * 0.9) // (131_072 * 4096) == 111
    assert fit.status == "tight"  # 111 full 4096-token sequences < batch 256
    assert [f.path for f in plan.warnings] == [("experts", i, "max_batch_size") for i in range(8)]


def test_70b_bf16_on_one_gpu_does_not_fit(tmp_path: Path, engines_dir: Path) -> None:
    data = gpu_inventory()
    data["experts"][0]["model"]["repo"] = "meta-llama/Meta-Llama-3-70B-Instruct"
    plan = make_plan(load_inventory(write(tmp_path, data), engines_dir))
    (error,) = plan.errors
    assert error.path == ("experts", 0, "quantization")
    assert "does not fit: weights 131.4 GiB + overhead 3.0 GiB of 79.6 GiB per GPU" in error.message


def test_placement_tp4_blocks_and_ports(inventories_dir: Path, engines_dir: Path) -> None:
    plan = make_plan(load_inventory(inventories_dir / "dgx-baseline-tp4x2.yaml", engines_dir))
    assert [s.gpus for s in plan.servers] == [(0, 1, 2, 3), (4, 5, 6, 7)]
    assert [(s.http_port, s.grpc_port, s.metrics_port) for s in plan.servers] == [
        (8000, 8001, 8002),
        (8010, 8011, 8012),
    ]
    assert [g.http_port for g in plan.gateways] == list(range(9000, 9016))
    assert plan.errors == []


@pytest.mark.parametrize(
    ("mutate", "path", "text"),
    [
        (
            lambda d: d["defaults"].update(tp_size=3),
            ("experts", 0, "tp_size"),
            "does not divide the 8 GPUs",
        ),
        (
            lambda d: [e.update(placement={"host": "h1", "gpus": [2]}) for e in d["experts"]],
            ("experts", 1, "placement", "gpus"),
            "GPU 2 of host h1 is already given to expert e0",
        ),
        (
            lambda d: d["defaults"].update(tp_size=8),
            ("experts", 1, "tp_size"),
            "no 8 free GPUs left",
        ),
        (
            lambda d: d["experts"][1].update(ports={"http": 9000}),
            ("gateway", "http_base_port"),
            "port 9000 on host h1 is used by both expert e1 (http) and gateway replica 0 (http)",
        ),
    ],
)
def test_placement_and_port_errors(tmp_path: Path, engines_dir: Path, mutate, path, text) -> None:  # type: ignore[no-untyped-def]
    data = gpu_inventory()
    mutate(data)
    plan = make_plan(load_inventory(write(tmp_path, data), engines_dir))
    assert any(f.path == path and text in f.message for f in plan.errors), plan.errors


def test_unknown_architecture_read_from_config_json(tmp_path: Path, engines_dir: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(
        '{"hidden_size": 2048, "num_hidden_layers": 16, "num_attention_heads": 32, '
        '"num_key_value_heads": 8, "intermediate_size": 8192, "vocab_size": 128256, '
        '"tie_word_embeddings": true, "max_position_embeddings": 131072}'
    )
    data = gpu_inventory()
    data["experts"][0]["model"] = {"repo": "someone/small-model", "config": "config.json"}
    data["experts"][1]["model"] = {"repo": "someone/unknown-model"}
    plan = make_plan(load_inventory(write(tmp_path, data), engines_dir))
    fit = plan.memory_of("e0")
    arch = Architecture.from_config(
        {
            "hidden_size": 2048,
            "num_hidden_layers": 16,
            "num_attention_heads": 32,
            "num_key_value_heads": 8,
            "intermediate_size": 8192,
            "vocab_size": 128256,
            "tie_word_embeddings": True,
        },
        "t",
    )
    assert fit is not None and fit.weight_bytes == 2 * arch.parameter_count
    (error,) = plan.errors
    assert (
        error.path == ("experts", 1, "model", "config") and "someone/unknown-model" in error.message
    )


def test_llama31_needs_a_toolchain_with_llama3_rope(tmp_path: Path, engines_dir: Path) -> None:
    data = gpu_inventory()
    data["experts"][0]["model"]["repo"] = "meta-llama/Llama-3.1-8B-Instruct"
    plan = make_plan(load_inventory(write(tmp_path, data), engines_dir))
    assert [f.path for f in plan.errors] == [("experts", 0, "model", "repo")]
    data["toolchain"] = "trtllm-1.2"
    assert make_plan(load_inventory(write(tmp_path, data), engines_dir)).errors == []


def test_fp8_refused_where_automatic_placement_lands_it(tmp_path: Path, engines_dir: Path) -> None:
    data = gpu_inventory()
    data["hosts"][0]["gpus"]["model"] = "A100-SXM-80GB"
    data["experts"][0]["quantization"] = "fp8"  # no explicit placement: the planner checks it
    plan = make_plan(load_inventory(write(tmp_path, data), engines_dir))
    (error,) = plan.errors
    assert error.path == ("experts", 0, "quantization")
    assert (
        "fp8 needs compute capability 8.9 or newer; host h1 has A100-SXM-80GB (8.0)"
        in error.message
    )


@pytest.mark.parametrize(("cpus", "warned"), [("3", True), ("2-3", False), (None, False)])
def test_gateway_replicas_sharing_a_cpu_are_warned_about(
    tmp_path: Path, engines_dir: Path, cpus: str | None, warned: bool
) -> None:
    data = gpu_inventory()
    data["gateway"] = {"replicas": 2, **({"cpus": cpus} if cpus else {})}
    plan = make_plan(load_inventory(write(tmp_path, data), engines_dir))
    found = [f for f in plan.warnings if f.path == ("gateway", "cpus")]
    assert bool(found) is warned
    if warned:
        assert found[0].message.startswith("2 gateway replicas share 1 CPU(s)")
        assert not plan.errors  # a warning: oversubscribing may be deliberate
