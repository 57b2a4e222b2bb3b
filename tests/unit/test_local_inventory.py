"""The embedded default: its corpus, its router and its experts agree with each other.

local.yaml names each expert after the topic whose prompts its cluster receives; that holds
only for the router the inventory fits (corpus, k = 8, seed 0), so it is checked here.
"""

from __future__ import annotations

import importlib.util
import json
from collections import Counter
from pathlib import Path

import pytest

from expert_deploy.inventory import load_inventory
from expert_deploy.plan.planner import make_plan
from router_service.classifier import Classifier
from router_service.classifier.fit import fit_router

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO / "inventories" / "data" / "local-prompts.jsonl"


def _rows() -> list[dict[str, str]]:
    return [json.loads(line) for line in CORPUS.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> Classifier:
    inventory = load_inventory(REPO / "inventories" / "local.yaml", REPO / "engines").inventory
    source = inventory.router.source
    assert source.kind == "fit" and source.corpus == CORPUS
    directory = tmp_path_factory.mktemp("router")
    texts = [row["text"] for row in _rows()]
    fit_router(texts, k=inventory.router.k, seed=source.seed).save(directory)
    return Classifier.load(directory)


def test_the_corpus_is_what_the_script_writes() -> None:
    spec = importlib.util.spec_from_file_location("corpus", REPO / "scripts/make_local_corpus.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.make_rows() == _rows()
    counts = Counter(row["label"] for row in _rows())
    assert len(counts) == 8 and set(counts.values()) == {60}
    assert len({row["text"] for row in _rows()}) == 480


def test_each_expert_gets_its_topics_prompts(classifier: Classifier) -> None:
    inventory = load_inventory(REPO / "inventories" / "local.yaml", REPO / "engines").inventory
    assert inventory.router.k == 8 and len(inventory.experts) == 8
    by_topic: dict[str, Counter[int]] = {}
    for row in _rows():
        by_topic.setdefault(row["label"], Counter())[classifier.predict(row["text"]).cluster] += 1
    for expert in inventory.experts:
        clusters = by_topic[expert.id]
        share = clusters[expert.cluster] / sum(clusters.values())
        assert share >= 0.95, (
            f"{expert.id}'s prompts go to clusters {dict(clusters)}, not {expert.cluster}: "
            "the router fit changed; renumber the clusters in inventories/local.yaml"
        )


def test_prompts_not_in_the_corpus_reach_their_topic(classifier: Classifier) -> None:
    inventory = load_inventory(REPO / "inventories" / "local.yaml", REPO / "engines").inventory
    cluster = {e.id: e.cluster for e in inventory.experts}
    prompts = {
        "programming": "Why does my rust code segfault when the thread calls this function?",
        "cooking": "Can I cook salmon with garlic butter for a quick dinner recipe?",
        "travel": "Which passport documents do I need for my trip to the island?",
        "finance": "Should I invest my savings in bonds or pay off the loan first?",
        "fitness": "How many lunges should my leg workout include at the gym?",
        "gardening": "How deep should I plant potatoes in my garden soil?",
        "music": "How do I practice jazz chords on the piano?",
        "astronomy": "Can my telescope see the rings of saturn among the stars?",
    }
    for topic, prompt in prompts.items():
        assert classifier.predict(prompt).cluster == cluster[topic], (topic, prompt)


def test_it_plans_on_a_cpu_only_host_with_generated_checkpoints() -> None:
    loaded = load_inventory(REPO / "inventories" / "local.yaml", REPO / "engines")
    plan = make_plan(loaded)
    assert plan.errors == [] and list(plan.findings) == []
    experts = loaded.inventory.experts
    assert {e.engine for e in experts} == {"transformers"}
    assert {e.resolved_device for e in experts} == {"cpu"}
    seeds = [e.model.generate.seed for e in experts if e.model and e.model.generate]
    assert sorted(seeds) == list(range(8))  # eight distinct experts, not one copied
    assert loaded.inventory.gateway.replicas == 2 and loaded.inventory.nginx.enabled
