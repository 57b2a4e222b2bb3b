"""Argv builders: exact lists for the paper's recipes, and every flag accepted by its toolchain."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from expert_deploy.builder.recipes import (
    CONTAINER_PATHS,
    BuildPaths,
    options_of,
    recipe,
)
from expert_deploy.inventory import Expert, Toolchain, load_toolchain

H100 = (9, 0)
L40S = (8, 9)
A100 = (8, 0)
TOOLCHAINS = ("trtllm-0.11", "trtllm-1.2")
LLAMA_8B = {"repo": "meta-llama/Meta-Llama-3-8B-Instruct"}
LLAMA_70B = {"repo": "meta-llama/Meta-Llama-3-70B-Instruct"}


def expert(**fields: object) -> Expert:
    data: dict[str, object] = {"id": "e0", "cluster": 0, "model": LLAMA_8B}
    data.update(fields)
    return Expert.model_validate(data)


@pytest.fixture(scope="module")
def toolchains() -> dict[str, Toolchain]:
    engines = Path(__file__).resolve().parents[2] / "engines"
    return {name: load_toolchain(name, engines) for name in TOOLCHAINS}


def test_bf16_8b_on_trtllm_011_exact(toolchains: dict[str, Toolchain]) -> None:
    e = expert(quantization="bf16", max_batch_size=64, max_input_len=2048, max_seq_len=4096)
    r = recipe(e, toolchains["trtllm-0.11"], CONTAINER_PATHS, H100)
    assert r.argv_lists == [
        [
            "python3", "/app/tensorrt_llm/examples/llama/convert_checkpoint.py",
            "--model_dir", "/expert-deploy/model",
            "--output_dir", "/expert-deploy/out/checkpoint",
            "--dtype", "bfloat16",
            "--tp_size", "1",
            "--pp_size", "1",
            "--workers", "1",
        ],
        [
            "trtllm-build",
            "--checkpoint_dir", "/expert-deploy/out/checkpoint",
            "--output_dir", "/expert-deploy/out/engine",
            "--max_batch_size", "64",
            "--max_input_len", "2048",
            "--max_seq_len", "4096",
            "--max_num_tokens", "8192",
            "--workers", "1",
            "--gemm_plugin", "auto",
            "--gpt_attention_plugin", "auto",
            "--use_paged_context_fmha", "enable",
            "--output_timing_cache", "/expert-deploy/out/timing.cache",
        ],
    ]  # fmt: skip
    assert r.checkpoint_dtype == "bfloat16"
    assert r.calib_size is None


def test_int4_awq_70b_tp4_on_trtllm_011_exact(toolchains: dict[str, Toolchain]) -> None:
    e = expert(
        model=LLAMA_70B,
        quantization="int4_awq",
        kv_cache_dtype="int8",
        tp_size=4,
        max_batch_size=125,
        max_input_len=3072,
        max_seq_len=4096,
        max_num_tokens=16384,
    )
    paths = BuildPaths("/m", "/o", calib_dataset="/calib")
    r = recipe(e, toolchains["trtllm-0.11"], paths, H100)
    assert r.argv_lists == [
        [
            "python3", "/app/tensorrt_llm/examples/quantization/quantize.py",
            "--model_dir", "/m",
            "--output_dir", "/o/checkpoint",
            "--dtype", "bfloat16",
            "--qformat", "int4_awq",
            "--calib_size", "32",
            "--tp_size", "4",
            "--pp_size", "1",
            "--awq_block_size", "128",
            "--kv_cache_dtype", "int8",
            "--calib_dataset", "/calib",
        ],
        [
            "trtllm-build",
            "--checkpoint_dir", "/o/checkpoint",
            "--output_dir", "/o/engine",
            "--max_batch_size", "125",
            "--max_input_len", "3072",
            "--max_seq_len", "4096",
            "--max_num_tokens", "16384",
            "--workers", "4",
            "--gemm_plugin", "auto",
            "--gpt_attention_plugin", "auto",
            "--use_paged_context_fmha", "enable",
            "--output_timing_cache", "/o/timing.cache",
        ],
    ]  # fmt: skip
    assert r.calib_size == 32


def test_fp8_on_trtllm_12_hopper_exact(toolchains: dict[str, Toolchain]) -> None:
    e = expert(quantization="fp8", max_batch_size=32, max_input_len=1024, max_seq_len=2048)
    r = recipe(e, toolchains["trtllm-1.2"], CONTAINER_PATHS, H100)
    assert r.argv_lists == [
        [
            "python3", "/app/tensorrt_llm/examples/quantization/quantize.py",
            "--model_dir", "/expert-deploy/model",
            "--output_dir", "/expert-deploy/out/checkpoint",
            "--dtype", "bfloat16",
            "--qformat", "fp8",
            "--calib_size", "512",
            "--tp_size", "1",
            "--pp_size", "1",
            "--kv_cache_dtype", "fp8",
        ],
        [
            "trtllm-build",
            "--checkpoint_dir", "/expert-deploy/out/checkpoint",
            "--output_dir", "/expert-deploy/out/engine",
            "--max_batch_size", "32",
            "--max_input_len", "1024",
            "--max_seq_len", "2048",
            "--max_num_tokens", "8192",
            "--workers", "1",
            "--gemm_plugin", "auto",
            "--gpt_attention_plugin", "auto",
            "--use_paged_context_fmha", "enable",
            "--use_fp8_context_fmha", "enable",
            "--output_timing_cache", "/expert-deploy/out/timing.cache",
        ],
    ]  # fmt: skip


def test_fp8_context_fmha_only_on_hopper(toolchains: dict[str, Toolchain]) -> None:
    e = expert(quantization="fp8")
    ada = recipe(e, toolchains["trtllm-1.2"], CONTAINER_PATHS, L40S)
    assert "--use_fp8_context_fmha" not in ada.steps[1].argv
    bf16 = recipe(expert(), toolchains["trtllm-1.2"], CONTAINER_PATHS, H100)
    assert "--use_fp8_context_fmha" not in bf16.steps[1].argv


def test_fp16_uses_float16_and_max_num_tokens_covers_long_inputs(
    toolchains: dict[str, Toolchain],
) -> None:
    e = expert(quantization="fp16", max_input_len=10000, max_seq_len=12000)
    r = recipe(e, toolchains["trtllm-0.11"], CONTAINER_PATHS, A100)
    first, second = (list(s.argv) for s in r.steps)
    assert first[first.index("--dtype") + 1] == "float16"
    assert second[second.index("--max_num_tokens") + 1] == "10000"


def test_v010_style_toolchain_takes_max_output_len_and_checkpoint_dtype_plugins(
    toolchains: dict[str, Toolchain],
) -> None:
    base = toolchains["trtllm-0.11"]
    old_flags = (base.flags.trtllm_build - {"--max_seq_len"}) | {"--max_output_len"}
    v010 = base.model_copy(
        update={
            "uses_max_seq_len": False,
            "plugin_dtype_auto": False,
            "flags": base.flags.model_copy(update={"trtllm_build": old_flags}),
        }
    )
    e = expert(quantization="bf16", max_input_len=3072, max_seq_len=4096)
    argv = list(recipe(e, v010, CONTAINER_PATHS, H100).steps[1].argv)
    assert "--max_seq_len" not in argv
    assert argv[argv.index("--max_output_len") + 1] == "1024"
    assert argv[argv.index("--gemm_plugin") + 1] == "bfloat16"
    assert argv[argv.index("--gpt_attention_plugin") + 1] == "bfloat16"
    assert set(options_of(recipe(e, v010, CONTAINER_PATHS, H100).steps[1])) <= old_flags


QUANTS = ("bf16", "fp16", "fp8", "int4_awq")
KVS = ("auto", "fp8", "int8")
SHAPES = ((1, 1), (4, 1), (8, 1), (2, 2))
CAPS = (A100, L40S, H100)


@pytest.mark.parametrize("toolchain_name", TOOLCHAINS)
def test_every_emitted_flag_is_accepted_and_has_a_value(
    toolchains: dict[str, Toolchain], toolchain_name: str
) -> None:
    toolchain = toolchains[toolchain_name]
    accepted = {
        "convert_checkpoint": toolchain.flags.convert_checkpoint,
        "quantize": toolchain.flags.quantize,
        "trtllm_build": toolchain.flags.trtllm_build,
    }
    checked = 0
    for quant, kv, (tp, pp), cap, calib in itertools.product(
        QUANTS, KVS, SHAPES, CAPS, (None, "/calib")
    ):
        e = expert(quantization=quant, kv_cache_dtype=kv, tp_size=tp, pp_size=pp)
        r = recipe(e, toolchain, BuildPaths("/m", "/o", calib), cap)
        for step in r.steps:
            options = options_of(step)
            assert set(options) <= accepted[step.script], (step.script, options)
            assert all(not o.startswith("-") or o.startswith("--") for o in options)
            assert len(options) == len(set(options)), f"repeated option in {step.argv}"
            argv = list(step.argv)
            for option in options:  # every option here takes exactly one value
                value = argv[argv.index(option) + 1]
                assert value and not value.startswith("--"), (option, argv)
            checked += 1
        build = list(r.steps[1].argv)
        for required in (
            "--checkpoint_dir", "--output_dir", "--max_batch_size", "--max_input_len",
            "--max_num_tokens", "--workers", "--gemm_plugin", "--gpt_attention_plugin",
            "--use_paged_context_fmha", "--output_timing_cache",
        ):  # fmt: skip
            assert required in build
        assert ("--max_seq_len" in build) == toolchain.uses_max_seq_len
        first = list(r.steps[0].argv)
        for required in ("--model_dir", "--output_dir", "--dtype", "--tp_size", "--pp_size"):
            assert required in first
        assert first[first.index("--tp_size") + 1] == str(tp)
        if quant in ("fp8", "int4_awq"):
            assert first[first.index("--qformat") + 1] == quant
            assert "--calib_size" in first
            assert ("--calib_dataset" in first) == (calib is not None)
    assert checked == len(QUANTS) * len(KVS) * len(SHAPES) * len(CAPS) * 2 * 2
