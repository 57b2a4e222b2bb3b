"""The ``tensorrt_llm`` model repository: preprocessing → tensorrt_llm → postprocessing, and
the ``ensemble`` that chains them (tensorrtllm_backend ``all_models/inflight_batcher_llm``).

Only config.pbtxt files are ours. The preprocessing/postprocessing ``1/model.py`` are the
backend's own tokenizer models: the NGC ``*-trtllm-python-py3`` images ship only the backend
libraries (tensorrtllm_backend#216), so the runtime mounts the tensorrtllm_backend checkout of
the toolchain's tag at :data:`BACKEND_MOUNT`, and each ``1/model.py`` here is a symlink into
it. The links dangle on the host and resolve inside the container.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import jinja2

from expert_deploy.inventory.models import Expert
from expert_deploy.inventory.toolchain import Toolchain
from expert_deploy.plan.placement import ServerPlacement
from expert_deploy.render.environment import check_no_placeholders, render_template
from expert_deploy.render.staging import Staging
from expert_deploy.render.trtllm_values import ModelValues, all_values, model_values

#: Where the runtime mounts the tensorrtllm_backend checkout inside the serving container.
BACKEND_MOUNT = PurePosixPath("/opt/tensorrtllm_backend")
_PYTHON_MODELS = ("preprocessing", "postprocessing")


@dataclass(frozen=True)
class _Tensor:
    name: str
    dtype: str
    dims: str
    optional: bool = True


def _ensemble_inputs(names: dict[str, str], prompt_dtype: str) -> list[_Tensor]:
    """Ensemble inputs in the upstream template's order, named as this version names them."""
    table = [
        ("text_input", "TYPE_STRING", "-1", False),
        ("decoder_text_input", "TYPE_STRING", "-1", True),
        ("max_tokens", "TYPE_INT32", "-1", False),
        ("bad_words", "TYPE_STRING", "-1", True),
        ("stop_words", "TYPE_STRING", "-1", True),
        ("end_id", "TYPE_INT32", "1", True),
        ("pad_id", "TYPE_INT32", "1", True),
        ("top_k", "TYPE_INT32", "1", True),
        ("top_p", "TYPE_FP32", "1", True),
        ("temperature", "TYPE_FP32", "1", True),
        ("length_penalty", "TYPE_FP32", "1", True),
        ("repetition_penalty", "TYPE_FP32", "1", True),
        ("min_length", "TYPE_INT32", "1", True),
        ("presence_penalty", "TYPE_FP32", "1", True),
        ("frequency_penalty", "TYPE_FP32", "1", True),
        ("random_seed", "TYPE_UINT64", "1", True),
        ("return_log_probs", "TYPE_BOOL", "1", True),
        ("return_context_logits", "TYPE_BOOL", "1", True),
        ("return_generation_logits", "TYPE_BOOL", "1", True),
        ("beam_width", "TYPE_INT32", "1", True),
        ("stream", "TYPE_BOOL", "1", True),
        ("prompt_embedding_table", prompt_dtype, "-1, -1", True),
        ("prompt_vocab_size", "TYPE_INT32", "1", True),
        ("embedding_bias_words", "TYPE_STRING", "-1", True),
        ("embedding_bias_weights", "TYPE_FP32", "-1", True),
    ]
    return [_Tensor(names[logical], *rest) for logical, *rest in table]  # type: ignore[arg-type]


def _ensemble_outputs(names: dict[str, str], logits_dtype: str) -> list[_Tensor]:
    table = [
        ("text_output", "TYPE_STRING", "-1"),
        ("cum_log_probs", "TYPE_FP32", "-1"),
        ("output_log_probs", "TYPE_FP32", "-1, -1"),
        ("context_logits", logits_dtype, "-1, -1"),
        ("generation_logits", logits_dtype, "-1, -1, -1"),
        ("batch_index", "TYPE_INT32", "1"),
    ]
    return [_Tensor(names[logical], dtype, dims, False) for logical, dtype, dims in table]


def _steps(i: dict[str, str], o: dict[str, str]) -> list[dict[str, Any]]:
    """The ensemble's wiring: (model input, ensemble tensor) and (model output, tensor)."""
    pre = {
        "model": "preprocessing",
        "inputs": [
            ("QUERY", i["text_input"]),
            ("DECODER_QUERY", i["decoder_text_input"]),
            ("REQUEST_OUTPUT_LEN", i["max_tokens"]),
            ("BAD_WORDS_DICT", i["bad_words"]),
            ("STOP_WORDS_DICT", i["stop_words"]),
            ("EMBEDDING_BIAS_WORDS", i["embedding_bias_words"]),
            ("EMBEDDING_BIAS_WEIGHTS", i["embedding_bias_weights"]),
            ("END_ID", i["end_id"]),
            ("PAD_ID", i["pad_id"]),
        ],
        "outputs": [
            ("REQUEST_INPUT_LEN", "_REQUEST_INPUT_LEN"),
            ("INPUT_ID", "_INPUT_ID"),
            ("REQUEST_DECODER_INPUT_LEN", "_REQUEST_DECODER_INPUT_LEN"),
            ("DECODER_INPUT_ID", "_DECODER_INPUT_ID"),
            ("REQUEST_OUTPUT_LEN", "_REQUEST_OUTPUT_LEN"),
            ("STOP_WORDS_IDS", "_STOP_WORDS_IDS"),
            ("BAD_WORDS_IDS", "_BAD_WORDS_IDS"),
            ("EMBEDDING_BIAS", "_EMBEDDING_BIAS"),
            ("OUT_END_ID", "_PREPROCESSOR_END_ID"),
            ("OUT_PAD_ID", "_PREPROCESSOR_PAD_ID"),
        ],
    }
    llm = {
        "model": "tensorrt_llm",
        "inputs": [
            ("input_ids", "_INPUT_ID"),
            ("decoder_input_ids", "_DECODER_INPUT_ID"),
            ("input_lengths", "_REQUEST_INPUT_LEN"),
            ("decoder_input_lengths", "_REQUEST_DECODER_INPUT_LEN"),
            ("request_output_len", "_REQUEST_OUTPUT_LEN"),
            ("end_id", "_PREPROCESSOR_END_ID"),
            ("pad_id", "_PREPROCESSOR_PAD_ID"),
            ("embedding_bias", "_EMBEDDING_BIAS"),
            ("runtime_top_k", i["top_k"]),
            ("runtime_top_p", i["top_p"]),
            ("temperature", i["temperature"]),
            ("len_penalty", i["length_penalty"]),
            ("repetition_penalty", i["repetition_penalty"]),
            (i["min_length"], i["min_length"]),
            ("presence_penalty", i["presence_penalty"]),
            ("frequency_penalty", i["frequency_penalty"]),
            (i["random_seed"], i["random_seed"]),
            ("return_log_probs", i["return_log_probs"]),
            ("return_context_logits", i["return_context_logits"]),
            ("return_generation_logits", i["return_generation_logits"]),
            ("beam_width", i["beam_width"]),
            ("streaming", i["stream"]),
            ("prompt_embedding_table", i["prompt_embedding_table"]),
            ("prompt_vocab_size", i["prompt_vocab_size"]),
            ("stop_words_list", "_STOP_WORDS_IDS"),
            ("bad_words_list", "_BAD_WORDS_IDS"),
        ],
        "outputs": [
            ("output_ids", "_TOKENS_BATCH"),
            ("sequence_length", "_SEQUENCE_LENGTH"),
            ("cum_log_probs", "_CUM_LOG_PROBS"),
            ("output_log_probs", "_OUTPUT_LOG_PROBS"),
            ("context_logits", "_CONTEXT_LOGITS"),
            ("generation_logits", "_GENERATION_LOGITS"),
            ("batch_index", "_BATCH_INDEX"),
        ],
    }
    post = {
        "model": "postprocessing",
        "inputs": [
            ("TOKENS_BATCH", "_TOKENS_BATCH"),
            ("CUM_LOG_PROBS", "_CUM_LOG_PROBS"),
            ("OUTPUT_LOG_PROBS", "_OUTPUT_LOG_PROBS"),
            ("CONTEXT_LOGITS", "_CONTEXT_LOGITS"),
            ("GENERATION_LOGITS", "_GENERATION_LOGITS"),
            ("SEQUENCE_LENGTH", "_SEQUENCE_LENGTH"),
            ("BATCH_INDEX", "_BATCH_INDEX"),
        ],
        "outputs": [
            ("OUTPUT", o["text_output"]),
            ("OUT_CUM_LOG_PROBS", o["cum_log_probs"]),
            ("OUT_OUTPUT_LOG_PROBS", o["output_log_probs"]),
            ("OUT_CONTEXT_LOGITS", o["context_logits"]),
            ("OUT_GENERATION_LOGITS", o["generation_logits"]),
            ("OUT_BATCH_INDEX", o["batch_index"]),
        ],
    }
    return [pre, llm, post]


def _fields(values: dict[str, ModelValues]) -> dict[str, Any]:
    """Config fields (not ``parameters``) with the upstream default where a version lacks one."""
    merged: dict[str, str] = {}
    for model_values_ in values.values():
        merged.update(model_values_.filled)
    has = {n for mv in values.values() for n in (*mv.filled, *mv.left_to_backend)}
    return {
        "max_batch_size": merged["triton_max_batch_size"],
        "decoupled": merged["decoupled_mode"],
        "max_queue_delay_microseconds": merged["max_queue_delay_microseconds"],
        "queue_size": merged["max_queue_size"] if "max_queue_size" in has else None,
        "backend": merged.get("triton_backend", "tensorrtllm"),
        "logits_datatype": merged.get("logits_datatype", "TYPE_FP32"),
        "prompt_embedding_table_data_type": merged.get(
            "prompt_embedding_table_data_type", "TYPE_FP16"
        ),
        "encoder_input_features_data_type": merged.get("encoder_input_features_data_type"),
        "preprocessing_instance_count": merged["preprocessing_instance_count"],
        "postprocessing_instance_count": merged["postprocessing_instance_count"],
    }


def render_trtllm_repository(
    env: jinja2.Environment,
    staging: Staging,
    root: str,
    *,
    expert: Expert,
    server: ServerPlacement,
    toolchain: Toolchain,
    engine_dir: Path,
    tokenizer_dir: Path,
    assumed: bool,
) -> dict[str, ModelValues]:
    """Stage the four models of one server under ``root``; return the placeholder decisions.

    Raises:
        RenderError: a template fails, a placeholder is unknown, or ``${`` survives.
    """
    values = model_values(toolchain, all_values(expert, server, engine_dir, tokenizer_dir))
    fields = _fields(values)
    note = "assumed (render without build): " if assumed else ""
    context: dict[str, Any] = {
        "backend_version": toolchain.triton_backend_version,
        "backend_mount": str(BACKEND_MOUNT),
        "toolchain": toolchain.name,
        "f": fields,
        "names": toolchain.ensemble_inputs,
        "engine_note": f"{note}engine cache {engine_dir}",
        "tokenizer_note": f"{note}checkpoint snapshot {tokenizer_dir}",
        "inputs": _ensemble_inputs(
            toolchain.ensemble_inputs, fields["prompt_embedding_table_data_type"]
        ),
        "outputs": _ensemble_outputs(toolchain.ensemble_outputs, fields["logits_datatype"]),
        "steps": _steps(toolchain.ensemble_inputs, toolchain.ensemble_outputs),
    }
    for model, mv in values.items():
        context.update(parameters=mv.parameters(), left_out=mv.left_to_backend)
        path = f"{root}/{model}/config.pbtxt"
        text = render_template(env, f"triton/tensorrt_llm/{model}.pbtxt.j2", context)
        check_no_placeholders(text, path)
        staging.add_text(path, text)
        if model in _PYTHON_MODELS:
            target = BACKEND_MOUNT / "all_models" / "inflight_batcher_llm" / model / "1"
            staging.add_symlink(f"{root}/{model}/1/model.py", str(target / "model.py"))
        else:
            # Triton needs the version folder; the engine itself is read from gpt_model_path.
            staging.add_text(f"{root}/{model}/1/.keep", "")
    return values
