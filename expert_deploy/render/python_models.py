"""Model repositories for the Python-backend engines: ``synthetic`` and ``transformers``.

Both copy their sources from ``triton_models/<kind>/`` and get a config.pbtxt that names the
model ``ensemble`` and declares the TensorRT-LLM ensemble's tensors (names from the toolchain),
so the gateway, runtime and bench never care which engine kind serves an expert.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from expert_deploy.errors import RenderError
from expert_deploy.inventory.models import Expert
from expert_deploy.inventory.toolchain import Toolchain
from expert_deploy.plan.placement import ServerPlacement
from expert_deploy.render.environment import check_no_placeholders, render_template
from expert_deploy.render.staging import Staging

#: What the gateway calls (router_service.config.UpstreamSpec.model's default).
SERVED_MODEL = "ensemble"
#: PyTorch intra-op threads of a transformers expert on the CPU (see _parameters).
CPU_THREADS = 1
#: Tensors our Python models read and write by these exact names (see their model.py).
_FIXED_NAMES = ("text_input", "max_tokens", "stream", "text_output")


@dataclass(frozen=True)
class _Tensor:
    name: str
    dtype: str
    dims: str
    optional: bool


def _tensors(toolchain: Toolchain) -> tuple[list[_Tensor], list[_Tensor]]:
    """Inputs the gateway sends (optional ones by this version's names) and the one output.

    Raises:
        RenderError: the toolchain renames a tensor our Python models read by a fixed name.
    """
    names = {**toolchain.ensemble_inputs, **toolchain.ensemble_outputs}
    renamed = [n for n in _FIXED_NAMES if names.get(n, n) != n]
    if renamed:
        raise RenderError(
            f"toolchain {toolchain.name} renames {', '.join(renamed)}, which "
            "triton_models/*/1/model.py read by their v0.11 names; update the models first"
        )
    inputs = [
        _Tensor("text_input", "TYPE_STRING", "1", False),
        _Tensor("max_tokens", "TYPE_INT32", "1", True),
        _Tensor("stream", "TYPE_BOOL", "1", True),
        _Tensor(names["temperature"], "TYPE_FP32", "1", True),
        _Tensor(names["top_p"], "TYPE_FP32", "1", True),
        _Tensor(names["top_k"], "TYPE_INT32", "1", True),
        _Tensor(names["end_id"], "TYPE_INT32", "1", True),
        _Tensor(names["random_seed"], "TYPE_UINT64", "1", True),
        _Tensor(names["stop_words"], "TYPE_STRING", "-1", True),
    ]
    return inputs, [_Tensor("text_output", "TYPE_STRING", "-1", False)]


def _parameters(expert: Expert, server: ServerPlacement, checkpoint_dir: Path) -> dict[str, str]:
    if expert.engine == "synthetic":
        spec = expert.synthetic
        return {
            "ttft_ms": f"{spec.ttft_ms:g}",
            "tpot_ms": f"{spec.tpot_ms:g}",
            "default_tokens": str(spec.tokens),
            # Token i reads " <server>:i", so a test can tell which server answered.
            "label": f"{server.name}:",
        }
    on_gpu = server.device == "gpu"
    return {
        "checkpoint_dir": str(checkpoint_dir),
        "device": "cuda" if on_gpu else "cpu",
        "default_max_tokens": str(min(256, expert.max_seq_len - 1)),
        "max_input_len": str(expert.max_input_len),
        "dtype": {"fp16": "float16", "bf16": "bfloat16"}.get(expert.quantization, "auto"),
        # CPU experts share the host's cores with each other and the gateways: one PyTorch
        # thread each, since PyTorch's default (one per core, per server) oversubscribes.
        "cpu_threads": "0" if on_gpu else str(CPU_THREADS),
    }


def _source_files(source: Path) -> list[Path]:
    """The model's files to ship: everything but docs and caches, in a stable order."""
    return sorted(
        p
        for p in source.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".md", ".pyc")
    )


def render_python_repository(
    env: jinja2.Environment,
    staging: Staging,
    root: str,
    *,
    expert: Expert,
    server: ServerPlacement,
    toolchain: Toolchain,
    models_dir: Path,
    checkpoint_dir: Path,
) -> dict[str, str]:
    """Stage ``root/ensemble/`` for a synthetic or transformers expert; return its parameters.

    Raises:
        RenderError: the model sources are missing or unreadable, or a template fails.
    """
    source = models_dir / expert.engine
    files = _source_files(source) if source.is_dir() else []
    if not any(p.name == "model.py" for p in files):
        raise RenderError(f"no {expert.engine} model sources in {source} (expected 1/model.py)")
    for file in files:
        try:
            data = file.read_bytes()
        except OSError as exc:
            raise RenderError(f"cannot read {file}: {exc.strerror or exc}") from exc
        staging.add_bytes(f"{root}/{SERVED_MODEL}/{file.relative_to(source).as_posix()}", data)
    inputs, outputs = _tensors(toolchain)
    parameters = _parameters(expert, server, checkpoint_dir)
    context: dict[str, Any] = {
        "server_name": server.name,
        "kind": expert.engine,
        "source_note": "at render time",
        "name": SERVED_MODEL,
        "max_batch_size": expert.max_batch_size,
        "inputs": inputs,
        "outputs": outputs,
        # One async instance streams many requests (synthetic); a PyTorch model holds one
        # copy of the weights, so it gets exactly one instance too.
        "instance_count": 1,
        "parameters": sorted(parameters.items()),
    }
    config_path = f"{root}/{SERVED_MODEL}/config.pbtxt"
    text = render_template(env, "triton/python_model.pbtxt.j2", context)
    check_no_placeholders(text, config_path)
    staging.add_text(config_path, text)
    return parameters
