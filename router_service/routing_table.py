"""The live routing table: cluster → expert → upstream servers, plus the selection rules.

Selection rules (pure functions, unit-tested):

* :func:`candidate_experts` — the order in which experts are tried for a prediction: the
  cluster's own expert first, then (``fallback: next_nearest``) the experts of the other clusters
  by increasing centroid distance, each expert once.
* :func:`pick_least_loaded` — among an expert's available upstreams, the one with the fewest
  in-flight plus queued requests (ties broken at random so idle servers share the load).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from router_service.config import RoutingTableSpec, UpstreamSpec, validate_against_k

__all__ = ["Expert", "RoutingTable", "build_table", "candidate_experts", "pick_least_loaded"]


class Candidate(Protocol):
    """What selection needs from an upstream."""

    @property
    def load(self) -> int: ...

    def is_available(self, now: float) -> bool: ...


U = TypeVar("U", bound=Candidate)


@dataclass(frozen=True)
class Expert(Generic[U]):
    """An expert of one routing-table generation with its live upstreams."""

    id: str
    clusters: tuple[int, ...]
    upstreams: tuple[U, ...]


@dataclass(frozen=True)
class RoutingTable(Generic[U]):
    """One generation of the routing table, built and validated before it goes live."""

    spec: RoutingTableSpec
    experts: Mapping[str, Expert[U]]
    by_cluster: tuple[Expert[U], ...]

    @property
    def generation(self) -> int:
        """The table's generation number (strictly increasing across swaps)."""
        return self.spec.generation

    def all_upstreams(self) -> list[U]:
        """Every upstream of every expert, in table order."""
        return [u for expert in self.experts.values() for u in expert.upstreams]


def build_table(
    spec: RoutingTableSpec, *, k: int, make_upstream: Callable[[UpstreamSpec], U]
) -> RoutingTable[U]:
    """Validate ``spec`` against the classifier's ``k`` and attach live upstreams.

    Raises:
        ConfigError: a cluster in ``0..k-1`` is unmapped or a mapped one is out of range.
    """
    validate_against_k(spec, k)
    experts = {
        e.id: Expert(id=e.id, clusters=e.clusters, upstreams=tuple(map(make_upstream, e.upstreams)))
        for e in spec.experts
    }
    by_cluster: list[Expert[U] | None] = [None] * k
    for expert in experts.values():
        for cluster in expert.clusters:
            by_cluster[cluster] = expert
    resolved = tuple(e for e in by_cluster if e is not None)
    assert len(resolved) == k  # guaranteed by validate_against_k
    return RoutingTable(spec=spec, experts=experts, by_cluster=resolved)


def candidate_experts(
    table: RoutingTable[U], ranked_clusters: Sequence[int], *, is_fallback_allowed: bool
) -> list[Expert[U]]:
    """Experts to try, nearest first; only the first one when fallback is not allowed."""
    ordered: list[Expert[U]] = []
    seen: set[str] = set()
    for cluster in ranked_clusters:
        expert = table.by_cluster[cluster]
        if expert.id not in seen:
            seen.add(expert.id)
            ordered.append(expert)
            if not is_fallback_allowed:
                break
    return ordered


def pick_least_loaded(
    upstreams: Iterable[U],
    *,
    now: float,
    exclude: Iterable[U] = (),
    rng: random.Random | None = None,
) -> U | None:
    """The available upstream with the lowest load, or ``None`` when none is available."""
    excluded = {id(u) for u in exclude}
    best: list[U] = []
    best_load = 0
    for upstream in upstreams:
        if id(upstream) in excluded or not upstream.is_available(now):
            continue
        load = upstream.load
        if not best or load < best_load:
            best, best_load = [upstream], load
        elif load == best_load:
            best.append(upstream)
    if not best:
        return None
    if len(best) == 1:
        return best[0]
    return (rng or random).choice(best)  # load spreading, not security
