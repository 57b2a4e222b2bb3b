"""Values for the ``${placeholders}`` of tensorrtllm_backend's inflight_batcher_llm templates.

Every placeholder the toolchain's backend version has (``engines/<toolchain>.yaml``,
``triton_placeholders``) gets exactly one decision: a value computed from the inventory and
the plan, or "left to the backend default" with the reason. A placeholder the toolchain lists
that this module does not know is an error, so a new backend version cannot be rendered by
silently dropping one (see shared/reference/trtllm-triton.md §5.2–5.3).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from expert_deploy.errors import RenderError
from expert_deploy.inventory.models import Expert
from expert_deploy.inventory.toolchain import Toolchain
from expert_deploy.plan.placement import ServerPlacement

#: The four models of the ensemble path. tensorrt_llm_bls is not rendered: the gateway calls
#: the ensemble, and the BLS model only adds draft-model speculative decoding we do not use.
RENDERED_MODELS = ("preprocessing", "tensorrt_llm", "postprocessing", "ensemble")

#: Placeholders that are fields of the config itself (not ``parameters`` entries).
STRUCTURAL = frozenset(
    {
        "triton_max_batch_size",
        "decoupled_mode",
        "max_queue_delay_microseconds",
        "max_queue_size",
        "triton_backend",
        "logits_datatype",
        "encoder_input_features_data_type",
        "prompt_embedding_table_data_type",
        "preprocessing_instance_count",
        "postprocessing_instance_count",
    }
)

#: Placeholder → ``parameters`` key where the template names them differently.
PARAMETER_KEY = {
    "engine_dir": "gpt_model_path",
    "batching_strategy": "gpt_model_type",
    "encoder_engine_dir": "encoder_model_path",
}

#: Optional placeholders deliberately left out, so the backend applies its own default. The
#: C++ backend reads each parameter in a try/catch; an absent key is the quiet way to say so.
LEFT_TO_BACKEND: dict[str, str] = {
    "max_tokens_in_paged_kv_cache": "KV cache sized by kv_cache_free_gpu_mem_fraction",
    "max_attention_window_size": "full attention over max_seq_len",
    "sink_token_length": "no StreamingLLM sink tokens",
    "kv_cache_host_memory_bytes": "no KV offload to host memory",
    "kv_cache_onboard_blocks": "backend default (true)",
    "enable_kv_cache_reuse": "needs paged context FMHA at build time; default off",
    "normalize_log_probs": "backend default (true)",
    "enable_chunked_context": "needs paged context FMHA at build time; default off",
    "cancellation_check_period_ms": "backend default (100 ms)",
    "stats_check_period_ms": "backend default (100 ms)",
    "iter_stats_max_iterations": "backend default",
    "request_stats_max_iterations": "backend default",
    "lora_cache_optimal_adapter_size": "no LoRA adapters",
    "lora_cache_max_adapter_size": "no LoRA adapters",
    "lora_cache_gpu_memory_fraction": "no LoRA adapters",
    "lora_cache_host_memory_bytes": "no LoRA adapters",
    "lora_prefetch_dir": "no LoRA adapters",
    "decoding_mode": "chosen by the backend from max_beam_width",
    "medusa_choices": "no speculative decoding",
    "eagle_choices": "no speculative decoding",
    "lookahead_window_size": "no speculative decoding",
    "lookahead_ngram_size": "no speculative decoding",
    "lookahead_verification_set_size": "no speculative decoding",
    "speculative_decoding_fast_logits": "no speculative decoding",
    "gpu_weights_percent": "no weight streaming",
    "encoder_engine_dir": "decoder-only model",
    "cross_kv_cache_fraction": "decoder-only model",
    "enable_trt_overlap": "experimental; off",
    "multi_block_mode": "backend default",
    "enable_context_fmha_fp32_acc": "backend default",
    "cuda_graph_mode": "backend default (off)",
    "cuda_graph_cache_size": "backend default",
    "participant_ids": "leader mode on one node",
    "num_nodes": "one node per server",
    "guided_decoding_backend": "no guided decoding",
    "xgrammar_tokenizer_info_path": "no guided decoding",
    "multimodal_model_path": "text-only model",
    "max_num_images": "text-only model",
}

#: Prompt-table and encoder-feature dtype follow the model's activation dtype.
_ACTIVATION_DTYPE = {"bf16": "TYPE_BF16", "fp16": "TYPE_FP16", "fp8": "TYPE_FP16"}


@dataclass(frozen=True)
class ModelValues:
    """One model's placeholders: those filled (name → text) and those left to the backend."""

    model: str
    filled: dict[str, str]
    left_to_backend: dict[str, str]

    def parameters(self) -> list[tuple[str, str]]:
        """``parameters`` entries (key, value), sorted for byte-stable output."""
        return sorted(
            (PARAMETER_KEY.get(name, name), value)
            for name, value in self.filled.items()
            if name not in STRUCTURAL
        )


def instance_count(max_batch_size: int) -> int:
    """Tokenizer instances: Python models hold the GIL, so a few run side by side; one per
    32 sequences in flight is enough to keep tokenisation off the critical path (cap 8)."""
    return max(1, min(8, math.ceil(max_batch_size / 32)))


def all_values(
    expert: Expert, server: ServerPlacement, engine_dir: Path, tokenizer_dir: Path
) -> dict[str, str]:
    """Every value expert-deploy computes, for any backend version."""
    activation = _ACTIVATION_DTYPE.get(expert.quantization, "TYPE_FP16")
    # CUDA renumbers the GPUs listed in CUDA_VISIBLE_DEVICES from 0, and the runtime gives
    # each server exactly its own GPUs, so rank r runs on device r (trtllm-triton.md §4).
    devices = ",".join(str(i) for i in range(len(server.gpus))) if server.gpus else "0"
    return {
        "triton_max_batch_size": str(expert.max_batch_size),
        "decoupled_mode": "true",  # streaming needs decoupled mode (§5.5)
        # The in-flight batcher schedules by itself; a Triton-side delay only adds TTFT.
        "max_queue_delay_microseconds": "0",
        "max_queue_size": "0",  # 0 = unbounded; the gateway bounds its own queue
        "triton_backend": "tensorrtllm",
        "batching_strategy": "inflight_fused_batching",
        "engine_dir": str(engine_dir),
        "tokenizer_dir": str(tokenizer_dir),
        "kv_cache_free_gpu_mem_fraction": f"{expert.kv_cache_free_gpu_mem_fraction:g}",
        "max_beam_width": "1",
        "batch_scheduler_policy": "guaranteed_no_evict",  # never evict a started stream
        # Streams carry only new tokens: the gateway relays them as they come.
        "exclude_input_in_output": "true",
        "gpu_device_ids": devices,
        "add_special_tokens": "true",
        "skip_special_tokens": "true",
        "preprocessing_instance_count": str(instance_count(expert.max_batch_size)),
        "postprocessing_instance_count": str(instance_count(expert.max_batch_size)),
        "logits_datatype": "TYPE_FP32",  # trtllm-build's default --logits_dtype
        "encoder_input_features_data_type": activation,
        "prompt_embedding_table_data_type": activation,
    }


def model_values(toolchain: Toolchain, computed: dict[str, str]) -> dict[str, ModelValues]:
    """Split the toolchain's placeholder set of each rendered model into filled / left out.

    Raises:
        RenderError: the toolchain lists a placeholder this renderer has no decision for.
    """
    result = {}
    for model in RENDERED_MODELS:
        names = toolchain.triton_placeholders.get(model, frozenset())
        unknown = sorted(n for n in names if n not in computed and n not in LEFT_TO_BACKEND)
        if unknown:
            raise RenderError(
                f"toolchain {toolchain.name} ({toolchain.triton_backend_version}) model {model} "
                f"has placeholders expert-deploy cannot fill: {', '.join(unknown)}"
            )
        filled = {n: computed[n] for n in sorted(names) if n in computed}
        left = {n: LEFT_TO_BACKEND[n] for n in sorted(names) if n not in computed}
        result[model] = ModelValues(model, filled, left)
    return result
