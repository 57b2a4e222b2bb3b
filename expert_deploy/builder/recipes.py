"""Pure argv builders: an expert and a toolchain in, the exact build commands out.

Two steps per engine (TensorRT-LLM's TensorRT-engine path): the Hugging Face checkpoint is
converted (BF16/FP16, ``convert_checkpoint.py``) or quantized (FP8, INT4-AWQ, ``quantize.py``)
into a TensorRT-LLM checkpoint with TP and PP baked in, then ``trtllm-build`` compiles it.
Every value a version might default differently is passed explicitly, and only full option
names are emitted (argparse would accept prefixes; a later version could make them ambiguous).

Paths are parameters: the cache key is computed from argv with the fixed container paths of
:data:`CONTAINER_PATHS`, so the key never depends on where a workdir lives.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

from expert_deploy.inventory.gpus import FP8_CONTEXT_FMHA_MIN_CAPABILITY, FP8_MIN_CAPABILITY
from expert_deploy.inventory.models import Expert
from expert_deploy.inventory.toolchain import Toolchain

Capability = tuple[int, int]

#: Calibration samples: ModelOpt's 512 for FP8; 32 for AWQ, the value v0.11 clamps every
#: ``*awq*`` format to anyway, passed so newer versions calibrate the same way.
CALIB_SIZE = {"fp8": 512, "int4_awq": 32}
AWQ_BLOCK_SIZE = 128
#: trtllm-build v0.11's own default; raised to max_input_len so a whole prompt fits one step.
DEFAULT_MAX_NUM_TOKENS = 8192

_CHECKPOINT_DTYPE = {
    "bf16": "bfloat16",
    "fp16": "float16",
    "fp8": "bfloat16",
    "int4_awq": "bfloat16",
}


@dataclass(frozen=True)
class BuildPaths:
    """Where a build reads and writes, as the build command sees them."""

    model_dir: str
    output_root: str
    calib_dataset: str | None = None

    @property
    def checkpoint_dir(self) -> str:
        return str(PurePosixPath(self.output_root) / "checkpoint")

    @property
    def engine_dir(self) -> str:
        return str(PurePosixPath(self.output_root) / "engine")

    @property
    def timing_cache(self) -> str:
        return str(PurePosixPath(self.output_root) / "timing.cache")


#: Mount points inside the toolchain container (and the paths the cache key is computed with).
CONTAINER_MODEL_DIR = "/expert-deploy/model"
CONTAINER_OUTPUT_ROOT = "/expert-deploy/out"
CONTAINER_CALIB_DIR = "/expert-deploy/calib"
CONTAINER_PATHS = BuildPaths(CONTAINER_MODEL_DIR, CONTAINER_OUTPUT_ROOT)


@dataclass(frozen=True)
class BuildStep:
    """One command of a recipe; ``script`` names the toolchain flag set its options obey."""

    script: str  # "convert_checkpoint" | "quantize" | "trtllm_build"
    argv: tuple[str, ...]


@dataclass(frozen=True)
class Recipe:
    """The commands that turn one expert's checkpoint into engines."""

    steps: tuple[BuildStep, ...]
    checkpoint_dtype: str
    calib_size: int | None

    @property
    def argv_lists(self) -> list[list[str]]:
        return [list(step.argv) for step in self.steps]


def checkpoint_dtype(expert: Expert) -> str:
    """The dtype of the TensorRT-LLM checkpoint's unquantized parts (Llama 3 is bfloat16)."""
    return _CHECKPOINT_DTYPE[expert.quantization]


def max_num_tokens(expert: Expert) -> int:
    """Explicit ``--max_num_tokens``: the inventory's, else 8192 or max_input_len if larger."""
    return expert.max_num_tokens or max(DEFAULT_MAX_NUM_TOKENS, expert.max_input_len)


def convert_argv(expert: Expert, toolchain: Toolchain, paths: BuildPaths) -> list[str]:
    """``python3 convert_checkpoint.py …`` for BF16/FP16 experts."""
    ranks = str(expert.tp_size * expert.pp_size)
    return [
        "python3",
        toolchain.scripts.convert_checkpoint,
        "--model_dir", paths.model_dir,
        "--output_dir", paths.checkpoint_dir,
        "--dtype", checkpoint_dtype(expert),
        "--tp_size", str(expert.tp_size),
        "--pp_size", str(expert.pp_size),
        "--workers", ranks,
    ]  # fmt: skip


def quantize_argv(expert: Expert, toolchain: Toolchain, paths: BuildPaths) -> list[str]:
    """``python3 quantize.py …`` (ModelOpt PTQ) for FP8 and INT4-AWQ experts."""
    qformat = expert.quantization
    argv = [
        "python3",
        toolchain.scripts.quantize,
        "--model_dir", paths.model_dir,
        "--output_dir", paths.checkpoint_dir,
        # v0.9–v0.11 default to float16; Llama 3's unquantized parts are bfloat16.
        "--dtype", "bfloat16",
        "--qformat", qformat,
        "--calib_size", str(CALIB_SIZE[qformat]),
        "--tp_size", str(expert.tp_size),
        "--pp_size", str(expert.pp_size),
    ]  # fmt: skip
    if qformat == "int4_awq":
        argv += ["--awq_block_size", str(AWQ_BLOCK_SIZE)]
    kv = _quantized_kv_cache(expert)
    if kv is not None:
        argv += ["--kv_cache_dtype", kv]
    if paths.calib_dataset is not None:
        # The default (cnn_dailymail) is fetched from the hub; builds here run offline.
        argv += ["--calib_dataset", paths.calib_dataset]
    return argv


def _quantized_kv_cache(expert: Expert) -> str | None:
    """quantize.py's ``--kv_cache_dtype``: fp8/int8 when asked; FP8 weights imply FP8 KV."""
    if expert.kv_cache_dtype in ("fp8", "int8"):
        return expert.kv_cache_dtype
    if expert.quantization == "fp8" and expert.kv_cache_dtype == "auto":
        return "fp8"
    return None


def trtllm_build_argv(
    expert: Expert, toolchain: Toolchain, paths: BuildPaths, capability: Capability
) -> list[str]:
    """``trtllm-build …`` with explicit limits and plugin settings valid for ``toolchain``."""
    plugin = "auto" if toolchain.plugin_dtype_auto else checkpoint_dtype(expert)
    ranks = str(expert.tp_size * expert.pp_size)
    argv = [
        toolchain.scripts.trtllm_build,
        "--checkpoint_dir", paths.checkpoint_dir,
        "--output_dir", paths.engine_dir,
        "--max_batch_size", str(expert.max_batch_size),
        "--max_input_len", str(expert.max_input_len),
    ]  # fmt: skip
    if toolchain.uses_max_seq_len:
        argv += ["--max_seq_len", str(expert.max_seq_len)]
    else:
        # v0.9/v0.10 size the sequence as input + output.
        argv += ["--max_output_len", str(expert.max_seq_len - expert.max_input_len)]
    argv += [
        "--max_num_tokens", str(max_num_tokens(expert)),
        "--workers", ranks,
        "--gemm_plugin", plugin,
        "--gpt_attention_plugin", plugin,
        # Needed for KV-cache reuse; off by default before the 1.x line.
        "--use_paged_context_fmha", "enable",
    ]  # fmt: skip
    if uses_fp8_context_fmha(expert, capability):
        argv += ["--use_fp8_context_fmha", "enable"]
    argv += ["--output_timing_cache", paths.timing_cache]
    return argv


def uses_fp8_context_fmha(expert: Expert, capability: Capability) -> bool:
    """FP8 context FMHA: FP8 experts on Hopper or newer (it fails on earlier GPUs)."""
    return expert.quantization == "fp8" and capability >= FP8_CONTEXT_FMHA_MIN_CAPABILITY


def recipe(
    expert: Expert, toolchain: Toolchain, paths: BuildPaths, capability: Capability
) -> Recipe:
    """Both build steps of ``expert``; pure, so the same inputs give the same argv."""
    quantized = expert.quantization in CALIB_SIZE
    first = (
        BuildStep("quantize", tuple(quantize_argv(expert, toolchain, paths)))
        if quantized
        else BuildStep("convert_checkpoint", tuple(convert_argv(expert, toolchain, paths)))
    )
    second = BuildStep(
        "trtllm_build", tuple(trtllm_build_argv(expert, toolchain, paths, capability))
    )
    return Recipe(
        (first, second),
        checkpoint_dtype(expert),
        CALIB_SIZE.get(expert.quantization) if quantized else None,
    )


def options_of(step: BuildStep) -> list[str]:
    """The option names in a step's argv (what the toolchain's flag sets must contain)."""
    return [arg for arg in step.argv if arg.startswith("-")]


def fp8_supported(capability: Capability) -> bool:
    return capability >= FP8_MIN_CAPABILITY
