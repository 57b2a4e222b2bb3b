"""``make_plan``: placement, ports and memory fit of a loaded inventory. Pure, no network.

The plan is data: commands print it, later stages (render, runtime) read their placements
from it, and its findings carry field paths so the CLI can point at inventory lines.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from expert_deploy.inventory.checks import fp8_on_host
from expert_deploy.inventory.gpus import GPU_MODELS
from expert_deploy.inventory.loader import LoadedInventory
from expert_deploy.inventory.models import Expert, Host, Inventory
from expert_deploy.inventory.source import FieldPath, format_path
from expert_deploy.plan.architectures import Architecture, find_architecture
from expert_deploy.plan.memory import GIB, MemoryFit, fit_expert
from expert_deploy.plan.placement import (
    GatewayPlacement,
    NginxPlacement,
    ServerPlacement,
    assign_ports,
    place_gpus,
)

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Finding:
    severity: Severity
    path: FieldPath
    message: str


@dataclass(frozen=True)
class Plan:
    """Where everything runs and whether it fits."""

    name: str
    servers: tuple[ServerPlacement, ...]
    gateways: tuple[GatewayPlacement, ...]
    nginx: NginxPlacement | None
    memory: tuple[MemoryFit, ...]
    findings: tuple[Finding, ...]

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "warning"]

    def memory_of(self, expert_id: str) -> MemoryFit | None:
        return next((m for m in self.memory if m.expert_id == expert_id), None)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready view (field paths as the dotted strings people type)."""
        memory = []
        for fit in self.memory:
            row = asdict(fit)
            row.update(
                status=fit.status,
                sequences_fit=fit.sequences_fit,
                tokens_fit=fit.tokens_fit,
                explanation=fit.explain(),
            )
            memory.append(row)
        return {
            "name": self.name,
            "servers": [asdict(s) for s in self.servers],
            "gateways": [asdict(g) for g in self.gateways],
            "nginx": asdict(self.nginx) if self.nginx else None,
            "memory": memory,
            "findings": [
                {"severity": f.severity, "path": format_path(f.path), "message": f.message}
                for f in self.findings
            ],
        }


def make_plan(loaded: LoadedInventory, hf_home: Path | None = None) -> Plan:
    """Place, assign ports and size memory for every expert of ``loaded``."""
    inventory = loaded.inventory
    gpus, placement_findings = place_gpus(inventory)
    servers, gateways, nginx, port_findings = assign_ports(inventory, gpus)
    findings = [Finding("error", p, m) for p, m in (*placement_findings, *port_findings)]
    memory: list[MemoryFit] = []
    for index, expert in enumerate(inventory.experts):
        at: FieldPath = ("experts", index)
        placed = next((s for s in servers if s.expert_id == expert.id), None)
        host = inventory.host(placed.host) if placed else None
        arch = find_architecture(expert.model, hf_home) if expert.model else None
        findings.extend(_model_findings(expert, arch, loaded, at))
        if host is None or arch is None or expert.resolved_device != "gpu":
            continue
        if expert.placement is None:  # explicit placements were checked with the inventory
            findings.extend(Finding("error", p, m) for p, m in fp8_on_host(expert, host, at))
        gpu_bytes = _gpu_bytes(host)
        if gpu_bytes is None:
            continue
        fit = fit_expert(expert, arch, gpu_bytes)
        memory.append(fit)
        if fit.status == "does_not_fit":
            findings.append(Finding("error", (*at, "quantization"), f"{expert.id} {fit.explain()}"))
        elif fit.status == "tight":
            findings.append(
                Finding("warning", (*at, "max_batch_size"), f"{expert.id}: {fit.explain()}")
            )
    findings.extend(_gateway_cpu_findings(inventory))
    return Plan(
        inventory.name, tuple(servers), tuple(gateways), nginx, tuple(memory), tuple(findings)
    )


def _gateway_cpu_findings(inventory: Inventory) -> list[Finding]:
    """Replicas that would share a core: each one's keep-warm rehearsals evict the others'
    caches (scripts/bench_gateway.py: two replicas on one vCPU, 0.75 → 1.05 ms added at 1
    stream). Unset ``cpus`` leaves placement to the OS, which spreads them."""
    spec = inventory.gateway
    if not spec.cpus or len(spec.cpus) >= spec.replicas:
        return []
    message = (
        f"{spec.replicas} gateway replicas share {len(spec.cpus)} CPU(s): replicas on one core"
        " slow each other's first token; list at least one CPU per replica in gateway.cpus"
        " or lower gateway.replicas"
    )
    return [Finding("warning", ("gateway", "cpus"), message)]


def _gpu_bytes(host: Host) -> int | None:
    if host.gpus.memory_gib is not None:
        return int(host.gpus.memory_gib * GIB)
    gpu = GPU_MODELS.get(host.gpus.model or "")
    return gpu.memory_bytes if gpu else None


def _model_findings(
    expert: Expert, arch: Architecture | None, loaded: LoadedInventory, at: FieldPath
) -> list[Finding]:
    if expert.model is None or expert.engine == "synthetic":
        return []
    if arch is None:
        return [
            Finding(
                "error" if expert.resolved_device == "gpu" else "warning",
                (*at, "model", "config"),
                f"cannot size {expert.model.repo}: its architecture is not built in and no "
                "config.json was found; set model.config to a local config.json",
            )
        ]
    toolchain = loaded.toolchain
    if (
        expert.engine == "tensorrt_llm"
        and arch.rope_type == "llama3"
        and not toolchain.supports_llama3_rope
    ):
        return [
            Finding(
                "error",
                (*at, "model", "repo"),
                f"{expert.model.repo} uses Llama 3.1 rope scaling, which toolchain "
                f"{toolchain.name} cannot build (KeyError 'type'); "
                "use trtllm-1.2 or a Llama 3 model",
            )
        ]
    if expert.max_seq_len > arch.max_position_embeddings:
        return [
            Finding(
                "warning",
                (*at, "max_seq_len"),
                f"max_seq_len {expert.max_seq_len} exceeds the model's "
                f"{arch.max_position_embeddings} positions",
            )
        ]
    return []
