"""Pre-flight checks: what would make a build fail or an engine refuse to load, found first.

Each check is pure and returns :class:`Problem` values that say what is wrong and how to fix
it; the sources of every rule are the failure modes in the TensorRT-LLM reference (§7):
FP8 on pre-Ada GPUs, FP8 context FMHA before Hopper, Llama 3.1 rope on v0.11, engine and
serving versions that differ, and world sizes the server cannot satisfy.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from expert_deploy.builder.recipes import CALIB_SIZE, Capability, Recipe
from expert_deploy.inventory.gpus import FP8_CONTEXT_FMHA_MIN_CAPABILITY, FP8_MIN_CAPABILITY
from expert_deploy.inventory.models import Expert
from expert_deploy.inventory.toolchain import Toolchain


@dataclass(frozen=True)
class Problem:
    expert: str
    message: str
    fix: str

    def __str__(self) -> str:
        return f"{self.expert}: {self.message}; {self.fix}"


def _cc(capability: Capability) -> str:
    return f"{capability[0]}.{capability[1]}"


def check_build(
    expert: Expert,
    toolchain: Toolchain,
    recipe: Recipe,
    *,
    capability: Capability,
    rope_type: str | None,
    gpus_assigned: int,
) -> list[Problem]:
    """Everything known before a build starts that would make it fail."""
    problems: list[Problem] = []
    wants_fp8 = expert.quantization == "fp8" or expert.kv_cache_dtype == "fp8"
    if wants_fp8 and capability < FP8_MIN_CAPABILITY:
        problems.append(
            Problem(
                expert.id,
                f"fp8 needs compute capability 8.9 or newer, the GPUs have {_cc(capability)}",
                "use quantization int4_awq or bf16 (and kv_cache_dtype auto or int8)",
            )
        )
    argv = [arg for step in recipe.steps for arg in step.argv]
    if "--use_fp8_context_fmha" in argv and capability < FP8_CONTEXT_FMHA_MIN_CAPABILITY:
        problems.append(
            Problem(
                expert.id,
                f"FP8 context FMHA needs compute capability 9.0, the GPUs have {_cc(capability)}",
                "build without --use_fp8_context_fmha (only Hopper or newer supports it)",
            )
        )
    if rope_type == "llama3" and not toolchain.supports_llama3_rope:
        problems.append(
            Problem(
                expert.id,
                f"the model uses Llama 3.1 rope scaling, which toolchain {toolchain.name} "
                "cannot build (KeyError 'type')",
                "use toolchain trtllm-1.2 or a Llama 3 model",
            )
        )
    if expert.max_input_len >= expert.max_seq_len:
        problems.append(
            Problem(
                expert.id,
                f"max_input_len {expert.max_input_len} is not below max_seq_len "
                f"{expert.max_seq_len}",
                "raise max_seq_len or lower max_input_len",
            )
        )
    if expert.quantization in ("bf16", "fp16") and expert.kv_cache_dtype in ("fp8", "int8"):
        problems.append(
            Problem(
                expert.id,
                f"a {expert.kv_cache_dtype} KV cache needs calibration, which the "
                f"{expert.quantization} recipe does not run",
                "use quantization fp8 or int4_awq, or kv_cache_dtype auto",
            )
        )
    problems.extend(_world_size(expert, gpus_assigned))
    return problems


def check_calibration(expert: Expert, toolchain: Toolchain) -> list[Problem]:
    """A ``calib_dataset`` the toolchain's quantize.py cannot take (v0.9 has no flag for it)."""
    if expert.calib_dataset is None or expert.quantization not in CALIB_SIZE:
        return []
    if "--calib_dataset" in toolchain.flags.quantize:
        return []
    return [
        Problem(
            expert.id,
            f"toolchain {toolchain.name}'s quantize.py has no --calib_dataset option",
            "remove calib_dataset or use a newer toolchain",
        )
    ]


def _world_size(expert: Expert, gpus_assigned: int) -> list[Problem]:
    world = expert.tp_size * expert.pp_size
    if gpus_assigned == world:
        return []
    return [
        Problem(
            expert.id,
            f"world size tp_size × pp_size = {world} but the server is given "
            f"{gpus_assigned} GPU(s)",
            "make placement.gpus list tp_size × pp_size GPUs per replica",
        )
    ]


def check_engine(
    expert: Expert, toolchain: Toolchain, engine_dir: Path, *, gpus_assigned: int
) -> list[Problem]:
    """A built (or cached) engine against the serving container and the placement.

    Reads ``engine_dir/config.json``; an unreadable one is itself a problem.
    """
    config = _read_config(engine_dir / "config.json")
    if config is None:
        return [
            Problem(
                expert.id,
                f"{engine_dir / 'config.json'} is missing or not JSON",
                "rebuild the engine (delete its cache directory)",
            )
        ]
    problems: list[Problem] = []
    version = config.get("version")
    if version != toolchain.tensorrt_llm_version:
        problems.append(
            Problem(
                expert.id,
                f"the engine was built by TensorRT-LLM {version or 'of unknown version'}, the "
                f"serving container {toolchain.triton_image} has "
                f"{toolchain.tensorrt_llm_version} (it would fail to deserialize)",
                "rebuild with the serving container's toolchain",
            )
        )
    mapping = config.get("pretrained_config", {}).get("mapping", {})
    tp, pp = mapping.get("tp_size", 1), mapping.get("pp_size", 1)
    world = mapping.get("world_size", tp * pp)
    if world != tp * pp or (tp, pp) != (expert.tp_size, expert.pp_size):
        problems.append(
            Problem(
                expert.id,
                f"the engine maps world size {world} as TP {tp} × PP {pp}, the inventory "
                f"asks for TP {expert.tp_size} × PP {expert.pp_size}",
                "rebuild the engine for the inventory's tp_size and pp_size",
            )
        )
    elif world != gpus_assigned:
        problems.append(
            Problem(
                expert.id,
                f"the engine needs {world} GPU(s) (MPI world size) but the server sees "
                f"{gpus_assigned}",
                "give the server tp_size × pp_size GPUs",
            )
        )
    return problems


def _read_config(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
