"""Put every expert replica on a host and its GPUs, and give every server its ports.

Pure: takes an inventory, returns placements and findings. Explicit placements are honoured
first; the rest fill hosts in order, each server on an aligned block of TP × PP GPUs
(GPUs 0–3 and 4–7 for TP 4 on eight), which keeps NVLink groups together.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from expert_deploy.inventory.models import Expert, Host, Inventory
from expert_deploy.inventory.source import FieldPath

Finding = tuple[FieldPath, str]


@dataclass(frozen=True)
class ServerPlacement:
    """One Triton server: an expert replica on a host, its GPUs and ports."""

    expert_id: str
    replica: int
    host: str
    address: str
    device: str
    gpus: tuple[int, ...]
    http_port: int
    grpc_port: int
    metrics_port: int

    @property
    def name(self) -> str:
        return f"{self.expert_id}-{self.replica}"


@dataclass(frozen=True)
class GatewayPlacement:
    replica: int
    host: str
    address: str
    http_port: int
    grpc_port: int
    admin_port: int


@dataclass(frozen=True)
class NginxPlacement:
    host: str
    address: str
    listen_port: int
    #: gRPC listener (``nginx.grpc_listen_port``, else listen_port + 1).
    grpc_port: int


def place_gpus(
    inventory: Inventory,
) -> tuple[dict[tuple[str, int], tuple[str, tuple[int, ...]]], list[Finding]]:
    """(expert id, replica) → (host name, GPU indices), and what went wrong."""
    findings: list[Finding] = []
    taken: dict[tuple[str, int], str] = {}  # (host, gpu) → expert id
    result: dict[tuple[str, int], tuple[str, tuple[int, ...]]] = {}
    ordered = sorted(enumerate(inventory.experts), key=lambda ie: ie[1].placement is None)
    for index, expert in ordered:
        at: FieldPath = ("experts", index)
        if expert.placement is not None:
            host = inventory.host(expert.placement.host)
            if host is None:
                continue  # reported by the inventory checks
            findings.extend(_explicit(expert, host, at, taken, result))
        else:
            findings.extend(_automatic(expert, inventory.hosts, at, taken, result))
    return result, findings


def _explicit(
    expert: Expert,
    host: Host,
    at: FieldPath,
    taken: dict[tuple[str, int], str],
    result: dict[tuple[str, int], tuple[str, tuple[int, ...]]],
) -> Iterator[Finding]:
    assert expert.placement is not None
    gpus = expert.placement.gpus
    per_server = expert.gpus_needed
    want = per_server * expert.replicas
    if per_server == 0:
        for replica in range(expert.replicas):
            result[(expert.id, replica)] = (host.name, ())
        return
    if len(gpus) != want:
        yield (
            (*at, "placement", "gpus"),
            f"lists {len(gpus)} GPUs but the expert needs {want} "
            f"(replicas {expert.replicas} × tp_size {expert.tp_size} × pp_size {expert.pp_size})",
        )
        return
    yield from _divides(expert, host, (*at, "tp_size"))
    for gpu in gpus:
        if gpu >= host.gpus.count:
            yield (
                (*at, "placement", "gpus"),
                f"GPU {gpu} does not exist on host {host.name} (it has {host.gpus.count})",
            )
            return
        owner = taken.get((host.name, gpu))
        if owner is not None:
            yield (
                (*at, "placement", "gpus"),
                f"GPU {gpu} of host {host.name} is already given to expert {owner}; "
                "one expert per GPU",
            )
            return
    for gpu in gpus:
        taken[(host.name, gpu)] = expert.id
    for replica in range(expert.replicas):
        chunk = gpus[replica * per_server : (replica + 1) * per_server]
        result[(expert.id, replica)] = (host.name, tuple(chunk))


def _automatic(
    expert: Expert,
    hosts: tuple[Host, ...],
    at: FieldPath,
    taken: dict[tuple[str, int], str],
    result: dict[tuple[str, int], tuple[str, tuple[int, ...]]],
) -> Iterator[Finding]:
    need = expert.gpus_needed
    if need == 0:
        for replica in range(expert.replicas):
            result[(expert.id, replica)] = (hosts[0].name, ())
        return
    gpu_hosts = [h for h in hosts if h.gpus.count > 0]
    if not gpu_hosts:
        yield (
            (*at, "device"),
            "needs GPUs but no host has any; add gpus to a host or use device: cpu",
        )
        return
    if all(h.gpus.count % need for h in gpu_hosts):
        yield from _divides(expert, gpu_hosts[0], (*at, "tp_size"))
        return
    for replica in range(expert.replicas):
        block = _free_block(gpu_hosts, need, taken)
        if block is None:
            total = sum(h.gpus.count for h in gpu_hosts)
            yield (
                (*at, "tp_size") if replica == 0 else (*at, "replicas"),
                f"no {need} free GPUs left for expert {expert.id} replica {replica} "
                f"({len(taken)} of {total} GPUs already placed); add a host or lower tp_size",
            )
            return
        host, gpus = block
        for gpu in gpus:
            taken[(host, gpu)] = expert.id
        result[(expert.id, replica)] = (host, gpus)


def _free_block(
    hosts: list[Host], need: int, taken: dict[tuple[str, int], str]
) -> tuple[str, tuple[int, ...]] | None:
    for host in hosts:
        if host.gpus.count % need:
            continue
        for start in range(0, host.gpus.count, need):
            block = tuple(range(start, start + need))
            if all((host.name, gpu) not in taken for gpu in block):
                return host.name, block
    return None


def _divides(expert: Expert, host: Host, at: FieldPath) -> Iterator[Finding]:
    if host.gpus.count and host.gpus.count % expert.gpus_needed:
        yield (
            at,
            f"tp_size {expert.tp_size} × pp_size {expert.pp_size} does not divide the "
            f"{host.gpus.count} GPUs of host {host.name}; use a divisor such as 1, 2, 4 or 8",
        )


def assign_ports(
    inventory: Inventory, gpus: dict[tuple[str, int], tuple[str, tuple[int, ...]]]
) -> tuple[list[ServerPlacement], list[GatewayPlacement], NginxPlacement | None, list[Finding]]:
    """Ports for every Triton server, gateway replica and NGINX; report any port used twice."""
    triton = inventory.triton
    servers: list[ServerPlacement] = []
    slot_on_host: dict[str, int] = {}
    owners: dict[tuple[str, int], str] = {}
    findings: list[Finding] = []

    def claim(host: str, port: int, owner: str, at: FieldPath) -> None:
        previous = owners.get((host, port))
        if previous is not None:
            findings.append(
                (at, f"port {port} on host {host} is used by both {previous} and {owner}")
            )
        owners[(host, port)] = owner

    for index, expert in enumerate(inventory.experts):
        for replica in range(expert.replicas):
            placed = gpus.get((expert.id, replica))
            if placed is None:
                continue
            host_name, gpu_ids = placed
            slot = slot_on_host.get(host_name, 0)
            slot_on_host[host_name] = slot + 1
            offset = slot * triton.port_stride
            fixed = expert.ports if replica == 0 else None
            ports = {
                "http": (fixed and fixed.http) or triton.http_base_port + offset,
                "grpc": (fixed and fixed.grpc) or triton.grpc_base_port + offset,
                "metrics": (fixed and fixed.metrics) or triton.metrics_base_port + offset,
            }
            owner = f"expert {expert.id}" + (f" replica {replica}" if expert.replicas > 1 else "")
            for kind, port in ports.items():
                claim(host_name, port, f"{owner} ({kind})", ("experts", index, "ports", kind))
            host = inventory.host(host_name)
            assert host is not None
            servers.append(
                ServerPlacement(
                    expert.id,
                    replica,
                    host_name,
                    host.address,
                    expert.resolved_device,
                    gpu_ids,
                    ports["http"],
                    ports["grpc"],
                    ports["metrics"],
                )
            )
    gateway_host = (
        inventory.host(inventory.gateway.host or inventory.hosts[0].name) or inventory.hosts[0]
    )
    spec = inventory.gateway
    gateways: list[GatewayPlacement] = []
    for replica in range(spec.replicas):
        placement = GatewayPlacement(
            replica,
            gateway_host.name,
            gateway_host.address,
            spec.http_base_port + replica,
            spec.grpc_base_port + replica,
            spec.admin_base_port + replica,
        )
        for kind, port in (
            ("http", placement.http_port),
            ("grpc", placement.grpc_port),
            ("admin", placement.admin_port),
        ):
            if port > 65535:
                findings.append(
                    (
                        ("gateway", f"{kind}_base_port"),
                        f"gateway replica {replica} would need port {port}",
                    )
                )
            claim(
                gateway_host.name,
                port,
                f"gateway replica {replica} ({kind})",
                ("gateway", f"{kind}_base_port"),
            )
        gateways.append(placement)
    nginx = None
    if inventory.nginx.enabled:
        spec_nginx = inventory.nginx
        grpc = spec_nginx.grpc_listen_port or spec_nginx.listen_port + 1
        nginx = NginxPlacement(
            gateway_host.name, gateway_host.address, spec_nginx.listen_port, grpc
        )
        claim(gateway_host.name, nginx.listen_port, "nginx", ("nginx", "listen_port"))
        grpc_field = "grpc_listen_port" if spec_nginx.grpc_listen_port else "listen_port"
        claim(gateway_host.name, grpc, "nginx (grpc)", ("nginx", grpc_field))
    return servers, gateways, nginx, findings
