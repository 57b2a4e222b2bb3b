"""The GPU models expert-deploy knows: compute capability and usable memory.

Memory is what ``nvidia-smi`` reports as total for the board (MiB), which is a little less
than the marketing figure; the planner budgets against it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GpuModel:
    name: str
    compute_capability: tuple[int, int]
    memory_mib: int

    @property
    def memory_bytes(self) -> int:
        return self.memory_mib * 1024 * 1024


_CATALOGUE = (
    GpuModel("H100-SXM-80GB", (9, 0), 81_559),
    GpuModel("H100-PCIe-80GB", (9, 0), 81_559),
    GpuModel("H100-NVL-94GB", (9, 0), 95_830),
    GpuModel("H200-141GB", (9, 0), 143_771),
    GpuModel("GH200-96GB", (9, 0), 97_871),
    GpuModel("A100-SXM-80GB", (8, 0), 81_920),
    GpuModel("A100-PCIe-40GB", (8, 0), 40_960),
    GpuModel("L40S", (8, 9), 46_068),
    GpuModel("L4", (8, 9), 23_034),
    GpuModel("A10G", (8, 6), 23_028),
    GpuModel("RTX-4090", (8, 9), 24_564),
    GpuModel("T4", (7, 5), 15_360),
)

GPU_MODELS: dict[str, GpuModel] = {gpu.name: gpu for gpu in _CATALOGUE}

#: FP8 weights and activations need Ada or Hopper; FP8 context FMHA needs Hopper.
FP8_MIN_CAPABILITY = (8, 9)
FP8_CONTEXT_FMHA_MIN_CAPABILITY = (9, 0)
