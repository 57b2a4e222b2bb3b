"""The planner's weight and KV arithmetic against real GPU allocations (only with a GPU).

A Llama 3 8B-shaped model is allocated tensor by tensor in BF16 on the GPU (random weights,
no checkpoint needed), and the bytes CUDA reports are compared with ``weight_bytes``; then a
KV cache for ``max_seq_len`` tokens is allocated and compared with ``kv_bytes_per_token``.
"""

from __future__ import annotations

import pytest

from expert_deploy.plan.architectures import BUILT_IN
from expert_deploy.plan.memory import kv_bytes_per_token, weight_bytes

pytestmark = pytest.mark.gpu

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("no CUDA GPU on this machine", allow_module_level=True)

ARCH = BUILT_IN["meta-llama-3-8b-instruct"]


def _llama_shapes() -> list[tuple[int, ...]]:
    head = ARCH.resolved_head_dim
    shapes: list[tuple[int, ...]] = [(ARCH.vocab_size, ARCH.hidden_size)] * 2  # embedding, LM head
    for _ in range(ARCH.num_layers):
        shapes += [
            (ARCH.num_heads * head, ARCH.hidden_size),
            (ARCH.num_kv_heads * head, ARCH.hidden_size),
            (ARCH.num_kv_heads * head, ARCH.hidden_size),
            (ARCH.hidden_size, ARCH.num_heads * head),
            (ARCH.intermediate_size, ARCH.hidden_size),
            (ARCH.intermediate_size, ARCH.hidden_size),
            (ARCH.hidden_size, ARCH.intermediate_size),
            (ARCH.hidden_size,),
            (ARCH.hidden_size,),
        ]
    return [*shapes, (ARCH.hidden_size,)]


def test_bf16_weights_match_real_allocation() -> None:
    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated()
    tensors = [torch.empty(shape, dtype=torch.bfloat16, device="cuda") for shape in _llama_shapes()]
    allocated = torch.cuda.memory_allocated() - before
    predicted = weight_bytes(ARCH, "bf16")
    print(f"bf16 weights: predicted {predicted:,} B, CUDA allocated {allocated:,} B")
    # The caching allocator rounds each tensor up to 512 bytes: at most that much per tensor.
    assert predicted <= allocated <= predicted + 512 * len(tensors)


def test_kv_cache_matches_real_allocation() -> None:
    tokens = 8192
    before = torch.cuda.memory_allocated()
    cache = torch.empty(
        (ARCH.num_layers, 2, tokens, ARCH.num_kv_heads, ARCH.resolved_head_dim),
        dtype=torch.float16,
        device="cuda",
    )
    allocated = torch.cuda.memory_allocated() - before
    predicted = kv_bytes_per_token(ARCH, "fp16") * tokens
    print(
        f"fp16 KV cache for {tokens} tokens: predicted {predicted:,} B, allocated {allocated:,} B"
    )
    assert allocated == predicted == cache.numel() * 2
