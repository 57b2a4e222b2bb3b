"""Rules that span fields: what the schema alone cannot say.

Each check yields ``(field path, message)`` pairs; the loader locates them in the file. All
checks run, so a person sees every problem at once. Placement and ports are checked by the
planner, which owns them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from expert_deploy.inventory.gpus import FP8_MIN_CAPABILITY, GPU_MODELS
from expert_deploy.inventory.messages import did_you_mean
from expert_deploy.inventory.models import Expert, Host, Inventory
from expert_deploy.inventory.source import FieldPath
from expert_deploy.inventory.toolchain import Toolchain

Finding = tuple[FieldPath, str]

_LOCAL_ADDRESSES = ("localhost", "127.", "::1")


def check_inventory(inventory: Inventory, toolchain: Toolchain | None) -> list[Finding]:
    """Every cross-field problem of ``inventory``; ``toolchain`` is None when it is unknown."""
    findings: list[Finding] = []
    for check in (_unique_names, _clusters, _hosts, _experts, _runtime):
        findings.extend(check(inventory))
    if toolchain is not None:
        findings.extend(_toolchain_support(inventory, toolchain))
    return findings


def host_capability(host: Host) -> tuple[int, int] | None:
    """The compute capability of a host's GPUs, explicit or from the catalogue."""
    if host.gpus.compute_capability:
        major, minor = host.gpus.compute_capability.split(".")
        return int(major), int(minor)
    gpu = GPU_MODELS.get(host.gpus.model or "")
    return gpu.compute_capability if gpu else None


def _unique_names(inventory: Inventory) -> Iterator[Finding]:
    for label, names in (
        ("expert id", [e.id for e in inventory.experts]),
        ("host name", [h.name for h in inventory.hosts]),
    ):
        seen: set[str] = set()
        collection = "experts" if label == "expert id" else "hosts"
        key = "id" if label == "expert id" else "name"
        for index, name in enumerate(names):
            if name in seen:
                yield (
                    (collection, index, key),
                    f"{label} {name!r} is used twice; names must be unique",
                )
            seen.add(name)


def _clusters(inventory: Inventory) -> Iterator[Finding]:
    k = inventory.router.k
    counts = Counter(e.cluster for e in inventory.experts)
    for index, expert in enumerate(inventory.experts):
        if expert.cluster >= k:
            yield (
                ("experts", index, "cluster"),
                f"cluster {expert.cluster} is outside 0..{k - 1} (router.k is {k})",
            )
        elif counts[expert.cluster] > 1:
            owners = [e.id for e in inventory.experts if e.cluster == expert.cluster]
            yield (
                ("experts", index, "cluster"),
                f"cluster {expert.cluster} is served by {', '.join(owners)}; "
                "give each cluster exactly one expert",
            )
    missing = sorted(set(range(k)) - set(counts))
    if missing:
        yield (
            ("router", "k"),
            f"clusters {', '.join(map(str, missing))} have no expert; "
            f"add experts for them or lower k to {len(counts)}",
        )


def _hosts(inventory: Inventory) -> Iterator[Finding]:
    for index, host in enumerate(inventory.hosts):
        gpus = host.gpus
        if gpus.count and gpus.model is None and gpus.memory_gib is None:
            yield (
                ("hosts", index, "gpus", "model"),
                "say which GPU model this host has (or give memory_gib and compute_capability)",
            )
        if gpus.model is not None and gpus.model not in GPU_MODELS and gpus.memory_gib is None:
            yield (
                ("hosts", index, "gpus", "model"),
                f"unknown GPU model {gpus.model!r}{did_you_mean(gpus.model, GPU_MODELS)}; "
                "or give memory_gib and compute_capability",
            )
    names = [h.name for h in inventory.hosts]
    gateway_host = inventory.gateway.host
    if gateway_host is not None and gateway_host not in names:
        yield (
            ("gateway", "host"),
            f"no host named {gateway_host!r}{did_you_mean(gateway_host, names)}",
        )


def _experts(inventory: Inventory) -> Iterator[Finding]:
    names = [h.name for h in inventory.hosts]
    for index, expert in enumerate(inventory.experts):
        at = ("experts", index)
        yield from _expert_shape(expert, at)
        if expert.placement is not None:
            host = inventory.host(expert.placement.host)
            if host is None:
                name = expert.placement.host
                yield (
                    (*at, "placement", "host"),
                    f"no host named {name!r}{did_you_mean(name, names)}",
                )
            else:
                yield from fp8_on_host(expert, host, at)


def _expert_shape(expert: Expert, at: FieldPath) -> Iterator[Finding]:
    if expert.engine != "synthetic" and expert.model is None:
        yield (*at, "model"), f"a {expert.engine} expert needs a model (repo and revision)"
    if expert.engine == "tensorrt_llm" and expert.resolved_device == "cpu":
        yield (*at, "device"), "tensorrt_llm runs only on GPUs; use engine: transformers for CPU"
    if expert.max_input_len >= expert.max_seq_len:
        yield (
            (*at, "max_input_len"),
            f"max_input_len {expert.max_input_len} must be below max_seq_len "
            f"{expert.max_seq_len} (the sequence holds the input and the output)",
        )
    if expert.engine != "tensorrt_llm" and expert.quantization in ("fp8", "int4_awq"):
        yield (
            (*at, "quantization"),
            f"{expert.quantization} needs engine: tensorrt_llm; {expert.engine} serves fp16/bf16",
        )


def fp8_on_host(expert: Expert, host: Host, at: FieldPath) -> Iterator[Finding]:
    """FP8 weights or KV cache on a host whose GPUs are older than compute capability 8.9."""
    capability = host_capability(host)
    if capability is None or expert.resolved_device != "gpu":
        return
    gpu = host.gpus.model or "its GPUs"
    wants_fp8 = {"quantization": expert.quantization == "fp8"}
    wants_fp8["kv_cache_dtype"] = expert.kv_cache_dtype == "fp8"
    for key, wanted in wants_fp8.items():
        if wanted and capability < FP8_MIN_CAPABILITY:
            yield (
                (*at, key),
                f"fp8 needs compute capability 8.9 or newer; host {host.name} has {gpu} "
                f"({capability[0]}.{capability[1]}); use int4_awq or bf16",
            )


def _runtime(inventory: Inventory) -> Iterator[Finding]:
    if inventory.runtime.kind == "ansible":
        return
    for index, host in enumerate(inventory.hosts):
        if not host.address.startswith(_LOCAL_ADDRESSES):
            yield (
                ("hosts", index, "address"),
                f"runtime {inventory.runtime.kind} runs on this machine only, but host "
                f"{host.name} is at {host.address}; use runtime: ansible for remote hosts",
            )


def _toolchain_support(inventory: Inventory, toolchain: Toolchain) -> Iterator[Finding]:
    for index, expert in enumerate(inventory.experts):
        if expert.engine != "tensorrt_llm":
            continue
        if expert.quantization not in toolchain.quantizations:
            supported = ", ".join(sorted(toolchain.quantizations))
            yield (
                ("experts", index, "quantization"),
                f"toolchain {toolchain.name} cannot build {expert.quantization}; it supports "
                f"{supported}",
            )
