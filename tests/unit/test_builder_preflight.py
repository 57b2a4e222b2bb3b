"""Pre-flight checks: each failure mode is caught with a fix, and a good build passes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from expert_deploy.builder.preflight import check_build, check_engine
from expert_deploy.builder.recipes import CONTAINER_PATHS, BuildStep, Recipe, recipe
from expert_deploy.inventory import Expert, Toolchain, load_toolchain

ENGINES = Path(__file__).resolve().parents[2] / "engines"


@pytest.fixture(scope="module")
def tc011() -> Toolchain:
    return load_toolchain("trtllm-0.11", ENGINES)


@pytest.fixture(scope="module")
def tc12() -> Toolchain:
    return load_toolchain("trtllm-1.2", ENGINES)


def expert(**fields: Any) -> Expert:
    data: dict[str, Any] = {"id": "e0", "cluster": 0, "model": {"repo": "a/b"}}
    data.update(fields)
    return Expert.model_validate(data)


def problems(
    e: Expert,
    tc: Toolchain,
    *,
    cap: tuple[int, int] = (9, 0),
    rope: str | None = None,
    gpus: int | None = None,
    r: Recipe | None = None,
) -> list[str]:
    found = check_build(
        e,
        tc,
        r or recipe(e, tc, CONTAINER_PATHS, cap),
        capability=cap,
        rope_type=rope,
        gpus_assigned=e.tp_size * e.pp_size if gpus is None else gpus,
    )
    return [str(p) for p in found]


def test_a_good_build_has_no_problems(tc011: Toolchain) -> None:
    assert problems(expert(quantization="int4_awq"), tc011) == []


def test_fp8_needs_ada_or_newer(tc12: Toolchain) -> None:
    (found,) = problems(expert(quantization="fp8"), tc12, cap=(8, 0))
    assert "8.9" in found and "8.0" in found and "int4_awq" in found
    (kv,) = problems(expert(quantization="int4_awq", kv_cache_dtype="fp8"), tc12, cap=(8, 6))
    assert "fp8 needs compute capability 8.9" in kv
    assert problems(expert(quantization="fp8"), tc12, cap=(8, 9)) == []


def test_fp8_context_fmha_needs_hopper(tc12: Toolchain) -> None:
    e = expert(quantization="fp8")
    hopper = recipe(e, tc12, CONTAINER_PATHS, (9, 0))  # emits --use_fp8_context_fmha
    (found,) = problems(e, tc12, cap=(8, 9), r=hopper)
    assert "FP8 context FMHA needs compute capability 9.0" in found


def test_llama31_rope_needs_a_toolchain_that_supports_it(tc011: Toolchain, tc12: Toolchain) -> None:
    (found,) = problems(expert(), tc011, rope="llama3")
    assert "trtllm-1.2" in found and "KeyError" in found
    assert problems(expert(), tc12, rope="llama3") == []


def test_input_must_be_shorter_than_sequence(tc011: Toolchain) -> None:
    e = expert(max_input_len=4096, max_seq_len=4096)
    r = Recipe((BuildStep("trtllm_build", ("trtllm-build",)),), "bfloat16", None)
    (found,) = problems(e, tc011, r=r)
    assert "max_input_len 4096 is not below max_seq_len 4096" in found


def test_world_size_must_match_assigned_gpus(tc011: Toolchain) -> None:
    (found,) = problems(expert(tp_size=4), tc011, gpus=2)
    assert "world size tp_size × pp_size = 4" in found and "2 GPU(s)" in found


def test_quantized_kv_cache_needs_a_calibrated_recipe(tc011: Toolchain) -> None:
    (found,) = problems(expert(quantization="bf16", kv_cache_dtype="int8"), tc011)
    assert "calibration" in found


def _engine(tmp_path: Path, config: dict[str, Any] | str) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    text = config if isinstance(config, str) else json.dumps(config)
    (tmp_path / "config.json").write_text(text)
    return tmp_path


def _config(version: str = "0.11.0", tp: int = 1, pp: int = 1) -> dict[str, Any]:
    return {
        "version": version,
        "pretrained_config": {"mapping": {"world_size": tp * pp, "tp_size": tp, "pp_size": pp}},
        "build_config": {},
    }


def test_engine_version_must_match_the_serving_container(tmp_path: Path, tc011: Toolchain) -> None:
    good = _engine(tmp_path / "good", _config())
    assert check_engine(expert(), tc011, good, gpus_assigned=1) == []
    skewed = _engine(tmp_path / "skew", _config(version="0.10.0"))
    (found,) = check_engine(expert(), tc011, skewed, gpus_assigned=1)
    assert "0.10.0" in str(found) and "0.11.0" in str(found) and "rebuild" in found.fix


def test_engine_mapping_and_visible_gpus(tmp_path: Path, tc011: Toolchain) -> None:
    tp4 = _engine(tmp_path / "tp4", _config(tp=4))
    (mismatch,) = check_engine(expert(tp_size=2), tc011, tp4, gpus_assigned=2)
    assert "TP 4" in str(mismatch)
    (few,) = check_engine(expert(tp_size=4), tc011, tp4, gpus_assigned=1)
    assert "needs 4 GPU(s)" in str(few)


def test_unreadable_engine_config(tmp_path: Path, tc011: Toolchain) -> None:
    (found,) = check_engine(expert(), tc011, _engine(tmp_path, "{"), gpus_assigned=1)
    assert "not JSON" in str(found)
