"""Where the load goes: plain URLs from flags, or a running deployment's recorded state.

With ``--inventory`` the deployment state (``<workdir>/state.json``, written by ``up``) names
every component and its ports: NGINX (``listen``), gateway replicas (``http``, ``grpc``) and
Triton servers (``grpc``). The API key, when the gateways require one, comes from the variable
or file the rendered gateway config names (runtime/gateway_auth.py); it is held in memory only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from expert_deploy.bench.clients_grpc import GrpcTarget
from expert_deploy.bench.clients_http import Endpoint, HttpTarget
from expert_deploy.bench.driver import Target
from expert_deploy.bench.errors import BenchError
from expert_deploy.runtime.state import ComponentRecord, DeploymentState, StateStore

#: The routed model name (the gateway classifies) and Triton's own model name.
ROUTED_MODEL = "expert-router"
TRITON_MODEL = "ensemble"

Via = Literal["nginx", "gateway", "gateway-grpc", "triton"]


@dataclass(frozen=True)
class Deployment:
    """What the bench needs from a deployment's state."""

    state: DeploymentState
    workdir: Path

    def components(self, kind: str) -> list[ComponentRecord]:
        return sorted(
            (c for c in self.state.components.values() if c.kind == kind), key=lambda c: c.name
        )

    @property
    def router_dir(self) -> Path | None:
        """The router the gateways serve (from replica 0's rendered config), if readable."""
        import yaml

        from expert_deploy.runtime.gateway_auth import gateway_config_path

        try:
            data = yaml.safe_load(gateway_config_path(self.workdir, 0).read_text()) or {}
        except (OSError, yaml.YAMLError):
            return None
        value = data.get("router_dir")
        return Path(value) if value else None


def load_deployment(workdir: Path, inventory: str) -> Deployment:
    """The recorded deployment in ``workdir``.

    Raises:
        BenchError: nothing is deployed from ``workdir``.
    """
    state = StateStore(workdir).load()
    if state is None:
        raise BenchError(
            f"no deployment recorded in {workdir / 'state.json'}; run `expert-deploy up "
            f"--inventory {inventory}` first, or pass --url / --grpc"
        )
    return Deployment(state, workdir)


def _host(component: ComponentRecord) -> str:
    return "127.0.0.1" if component.host in ("localhost", "0.0.0.0", "") else component.host  # noqa: S104


def deployment_target(
    deployment: Deployment,
    via: Via | None,
    *,
    endpoint: Endpoint = "completions",
    api_key: str | None = None,
) -> Target:
    """The target for ``via`` (default: NGINX when deployed, else gateway replica 0)."""
    nginx = deployment.components("nginx")
    gateways = deployment.components("gateway")
    tritons = deployment.components("triton")
    chosen = via or ("nginx" if nginx else "gateway")
    if chosen == "nginx":
        if not nginx:
            raise BenchError("this deployment has no NGINX; use --via gateway")
        url = f"http://{_host(nginx[0])}:{nginx[0].ports['listen']}"
        return Target(
            http=HttpTarget.from_url(url, model=ROUTED_MODEL, endpoint=endpoint, api_key=api_key)
        )
    if chosen in ("gateway", "gateway-grpc"):
        if not gateways:
            raise BenchError("this deployment has no gateway replica recorded; run `up` again")
        gateway = gateways[0]
        if chosen == "gateway":
            url = f"http://{_host(gateway)}:{gateway.ports['http']}"
            return Target(
                http=HttpTarget.from_url(
                    url, model=ROUTED_MODEL, endpoint=endpoint, api_key=api_key
                )
            )
        if "grpc" not in gateway.ports:
            raise BenchError(f"{gateway.name} has no gRPC port; use --via gateway (HTTP)")
        address = f"{_host(gateway)}:{gateway.ports['grpc']}"
        return Target(grpc=GrpcTarget(address, ROUTED_MODEL, api_key))
    if not tritons:
        raise BenchError("this deployment has no Triton server recorded; run `up` again")
    return Target(grpc=triton_target(tritons[0]))


def triton_target(component: ComponentRecord) -> GrpcTarget:
    """Straight to one Triton server's ``ensemble`` model (the baseline without routing)."""
    return GrpcTarget(f"{_host(component)}:{component.ports['grpc']}", TRITON_MODEL)


def url_target(
    url: str | None,
    grpc: str | None,
    *,
    model: str | None,
    endpoint: Endpoint = "completions",
    api_key: str | None = None,
) -> Target:
    """``--url`` (OpenAI HTTP) or ``--grpc`` (KServe v2), exactly one of them.

    Raises:
        BenchError: neither or both given, or a malformed address.
    """
    if (url is None) == (grpc is None):
        raise BenchError("give exactly one of --url (OpenAI HTTP) or --grpc (HOST:PORT)")
    if url is not None:
        return Target(
            http=HttpTarget.from_url(
                url, model=model or ROUTED_MODEL, endpoint=endpoint, api_key=api_key
            )
        )
    assert grpc is not None
    return Target(grpc=GrpcTarget.parse(grpc, model=model or ROUTED_MODEL, api_key=api_key))
