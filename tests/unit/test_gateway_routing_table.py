"""Routing-table validation and the selection rules (fallback order, least in flight)."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest

from router_service.config import (
    ConfigError,
    RoutingTableSpec,
    UpstreamSpec,
    parse_routing_table,
    validate_against_k,
)
from router_service.routing_table import build_table, candidate_experts, pick_least_loaded


@dataclass(eq=False)
class FakeUpstream:
    """Selection only needs ``load`` and ``is_available``."""

    name: str
    load: int = 0
    is_up: bool = True

    def is_available(self, now: float) -> bool:
        return self.is_up


def _spec(experts: dict[str, list[int]], generation: int = 1) -> RoutingTableSpec:
    return parse_routing_table(
        {
            "generation": generation,
            "experts": [
                {"id": eid, "clusters": clusters, "upstreams": [{"grpc_port": 9000 + i}]}
                for i, (eid, clusters) in enumerate(experts.items())
            ],
        }
    )


def _make(spec: UpstreamSpec) -> FakeUpstream:
    return FakeUpstream(spec.address)


def test_table_must_cover_every_cluster_exactly_once() -> None:
    spec = _spec({"a": [0, 2], "b": [1]})
    validate_against_k(spec, 3)
    with pytest.raises(ConfigError, match=r"not mapped to any expert: \[3\]"):
        validate_against_k(spec, 4)
    with pytest.raises(ConfigError, match=r"outside 0..1 .*: \[2\]"):
        validate_against_k(spec, 2)
    with pytest.raises(ConfigError, match=r"exactly one expert; repeated: \[1\]"):
        _spec({"a": [0, 1], "b": [1]})


def test_table_rejects_duplicate_ids_and_unknown_fields() -> None:
    upstream = {"grpc_port": 1}
    with pytest.raises(ConfigError, match="repeated: \\['a'\\]"):
        parse_routing_table(
            {"generation": 1, "experts": [
                {"id": "a", "clusters": [0], "upstreams": [upstream]},
                {"id": "a", "clusters": [1], "upstreams": [upstream]},
            ]}
        )  # fmt: skip
    with pytest.raises(ConfigError, match=r"experts\.0\.weight: Extra inputs"):
        parse_routing_table(
            {"generation": 1, "experts": [
                {"id": "a", "clusters": [0], "upstreams": [upstream], "weight": 2}
            ]}
        )  # fmt: skip


def test_build_table_maps_clusters_to_experts() -> None:
    table = build_table(_spec({"a": [0, 2], "b": [1]}), k=3, make_upstream=_make)
    assert [e.id for e in table.by_cluster] == ["a", "b", "a"]
    assert table.generation == 1
    assert [u.name for u in table.all_upstreams()] == ["127.0.0.1:9000", "127.0.0.1:9001"]


def test_candidates_follow_centroid_distance_each_expert_once() -> None:
    table = build_table(_spec({"a": [0, 2], "b": [1], "c": [3]}), k=4, make_upstream=_make)
    ranked = [2, 0, 3, 1]
    with_fallback = candidate_experts(table, ranked, is_fallback_allowed=True)
    assert [e.id for e in with_fallback] == ["a", "c", "b"]
    assert [e.id for e in candidate_experts(table, ranked, is_fallback_allowed=False)] == ["a"]


def test_least_loaded_skips_unavailable_and_excluded() -> None:
    busy, idle, down = FakeUpstream("busy", 5), FakeUpstream("idle", 1), FakeUpstream("down", 0)
    down.is_up = False
    assert pick_least_loaded([busy, idle, down], now=0.0) is idle
    assert pick_least_loaded([busy, idle, down], now=0.0, exclude=[idle]) is busy
    assert pick_least_loaded([down], now=0.0) is None


def test_least_loaded_spreads_ties() -> None:
    first, second = FakeUpstream("first", 2), FakeUpstream("second", 2)
    rng = random.Random(0)
    picks = {pick_least_loaded([first, second], now=0.0, rng=rng).name for _ in range(50)}  # type: ignore[union-attr]
    assert picks == {"first", "second"}
