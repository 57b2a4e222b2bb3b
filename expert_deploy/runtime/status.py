"""``status``: the recorded state held against what is really running and answering.

Per component: liveness from its launcher (PID plus start time for processes), readiness by a
real one-token inference (readiness.py), and for gateway replicas the routing-table
generation they serve (admin API) against the one the state expects. Triton components also
carry the engine or checkpoint hash they were started with. Nothing here changes anything.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from expert_deploy.errors import ExpertDeployError
from expert_deploy.runtime.components import START_ORDER
from expert_deploy.runtime.gateway_admin import ADMIN_ADDRESS, GatewayAdmin
from expert_deploy.runtime.gateway_auth import GatewayAuth, deployment_auth
from expert_deploy.runtime.launcher import Launcher, Liveness
from expert_deploy.runtime.readiness import (
    ProbeResult,
    client_port,
    probe_completion,
    probe_triton,
    reachable,
)
from expert_deploy.runtime.state import ComponentRecord, DeploymentState
from expert_deploy.settings import Settings

PROBE_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class ComponentReport:
    name: str
    kind: str
    ref: str
    address: str
    ports: dict[str, int]
    liveness: Liveness
    #: True/False after a probe; None when not probed (not running).
    ready: bool | None
    detail: str
    phase: str
    log_path: str | None
    expert_id: str | None = None
    artifact_hash: str | None = None
    #: Gateways: the generation the replica serves (None when it could not be asked).
    generation: int | None = None
    expected_generation: int | None = None

    @property
    def healthy(self) -> bool:
        if self.liveness != "running" or not self.ready:
            return False
        return self.expected_generation is None or self.generation == self.expected_generation

    @property
    def state_word(self) -> str:
        """One word for tables: ready, unready, stale (old generation), exited, missing."""
        if self.liveness != "running":
            return self.liveness
        if not self.ready:
            return "unready"
        return "ready" if self.healthy else "stale"


@dataclass(frozen=True)
class StatusReport:
    deployment: str
    workdir: str
    runtime: str
    generation: int
    router_hash: str | None
    components: tuple[ComponentReport, ...]
    #: Servers this work dir started that its state does not record (an interrupted `up`):
    #: `down` stops them. They do not make the recorded deployment unhealthy.
    unrecorded: int = 0

    @property
    def healthy(self) -> bool:
        return bool(self.components) and all(c.healthy for c in self.components)

    @property
    def endpoint(self) -> str | None:
        """Where clients send requests: NGINX when deployed, else the first gateway replica."""
        return endpoint_of(self.components)

    def to_json(self) -> dict[str, Any]:
        return {
            "deployed": True,
            "deployment": self.deployment,
            "workdir": self.workdir,
            "runtime": self.runtime,
            "generation": self.generation,
            "router_hash": self.router_hash,
            "healthy": self.healthy,
            "endpoint": self.endpoint,
            "unrecorded": self.unrecorded,
            "components": [
                {**asdict(c), "healthy": c.healthy, "state": c.state_word} for c in self.components
            ],
        }


class _Listening(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def address(self) -> str: ...
    @property
    def ports(self) -> Mapping[str, int]: ...


def endpoint_of(components: Sequence[_Listening]) -> str | None:
    """``http://…/v1/chat/completions`` on NGINX, or on the first gateway without NGINX."""
    by_kind = {c.kind: c for c in sorted(components, key=lambda c: c.name, reverse=True)}
    front = by_kind.get("nginx") or by_kind.get("gateway")
    if front is None:
        return None
    port = client_port(front.kind, front.ports)
    return f"http://{reachable(front.address)}:{port}/v1/chat/completions"


def reconcile(
    state: DeploymentState,
    settings: Settings,
    launcher_for: Callable[[str], Launcher],
    *,
    probe_timeout_s: float = PROBE_TIMEOUT_S,
) -> StatusReport:
    """Ask every recorded component whether it runs, answers, and serves the right generation.

    Probes run side by side (a deployment has up to a few dozen components).
    """
    records = sorted(state.components.values(), key=lambda r: (START_ORDER.index(r.kind), r.name))
    workdir = settings.workdir.resolve()
    auth = deployment_auth(records, workdir)

    def one(record: ComponentRecord) -> ComponentReport:
        return _report(
            record,
            state=state,
            settings=settings,
            auth=auth,
            launcher_for=launcher_for,
            timeout_s=probe_timeout_s,
        )

    with ThreadPoolExecutor(max_workers=max(1, min(16, len(records)))) as pool:
        reports = tuple(pool.map(one, records))
    return StatusReport(
        state.deployment,
        str(workdir),
        state.runtime,
        state.generation,
        state.router_hash,
        reports,
    )


def _report(
    record: ComponentRecord,
    *,
    state: DeploymentState,
    settings: Settings,
    auth: GatewayAuth,
    launcher_for: Callable[[str], Launcher],
    timeout_s: float,
) -> ComponentReport:
    try:
        seen = launcher_for(record.launcher).status(record.handle)
    except ExpertDeployError as error:
        seen_liveness: Liveness = "missing"
        detail = str(error)
    else:
        seen_liveness = seen.liveness
        detail = seen.detail
    ready: bool | None = None
    generation: int | None = None
    if seen_liveness == "running":
        result = _probe(record, auth, settings, timeout_s)
        ready, detail = result.ok, result.detail
        if record.kind == "gateway":
            generation, problem = _generation(record, auth, settings, timeout_s)
            if problem:
                detail = f"{detail}; {problem}"
    return ComponentReport(
        name=record.name,
        kind=record.kind,
        ref=record.ref,
        address=record.address,
        ports=dict(record.ports),
        liveness=seen_liveness,
        ready=ready,
        detail=detail,
        phase=record.phase,
        log_path=record.log_path,
        expert_id=record.expert_id,
        artifact_hash=record.artifact_hash,
        generation=generation,
        expected_generation=state.generation if record.kind == "gateway" else None,
    )


def _probe(
    record: ComponentRecord, auth: GatewayAuth, settings: Settings, timeout_s: float
) -> ProbeResult:
    if record.kind == "triton":
        return probe_triton(record.address, record.ports["http"], timeout_s=timeout_s)
    key = auth.api_key(settings)
    return probe_completion(
        record.address,
        client_port(record.kind, record.ports),
        api_key=key.reveal() if key else None,
        timeout_s=timeout_s,
    )


def _generation(
    record: ComponentRecord, auth: GatewayAuth, settings: Settings, timeout_s: float
) -> tuple[int | None, str]:
    admin = GatewayAdmin(
        record.name,
        ADMIN_ADDRESS,
        record.ports["admin"],
        auth.admin_token(settings),
        timeout_s=timeout_s,
    )
    try:
        return admin.generation(), ""
    except ExpertDeployError as error:
        return None, str(error)
