"""How good and how fast a router is on a labelled corpus (offline; uses scipy)."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from router_service.classifier.serving import Classifier


def agreement(clusters: Sequence[int], labels: Sequence[str]) -> tuple[float, float]:
    """(Hungarian accuracy, purity) of cluster ids against reference labels.

    Hungarian accuracy maps each cluster to at most one label and each label to at most one
    cluster, choosing the mapping that agrees most (scipy ``linear_sum_assignment``); purity
    lets every cluster take its majority label, so it is never lower.
    """
    from scipy.optimize import linear_sum_assignment

    if len(clusters) != len(labels) or not labels:
        raise ValueError("clusters and labels must be equally long and non-empty")
    names = sorted(set(labels))
    label_ids = np.searchsorted(names, labels)
    table = np.zeros((max(clusters) + 1, len(names)), dtype=np.int64)
    np.add.at(table, (np.asarray(clusters), label_ids), 1)
    rows, cols = linear_sum_assignment(table, maximize=True)
    total = len(labels)
    return float(table[rows, cols].sum() / total), float(table.max(axis=1).sum() / total)


def latency_us(
    classifier: Classifier, texts: Sequence[str], *, max_prompts: int = 5_000
) -> tuple[float, float]:
    """(p50, p99) wall time of :meth:`Classifier.predict` per prompt, in microseconds."""
    sample = texts[:max_prompts]
    for text in sample[:100]:  # warm caches and the regex engine before timing
        classifier.predict(text)
    timings_ns = np.empty(len(sample), dtype=np.float64)
    for i, text in enumerate(sample):
        started = time.perf_counter_ns()
        classifier.predict(text)
        timings_ns[i] = time.perf_counter_ns() - started
    p50_ns, p99_ns = np.percentile(timings_ns, [50, 99])
    return float(p50_ns) / 1e3, float(p99_ns) / 1e3
