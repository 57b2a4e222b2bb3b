"""What the simulated users send: prompts with cluster labels, the share per cluster, lengths.

* Prompts come from a JSONL file; each line's cluster is its ``--cluster-field`` (an integer)
  or, when the file has none, the deployment's router classifies the text.
* ``uniform`` gives every cluster the same share. ``normal`` weighs cluster ``c`` of ``k`` by a
  Gaussian ``exp(−(c − μ)² / 2σ²)`` with ``μ = (k − 1)/2`` and ``σ = k/4``, so the middle
  experts get more load, as in the paper's normal-distribution runs.
* Input length is counted in whitespace-separated words (the simulator has no tokenizer): a
  prompt is cut, or its words repeated, to a length drawn from a histogram file or from
  ``normal:MEAN:STD`` / ``fixed:N``; without a length distribution prompts are sent as written.

Every draw comes from one seeded ``random.Random`` per worker, so a run is reproducible.
"""

from __future__ import annotations

import bisect
import csv
import json
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from expert_deploy.bench.errors import BenchError

Distribution = Literal["uniform", "normal"]


@dataclass(frozen=True)
class Prompt:
    id: str
    text: str
    cluster: int | None


def read_prompts(
    path: Path,
    *,
    text_field: str = "text",
    cluster_field: str = "cluster",
) -> list[Prompt]:
    """Prompts of a JSONL file; ``cluster`` is None on lines without an integer cluster field.

    Raises:
        BenchError: the file is missing, empty, or a line is not a JSON object with text.
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise BenchError(f"cannot read prompts file {path}: {error.strerror}") from None
    prompts: list[Prompt] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except ValueError:
            raise BenchError(f"{path}:{number}: not JSON; write one object per line") from None
        text = data.get(text_field) if isinstance(data, dict) else None
        if not isinstance(text, str) or not text.strip():
            raise BenchError(f"{path}:{number}: no text in field {text_field!r}; pass --text-field")
        label = data.get(cluster_field)
        if label is not None and (isinstance(label, bool) or not isinstance(label, int)):
            raise BenchError(
                f"{path}:{number}: cluster field {cluster_field!r} must be an integer, "
                f"got {label!r}; pass --cluster-field or drop it to classify with the router"
            )
        prompts.append(Prompt(str(data.get("id", number)), text, label))
    if not prompts:
        raise BenchError(f"{path} holds no prompts")
    return prompts


def label_with(prompts: Sequence[Prompt], classify: Callable[[str], int]) -> list[Prompt]:
    """Fill in missing clusters with ``classify`` (the deployment's router)."""
    return [p if p.cluster is not None else Prompt(p.id, p.text, classify(p.text)) for p in prompts]


def cluster_shares(k: int, distribution: Distribution) -> list[float]:
    """Share of requests per cluster ``0..k-1``; they sum to 1."""
    if k < 1:
        raise BenchError("the workload needs at least one cluster")
    if distribution == "uniform":
        return [1.0 / k] * k
    mu, sigma = (k - 1) / 2.0, k / 4.0
    weights = [math.exp(-((c - mu) ** 2) / (2 * sigma * sigma)) for c in range(k)]
    total = math.fsum(weights)
    return [w / total for w in weights]


class LengthSampler:
    """Draws input lengths (words): a histogram's bins by count, or normal/fixed parameters."""

    def __init__(self, values: Sequence[int], weights: Sequence[float]) -> None:
        self.values = list(values)
        self._cumulative: list[float] = []
        total = 0.0
        for weight in weights:
            total += weight
            self._cumulative.append(total)
        self._normal: tuple[float, float] | None = None

    @classmethod
    def normal(cls, mean: float, std: float) -> LengthSampler:
        sampler = cls([], [])
        sampler._normal = (mean, std)
        return sampler

    def draw(self, rng: random.Random) -> int:
        if self._normal is not None:
            return max(1, round(rng.gauss(*self._normal)))
        pick = rng.random() * self._cumulative[-1]
        return self.values[bisect.bisect_right(self._cumulative, pick)]


def parse_lengths(spec: str) -> LengthSampler:
    """``fixed:N``, ``normal:MEAN:STD``, or a CSV histogram file with ``length,count`` rows.

    Raises:
        BenchError: the spec or the file is malformed.
    """
    head, _, rest = spec.partition(":")
    try:
        if head == "fixed":
            return LengthSampler([int(_positive(int(rest)))], [1.0])
        if head == "normal":
            mean, std = (float(x) for x in rest.split(":"))
            return LengthSampler.normal(_positive(mean), max(0.0, std))
    except ValueError:
        raise BenchError(
            f"--input-len {spec!r}: expected fixed:N, normal:MEAN:STD or a CSV file"
        ) from None
    return _histogram(Path(spec))


def _positive(value: float) -> float:
    if value < 1:
        raise ValueError("length below 1")
    return value


def _histogram(path: Path) -> LengthSampler:
    try:
        rows = list(csv.reader(path.read_text(encoding="utf-8").splitlines()))
    except OSError as error:
        raise BenchError(
            f"--input-len {path}: {error.strerror}; give fixed:N, normal:MEAN:STD or a CSV "
            "file of length,count rows"
        ) from None
    values: list[int] = []
    weights: list[float] = []
    for number, row in enumerate(rows, start=1):
        if not row or (number == 1 and not row[0].strip().isdigit()):
            continue  # blank line or header
        try:
            length, count = int(row[0]), float(row[1])
        except (ValueError, IndexError):
            raise BenchError(f"{path}:{number}: expected length,count") from None
        if length < 1 or count < 0:
            raise BenchError(f"{path}:{number}: length must be ≥ 1 and count ≥ 0")
        values.append(length)
        weights.append(count)
    if not values or sum(weights) <= 0:
        raise BenchError(f"{path}: the histogram has no positive counts")
    return LengthSampler(values, weights)


def fit_length(text: str, words: int) -> str:
    """``text`` cut to ``words`` words, or its words repeated until it has that many."""
    parts = text.split()
    if not parts:
        return text
    repeated = parts * (words // len(parts) + 1)
    return " ".join(repeated[:words])


class Workload:
    """Picks the next prompt: a cluster by share, then a prompt of that cluster at random."""

    def __init__(
        self,
        prompts: Sequence[Prompt],
        distribution: Distribution,
        *,
        lengths: LengthSampler | None = None,
    ) -> None:
        by_cluster: dict[int, list[Prompt]] = {}
        for prompt in prompts:
            if prompt.cluster is None:
                raise BenchError(
                    f"prompt {prompt.id} has no cluster; give --cluster-field or --router"
                )
            by_cluster.setdefault(prompt.cluster, []).append(prompt)
        if not by_cluster:
            raise BenchError("the workload has no prompts")
        self.clusters = sorted(by_cluster)
        k = max(self.clusters) + 1
        shares = cluster_shares(k, distribution)
        # Clusters with no prompt get no share; the others keep their relative weights.
        self._pools = [by_cluster[c] for c in self.clusters]
        self._weights = [shares[c] for c in self.clusters]
        self.shares = {
            c: w / math.fsum(self._weights)
            for c, w in zip(self.clusters, self._weights, strict=True)
        }
        self.lengths = lengths

    def next(self, rng: random.Random) -> tuple[Prompt, str]:
        """The prompt drawn and the text to send (length-adjusted when a sampler is set)."""
        pool = rng.choices(self._pools, weights=self._weights)[0]
        prompt = pool[rng.randrange(len(pool))]
        if self.lengths is None:
            return prompt, prompt.text
        return prompt, fit_length(prompt.text, self.lengths.draw(rng))
