"""A TensorRT-LLM toolchain: one YAML file in engines/, loaded and validated like an inventory.

A toolchain pins everything that makes an engine non-portable (TensorRT-LLM, TensorRT and CUDA
versions, the serving container) and lists exactly what its scripts accept, so argv builders
can be checked flag by flag. Adding a toolchain is adding a file.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Quantization = Literal["fp16", "bf16", "fp8", "int4_awq"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ToolchainScripts(_Frozen):
    """Where the build scripts live inside the toolchain container."""

    convert_checkpoint: str
    quantize: str
    trtllm_build: str = "trtllm-build"


class ToolchainFlags(_Frozen):
    """The exact option strings each script's argument parser accepts."""

    convert_checkpoint: frozenset[str]
    quantize: frozenset[str]
    trtllm_build: frozenset[str]


class Toolchain(_Frozen):
    """One TensorRT-LLM toolchain, as described by ``engines/<name>.yaml``."""

    name: str
    description: str = ""
    tensorrt_llm_version: str
    tensorrt_version: str
    cuda_version: str
    triton_image: str = Field(
        description="serving and build container, e.g. nvcr.io/...:24.07-trtllm-python-py3"
    )
    triton_backend_version: str
    quantizations: frozenset[Quantization]
    #: Llama 3.1's ``rope_scaling.rope_type = "llama3"`` (v0.11.0 fails with KeyError 'type').
    supports_llama3_rope: bool
    #: ``auto`` as a plugin dtype exists from v0.11.0; earlier versions need the checkpoint dtype.
    plugin_dtype_auto: bool
    #: v0.9/v0.10 take --max_output_len; v0.11+ take --max_seq_len.
    uses_max_seq_len: bool
    scripts: ToolchainScripts
    flags: ToolchainFlags
    #: Live ``${placeholder}`` names per inflight_batcher_llm model of the matching backend.
    triton_placeholders: dict[str, frozenset[str]]
    #: Ensemble tensor names: logical name -> name in this version (min_length→min_tokens ...).
    ensemble_inputs: dict[str, str]
    ensemble_outputs: dict[str, str]
    unverified: tuple[str, ...] = ()
