"""Static GPU memory model: does an expert's engine fit, and how many sequences can it hold?

Per GPU of a server: weights (split over TP × PP ranks) + runtime overhead must fit; what is
left, times ``kv_cache_free_gpu_mem_fraction`` (TensorRT-LLM takes that share of the free
memory after loading the weights), is the KV-cache budget. Dividing it by the KV bytes of
one ``max_seq_len`` sequence gives how many full sequences fit, compared with
``max_batch_size``. An estimate, printed with its numbers so people can argue with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from expert_deploy.inventory.models import Expert
from expert_deploy.plan.architectures import Architecture

GIB = 1024**3

#: AWQ group size used by our INT4-AWQ recipe (quantize.py --awq_block_size).
AWQ_GROUP_SIZE = 128

_KV_BYTES = {"fp16": 2, "bf16": 2, "fp8": 1, "int8": 1}

FitStatus = Literal["fits", "tight", "does_not_fit"]


def weight_bytes(arch: Architecture, quantization: str, group_size: int = AWQ_GROUP_SIZE) -> int:
    """Bytes of an engine's weights for ``quantization``.

    Only the attention and MLP projections are quantized; embeddings, LM head and norms stay
    16-bit (ModelOpt's default leaves the LM head alone). INT4-AWQ stores half a byte per
    weight plus one FP16 scale per group of ``group_size`` inputs per output channel, and an
    FP16 pre-quantization scale per input channel; FP8 one byte per weight plus per-tensor
    scales (negligible, counted as two floats per projection).
    """
    sixteen_bit = 2 * (arch.embedding_params + arch.norm_params)
    linear = arch.linear_params
    if quantization in ("fp16", "bf16"):
        return sixteen_bit + 2 * linear
    if quantization == "fp8":
        return sixteen_bit + linear + arch.num_layers * 7 * 2 * 4
    if quantization == "int4_awq":
        scales = 2 * linear // group_size
        pre_quant = 2 * arch.num_layers * (4 * arch.hidden_size + arch.intermediate_size)
        return sixteen_bit + linear // 2 + scales + pre_quant
    raise ValueError(f"unknown quantization {quantization!r}")


def kv_dtype(expert: Expert) -> str:
    """The KV-cache dtype an expert's engine uses (``auto`` follows the quantization)."""
    if expert.kv_cache_dtype != "auto":
        return expert.kv_cache_dtype
    return "fp8" if expert.quantization == "fp8" else "fp16"


def kv_bytes_per_token(arch: Architecture, dtype: str, tp_size: int = 1, pp_size: int = 1) -> int:
    """KV-cache bytes one token takes on one GPU: layers × KV heads × head dim × 2 (K and V) ×
    bytes per value, with layers split over PP and KV heads over TP (at least one per rank)."""
    layers = -(-arch.num_layers // pp_size)
    kv_heads = max(1, arch.num_kv_heads // tp_size)
    return layers * kv_heads * arch.resolved_head_dim * 2 * _KV_BYTES[dtype]


@dataclass(frozen=True)
class MemoryFit:
    """The memory arithmetic of one expert's server, per GPU."""

    expert_id: str
    gpu_bytes: int
    weight_bytes: int
    overhead_bytes: int
    kv_budget_bytes: int
    kv_bytes_per_token: int
    kv_dtype: str
    max_seq_len: int
    max_batch_size: int

    @property
    def sequences_fit(self) -> int:
        """Full ``max_seq_len`` sequences the KV budget holds at once."""
        return self.kv_budget_bytes // (self.kv_bytes_per_token * self.max_seq_len)

    @property
    def tokens_fit(self) -> int:
        return self.kv_budget_bytes // self.kv_bytes_per_token

    @property
    def status(self) -> FitStatus:
        if self.weight_bytes + self.overhead_bytes >= self.gpu_bytes or self.sequences_fit < 1:
            return "does_not_fit"
        return "tight" if self.sequences_fit < self.max_batch_size else "fits"

    def explain(self) -> str:
        """One sentence with the numbers behind :attr:`status`."""
        gib = _gib
        base = (
            f"weights {gib(self.weight_bytes)} + overhead {gib(self.overhead_bytes)} "
            f"of {gib(self.gpu_bytes)} per GPU"
        )
        if self.weight_bytes + self.overhead_bytes >= self.gpu_bytes:
            return f"does not fit: {base}; use int4_awq/fp8 or a larger tp_size"
        seq = f"{self.max_seq_len}-token sequences"
        if self.sequences_fit < 1:
            return (
                f"does not fit: {base} leaves a KV budget of {gib(self.kv_budget_bytes)}, "
                f"less than one {seq}; lower max_seq_len or raise tp_size"
            )
        holds = (
            f"KV budget {gib(self.kv_budget_bytes)} holds {self.sequences_fit} full {seq} "
            f"({self.tokens_fit:,} tokens)"
        )
        if self.status == "tight":
            return (
                f"{holds}, fewer than max_batch_size {self.max_batch_size}; "
                "lower max_batch_size or max_seq_len, or use kv_cache_dtype fp8/int8"
            )
        return f"{holds} for max_batch_size {self.max_batch_size}"


def fit_expert(expert: Expert, arch: Architecture, gpu_bytes: int) -> MemoryFit:
    """The memory fit of ``expert`` on GPUs of ``gpu_bytes`` each."""
    ranks = expert.tp_size * expert.pp_size
    weights = -(-weight_bytes(arch, expert.quantization) // ranks)
    overhead = int(expert.runtime_overhead_gib * GIB)
    free = max(0, gpu_bytes - weights - overhead)
    dtype = kv_dtype(expert)
    return MemoryFit(
        expert_id=expert.id,
        gpu_bytes=gpu_bytes,
        weight_bytes=weights,
        overhead_bytes=overhead,
        kv_budget_bytes=int(free * expert.kv_cache_free_gpu_mem_fraction),
        kv_bytes_per_token=kv_bytes_per_token(arch, dtype, expert.tp_size, expert.pp_size),
        kv_dtype=dtype,
        max_seq_len=expert.max_seq_len,
        max_batch_size=expert.max_batch_size,
    )


def _gib(value: int) -> str:
    return f"{value / GIB:.1f} GiB"
