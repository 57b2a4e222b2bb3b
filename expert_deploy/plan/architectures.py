"""Model architectures the memory model needs: sizes from a Hugging Face ``config.json``.

Llama 3 and 3.1 (8B, 70B) are built in, so planning the paper's configurations needs no
download; any other model is read from a ``config.json`` given in the inventory or found in
the local Hugging Face cache.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from expert_deploy.inventory.models import ModelSource


@dataclass(frozen=True)
class Architecture:
    """The numbers of a decoder-only transformer that decide its memory."""

    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool = False
    max_position_embeddings: int = 8192
    rope_type: str | None = None
    head_dim: int | None = None
    source: str = "built-in"

    @property
    def resolved_head_dim(self) -> int:
        return self.head_dim or self.hidden_size // self.num_heads

    @property
    def embedding_params(self) -> int:
        """Input embedding plus the LM head when it is not tied to it."""
        one = self.vocab_size * self.hidden_size
        return one if self.tie_word_embeddings else 2 * one

    @property
    def linear_params(self) -> int:
        """Parameters of the attention and MLP projections: what quantization shrinks."""
        q_out = self.num_heads * self.resolved_head_dim
        kv_out = self.num_kv_heads * self.resolved_head_dim
        attention = (
            self.hidden_size * q_out + 2 * self.hidden_size * kv_out + q_out * self.hidden_size
        )
        mlp = 3 * self.hidden_size * self.intermediate_size  # gate, up, down (SwiGLU)
        return self.num_layers * (attention + mlp)

    @property
    def norm_params(self) -> int:
        """Two RMSNorms per layer and the final one."""
        return (2 * self.num_layers + 1) * self.hidden_size

    @property
    def parameter_count(self) -> int:
        return self.embedding_params + self.linear_params + self.norm_params

    @classmethod
    def from_config(cls, config: dict[str, Any], source: str) -> Architecture:
        """Read a Hugging Face ``config.json`` (Llama-style keys).

        Raises:
            KeyError: a required key is missing.
        """
        rope = config.get("rope_scaling") or {}
        return cls(
            hidden_size=int(config["hidden_size"]),
            num_layers=int(config["num_hidden_layers"]),
            num_heads=int(config["num_attention_heads"]),
            num_kv_heads=int(config.get("num_key_value_heads", config["num_attention_heads"])),
            intermediate_size=int(config["intermediate_size"]),
            vocab_size=int(config["vocab_size"]),
            tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
            max_position_embeddings=int(config.get("max_position_embeddings", 2048)),
            rope_type=rope.get("rope_type") or rope.get("type"),
            head_dim=int(config["head_dim"]) if config.get("head_dim") else None,
            source=source,
        )


_LLAMA3_8B = Architecture(4096, 32, 32, 8, 14336, 128256)
_LLAMA3_70B = Architecture(8192, 80, 64, 8, 28672, 128256)
_LLAMA31 = {"max_position_embeddings": 131072, "rope_type": "llama3"}

#: Lower-cased repository names (without organisation) → architecture.
BUILT_IN: dict[str, Architecture] = {}
for _suffix in ("", "-instruct"):
    for _name in ("meta-llama-3-8b", "llama-3-8b"):
        BUILT_IN[_name + _suffix] = _LLAMA3_8B
    for _name in ("meta-llama-3-70b", "llama-3-70b"):
        BUILT_IN[_name + _suffix] = _LLAMA3_70B
    for _name in ("meta-llama-3.1-8b", "llama-3.1-8b"):
        BUILT_IN[_name + _suffix] = Architecture(4096, 32, 32, 8, 14336, 128256, **_LLAMA31)  # type: ignore[arg-type]
    for _name in ("meta-llama-3.1-70b", "llama-3.1-70b"):
        BUILT_IN[_name + _suffix] = Architecture(8192, 80, 64, 8, 28672, 128256, **_LLAMA31)  # type: ignore[arg-type]


def find_architecture(model: ModelSource, hf_home: Path | None) -> Architecture | None:
    """The architecture of ``model``: its explicit config, the HF cache, or a built-in.

    Returns None when none of them knows it. Reads files but never touches the network.
    A generated model (``generate:``) is sized from its parameters, before it exists.
    """
    if model.generate is not None:
        spec = model.generate
        return Architecture(
            hidden_size=spec.hidden_size,
            num_layers=spec.num_layers,
            num_heads=spec.num_heads,
            num_kv_heads=spec.num_kv_heads,
            intermediate_size=spec.intermediate_size,
            # An upper bound: the trained tokenizer may stop short of it.
            vocab_size=spec.vocab_size,
            tie_word_embeddings=True,
            max_position_embeddings=spec.max_position_embeddings,
            source="generated",
        )
    if model.config is not None:
        return _read(model.config)
    cached = _cached_config(model, hf_home)
    if cached is not None:
        return _read(cached)
    return BUILT_IN.get(model.repo.split("/")[-1].lower())


def _read(path: Path) -> Architecture | None:
    try:
        return Architecture.from_config(json.loads(path.read_text(encoding="utf-8")), str(path))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _cached_config(model: ModelSource, hf_home: Path | None) -> Path | None:
    """``config.json`` of ``model`` at its revision in the local HF cache, if downloaded."""
    hub = (hf_home or Path.home() / ".cache" / "huggingface") / "hub"
    repo_dir = hub / f"models--{model.repo.replace('/', '--')}"
    ref = repo_dir / "refs" / model.revision
    commit = ref.read_text().strip() if ref.is_file() else model.revision
    config = repo_dir / "snapshots" / commit / "config.json"
    return config if config.is_file() else None
