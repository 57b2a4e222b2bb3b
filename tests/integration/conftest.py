"""Integration fixtures: a fitted k=3 router, real tritonservers and gateways, a private dockerd."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from router_service.classifier import Classifier
from router_service.classifier.fit import fit_router
from tests.dockerd import Dockerd, dockerd_missing_reason, private_dockerd
from tests.support.gateway import Gateway, routing_table
from tests.support.triton import TritonServer, write_synthetic_repository

TOPICS = {
    "cooking": "recipe oven flour butter garlic simmer saucepan roast onion pastry dough bake",
    "astronomy": "galaxy telescope orbit nebula planet comet stellar quasar supernova eclipse",
    "finance": "stock bond dividend portfolio equity interest inflation ledger invoice audit",
}
K = 3


@dataclass(frozen=True)
class Router:
    """The fitted router artifact and one prompt per cluster."""

    directory: Path
    classifier: Classifier
    prompt_for_cluster: dict[int, str]


def _corpus(seed: int) -> list[str]:
    rng = random.Random(seed)
    texts = []
    for words in TOPICS.values():
        vocabulary = words.split()
        for _ in range(60):
            texts.append(" ".join(rng.choice(vocabulary) for _ in range(12)))
    return texts


@pytest.fixture(scope="session")
def router(tmp_path_factory: pytest.TempPathFactory) -> Router:
    """A k=3 router fitted on three clearly separated topics."""
    directory = tmp_path_factory.mktemp("router")
    fit_router(_corpus(0), k=K, seed=0).save(directory)
    classifier = Classifier.load(directory)
    prompts: dict[int, str] = {}
    for words in TOPICS.values():
        prompt = " ".join(words.split()[:6])
        prompts[classifier.predict(prompt).cluster] = prompt
    assert sorted(prompts) == list(range(K)), "each topic must land in its own cluster"
    return Router(directory, classifier, prompts)


@dataclass
class Fleet:
    """Session tritonservers: expert e0 has two servers, e1 and e2 one each (cluster i → ei)."""

    servers: dict[str, list[TritonServer]]

    def ports(self, expert_id: str) -> list[int]:
        """gRPC ports of an expert's servers."""
        return [server.grpc_port for server in self.servers[expert_id]]

    def table(self, generation: int = 1) -> dict[str, Any]:
        """The routing table cluster i → expert ei."""
        return routing_table(generation, {f"e{i}": ([i], self.ports(f"e{i}")) for i in range(K)})


def start_triton(root: Path, name: str, **model: Any) -> TritonServer:
    """Start one tritonserver with the synthetic model (``model`` = ttft_ms, tpot_ms, ...)."""
    repository = write_synthetic_repository(root / name / "repo", **model)
    return TritonServer(repository=repository, workdir=root / name / "work").start()


@pytest.fixture(scope="session")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """Four long-lived tritonservers; tests that kill servers start their own."""
    root = tmp_path_factory.mktemp("fleet")
    layout = {"e0": ["e0a", "e0b"], "e1": ["e1a"], "e2": ["e2a"]}
    servers: dict[str, list[TritonServer]] = {}
    try:
        for expert_id, names in layout.items():
            servers[expert_id] = [
                start_triton(root, name, tpot_ms=2, label=f"{name}-") for name in names
            ]
        yield Fleet(servers)
    finally:
        for group in servers.values():
            for server in group:
                server.stop()


GatewayFactory = Callable[..., Gateway]


@pytest.fixture
def start_gateway(tmp_path: Path, router: Router) -> Iterator[GatewayFactory]:
    """Start gateway processes with a config built from keyword overrides; stopped at teardown."""
    started: list[Gateway] = []

    def start(
        table: dict[str, Any],
        *,
        env: dict[str, str] | None = None,
        wait_ready: bool = True,
        **overrides: Any,
    ) -> Gateway:
        config: dict[str, Any] = {
            "router_dir": str(router.directory),
            "routing": table,
            "health": {"interval_s": 0.2, "probe_timeout_s": 0.5, "cooldown_s": 1.0},
            "timeouts": {"drain_deadline_s": 5.0, "first_token_s": 10.0, "idle_stream_s": 10.0},
        }
        for key, value in overrides.items():
            if isinstance(value, dict) and isinstance(config.get(key), dict):
                config[key] = {**config[key], **value}
            else:
                config[key] = value
        gateway = Gateway(tmp_path / f"gateway{len(started)}", config, env=env or {})
        started.append(gateway)
        return gateway.start(wait_ready=wait_ready)

    yield start
    for gateway in started:
        gateway.stop()


@pytest.fixture(scope="module")
def dockerd() -> Iterator[Dockerd]:
    """A dockerd of this module's own (no registry: the stand-in image is imported), or skip."""
    reason = dockerd_missing_reason()
    if reason is not None:
        pytest.skip(reason)
    with private_dockerd() as daemon:
        daemon.import_stand_in()
        yield daemon
