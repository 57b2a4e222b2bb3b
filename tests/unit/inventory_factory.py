"""Build small inventories as YAML text for tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def gpu_inventory(**overrides: Any) -> dict[str, Any]:
    """Two Llama 3 8B experts on one 8×H100 host: a valid starting point to mutate."""
    data: dict[str, Any] = {
        "name": "t",
        "toolchain": "trtllm-0.11",
        "hosts": [
            {"name": "h1", "address": "127.0.0.1", "gpus": {"count": 8, "model": "H100-SXM-80GB"}}
        ],
        "defaults": {"engine": "tensorrt_llm", "quantization": "bf16", "max_batch_size": 8},
        "experts": [
            {"id": "e0", "cluster": 0, "model": {"repo": "meta-llama/Meta-Llama-3-8B-Instruct"}},
            {"id": "e1", "cluster": 1, "model": {"repo": "meta-llama/Meta-Llama-3-8B-Instruct"}},
        ],
        "router": {"source": {"kind": "artifact", "path": "router"}, "k": 2},
    }
    data.update(overrides)
    return data


def write(tmp_path: Path, data: Any, text: str | None = None) -> Path:
    path = tmp_path / "inv.yaml"
    path.write_text(text if text is not None else yaml.safe_dump(data, sort_keys=False))
    return path
