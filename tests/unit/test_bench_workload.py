"""Workload: prompts and their clusters, shares per cluster, input lengths, one-line errors."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest

from expert_deploy.bench.errors import BenchError
from expert_deploy.bench.workload import (
    Prompt,
    Workload,
    cluster_shares,
    fit_length,
    label_with,
    parse_lengths,
    read_prompts,
)


def write_jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_read_prompts_labels_and_errors(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "p.jsonl", [{"text": "a b", "cluster": 1}, {"id": "x", "text": "c"}]
    )
    prompts = read_prompts(path)
    assert prompts == [Prompt("1", "a b", 1), Prompt("x", "c", None)]
    labelled = label_with(prompts, len)
    assert [p.cluster for p in labelled] == [1, 1]
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"text": "a", "cluster": "zero"}])
    with pytest.raises(BenchError, match=r"bad.jsonl:1: cluster field 'cluster' must be an int"):
        read_prompts(bad)
    with pytest.raises(BenchError, match=r"no text in field 'prompt'; pass --text-field"):
        read_prompts(path, text_field="prompt")
    (tmp_path / "notjson.jsonl").write_text("{nope\n")
    with pytest.raises(BenchError, match=r"notjson.jsonl:1: not JSON"):
        read_prompts(tmp_path / "notjson.jsonl")
    with pytest.raises(BenchError, match=r"cannot read prompts file"):
        read_prompts(tmp_path / "missing.jsonl")


def test_shares_uniform_and_normal_over_eight_clusters() -> None:
    assert cluster_shares(4, "uniform") == [0.25] * 4
    normal = cluster_shares(8, "normal")
    assert sum(normal) == pytest.approx(1.0)
    assert normal == pytest.approx(normal[::-1])  # symmetric around the middle
    assert normal[3] > normal[2] > normal[1] > normal[0]  # middle experts get more load
    assert normal[3] / normal[0] == pytest.approx(2.718281828 ** (12.25 / 8 - 0.25 / 8))


def test_workload_follows_the_shares() -> None:
    prompts = [Prompt(f"{c}-{i}", f"text {c}", c) for c in range(8) for i in range(3)]
    workload = Workload(prompts, "normal")
    rng = random.Random(1)
    counts = Counter(workload.next(rng)[0].cluster for _ in range(40_000))
    for cluster, share in workload.shares.items():
        assert counts[cluster] / 40_000 == pytest.approx(share, abs=0.01)
    with pytest.raises(BenchError, match="has no cluster; give --cluster-field or --router"):
        Workload([Prompt("1", "x", None)], "uniform")


def test_lengths_fixed_normal_and_histogram(tmp_path: Path) -> None:
    rng = random.Random(0)
    assert {parse_lengths("fixed:7").draw(rng) for _ in range(10)} == {7}
    draws = [parse_lengths("normal:100:10").draw(rng) for _ in range(5000)]
    assert sum(draws) / len(draws) == pytest.approx(100, abs=1)
    histogram = tmp_path / "lengths.csv"
    histogram.write_text("length,count\n10,1\n20,3\n")
    counts = Counter(parse_lengths(str(histogram)).draw(rng) for _ in range(8000))
    assert set(counts) == {10, 20} and counts[20] / 8000 == pytest.approx(0.75, abs=0.02)
    with pytest.raises(BenchError, match="expected fixed:N, normal:MEAN:STD or a CSV"):
        parse_lengths("normal:abc")
    with pytest.raises(BenchError, match=r"--input-len nope\.csv"):
        parse_lengths("nope.csv")
    (tmp_path / "zero.csv").write_text("10,0\n")
    with pytest.raises(BenchError, match="no positive counts"):
        parse_lengths(str(tmp_path / "zero.csv"))


def test_fit_length_cuts_or_repeats_words() -> None:
    assert fit_length("a b c d", 2) == "a b"
    assert fit_length("a b", 5) == "a b a b a"
    workload = Workload(
        [Prompt("1", "one two three", 0)], "uniform", lengths=parse_lengths("fixed:4")
    )
    prompt, text = workload.next(random.Random(0))
    assert prompt.id == "1" and text == "one two three one"
