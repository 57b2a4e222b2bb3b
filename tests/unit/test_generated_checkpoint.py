"""Generated checkpoints: deterministic bytes, loadable by transformers, a tokenizer that round-trips.

These run torch and transformers in-process (no subprocess, no network): the checkpoint is
small enough (5 MB) that making one takes a few seconds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from expert_deploy.checkpoints import fetch_all
from expert_deploy.checkpoints.batch import FetchFailedError
from expert_deploy.checkpoints.checkpoint import Checkpoint
from expert_deploy.checkpoints.generated import (
    BOS,
    EOT,
    generate_checkpoint,
    generation_key,
)
from expert_deploy.errors import CheckpointError, InventoryError
from expert_deploy.inventory import load_inventory
from expert_deploy.inventory.models import GeneratedModel, ModelSource
from expert_deploy.plan.architectures import find_architecture
from expert_deploy.settings import Settings

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO / "inventories" / "data" / "local-prompts.jsonl"

TEXTS = [
    "How do I fix this recursion bug in my python code?",
    "  leading spaces, tabs\tand\nnewlines  ",
    "Ünïcödé, 日本語, emoji 🙂 and words the corpus never saw: xylophone quokka",
    "",
]


def _source(**generate: Any) -> ModelSource:
    return ModelSource.model_validate({"generate": generate})


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Checkpoint:
    return generate_checkpoint(
        _source(seed=0), corpus=CORPUS, root=tmp_path_factory.mktemp("gen") / "generated"
    )


def test_same_inputs_give_the_same_bytes(made: Checkpoint, tmp_path: Path) -> None:
    again = generate_checkpoint(_source(seed=0), corpus=CORPUS, root=tmp_path)
    assert again.commit == made.commit
    assert again.files == made.files
    assert not again.cached
    names = {name for name, _ in made.files}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= names


def test_a_second_call_reuses_the_folder(made: Checkpoint) -> None:
    before = (made.path / "model.safetensors").stat().st_mtime_ns
    again = generate_checkpoint(_source(seed=0), corpus=CORPUS, root=made.path.parent)
    assert again.cached and again.path == made.path
    assert (made.path / "model.safetensors").stat().st_mtime_ns == before
    # Nothing half-written is left beside it.
    assert [p.name for p in made.path.parent.iterdir()] == [made.commit]
    assert made.path.stat().st_mode & 0o777 == 0o755  # a server may run as another user


def test_the_seed_changes_the_weights_not_the_tokenizer(made: Checkpoint, tmp_path: Path) -> None:
    other = generate_checkpoint(_source(seed=1), corpus=CORPUS, root=tmp_path)
    ours, theirs = dict(made.files), dict(other.files)
    assert other.commit != made.commit
    assert theirs["model.safetensors"] != ours["model.safetensors"]
    assert theirs["tokenizer.json"] == ours["tokenizer.json"]


def test_the_key_covers_the_corpus_and_the_sizes() -> None:
    versions = {"torch": "x"}
    spec = GeneratedModel()
    assert generation_key(spec, "a" * 64, versions) != generation_key(spec, "b" * 64, versions)
    wider = GeneratedModel(hidden_size=256)
    assert generation_key(spec, "a" * 64, versions) != generation_key(wider, "a" * 64, versions)
    assert generation_key(spec, "a" * 64, versions) != generation_key(spec, "a" * 64, {})


def test_transformers_loads_it_as_a_llama(made: Checkpoint) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(made.path)
    model = AutoModelForCausalLM.from_pretrained(made.path)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert model.config.vocab_size == len(tokenizer)
    assert model.config.hidden_size == 128 and model.config.num_hidden_layers == 4
    assert 1000 < len(tokenizer) <= 4096  # the corpus supports a real BPE vocabulary
    parameters = sum(p.numel() for p in model.parameters())
    assert parameters < 2_000_000  # "a few MB": tiny enough for 8 experts per CPU machine
    config = json.loads((made.path / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"


def test_the_tokenizer_round_trips_text(made: Checkpoint) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(made.path)
    for text in TEXTS:
        ids = tokenizer(text)["input_ids"]
        assert ids[0] == tokenizer.convert_tokens_to_ids(BOS)
        assert tokenizer.decode(ids, skip_special_tokens=True) == text
    # Trained merges: a frequent corpus word (after its space, as in the corpus) is one token.
    assert len(tokenizer(" recipe", add_special_tokens=False)["input_ids"]) == 1
    assert len(tokenizer(" xylophone", add_special_tokens=False)["input_ids"]) > 1


def test_the_chat_template_is_llama3_shaped(made: Checkpoint) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(made.path)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Plan a trip"}], tokenize=False, add_generation_prompt=True
    )
    assert prompt == (
        f"{BOS}<|start_header_id|>user<|end_header_id|>\n\nPlan a trip{EOT}"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    assert tokenizer.eos_token == EOT


def test_it_generates_tokens(made: Checkpoint) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(made.path)
    model = AutoModelForCausalLM.from_pretrained(made.path)
    inputs = tokenizer("Give me a pasta recipe", return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=8, min_new_tokens=8, do_sample=False)
    new = out[0][inputs["input_ids"].shape[1] :]
    assert len(new) == 8
    assert tokenizer.decode(new, skip_special_tokens=True).strip()


def test_a_missing_corpus_is_one_line_naming_the_setting(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError) as caught:
        generate_checkpoint(_source(), corpus=tmp_path / "nope.jsonl", root=tmp_path / "g")
    message = str(caught.value)
    assert "\n" not in message and "model.generate.corpus" in message
    assert not (tmp_path / "g").exists()


def test_a_corpus_with_a_bad_line_names_the_line(tmp_path: Path) -> None:
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"text": "fine"}\nnot json\n')
    with pytest.raises(CheckpointError, match=r"c\.jsonl:2"):
        generate_checkpoint(_source(), corpus=corpus, root=tmp_path / "g")


def test_a_file_in_the_way_is_a_checkpoint_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(CheckpointError, match="--workdir"):
        generate_checkpoint(_source(), corpus=CORPUS, root=blocker / "g")


def test_the_inventory_labels_a_generated_model() -> None:
    source = _source(seed=3, hidden_size=64)
    assert source.repo == "generated/llama-64x4x4x2-seed3"
    assert source.generate == GeneratedModel(seed=3, hidden_size=64)


def _inventory(tmp_path: Path, model: dict[str, Any]) -> Path:
    data = {
        "name": "t",
        "hosts": [{"name": "h", "address": "127.0.0.1"}],
        "defaults": {"engine": "transformers"},
        "experts": [{"id": "e0", "cluster": 0, "model": model}],
        "router": {"source": {"kind": "artifact", "path": "router"}, "k": 1},
    }
    path = tmp_path / "inv.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_repo_and_generate_together_are_refused(tmp_path: Path) -> None:
    path = _inventory(tmp_path, {"repo": "org/m", "generate": {"seed": 1}})
    with pytest.raises(InventoryError, match=r"either repo .* or generate"):
        load_inventory(path, REPO / "engines")


def test_heads_that_do_not_divide_are_refused_with_the_numbers(tmp_path: Path) -> None:
    path = _inventory(tmp_path, {"generate": {"hidden_size": 100, "num_heads": 3}})
    with pytest.raises(InventoryError, match=r"num_heads must divide hidden_size .*100, 3, 2"):
        load_inventory(path, REPO / "engines")


def test_a_relative_corpus_is_read_from_the_inventory_folder(tmp_path: Path) -> None:
    path = _inventory(tmp_path, {"generate": {"corpus": "prompts.jsonl"}})
    model = load_inventory(path, REPO / "engines").inventory.experts[0].model
    assert model is not None and model.generate is not None
    assert model.generate.corpus == (tmp_path / "prompts.jsonl").resolve()


def test_the_planner_sizes_a_generated_model_before_it_exists() -> None:
    arch = find_architecture(_source(hidden_size=256, num_layers=2), hf_home=None)
    assert arch is not None and arch.source == "generated"
    assert (arch.hidden_size, arch.num_layers, arch.tie_word_embeddings) == (256, 2, True)


def test_fetch_all_makes_each_distinct_checkpoint_once_in_the_workdir(
    tmp_path: Path, made: Checkpoint
) -> None:
    inventory = load_inventory(REPO / "inventories" / "local.yaml", REPO / "engines").inventory
    experts = [e for e in inventory.experts if e.id in ("astronomy", "music")]
    # Two experts on one spec share a checkpoint; a third with its own seed gets its own.
    twin = experts[0].model_copy(update={"id": "astronomy-twin"})
    settings = Settings(workdir=tmp_path / "work", data_dir=REPO)
    done = fetch_all([*experts, twin], settings)
    assert done["astronomy"] == done["astronomy-twin"]
    assert done["astronomy"].commit == made.commit  # seed 0 with defaults, as in `made`
    assert done["music"].commit != made.commit
    assert sorted(p.name for p in (tmp_path / "work" / "generated").iterdir()) == sorted(
        {done["astronomy"].commit, done["music"].commit}
    )


def test_fetch_all_reports_a_generation_failure_per_expert(tmp_path: Path) -> None:
    inventory = load_inventory(REPO / "inventories" / "local.yaml", REPO / "engines").inventory
    settings = Settings(workdir=tmp_path / "work", data_dir=tmp_path / "no-data")
    with pytest.raises(FetchFailedError) as caught:
        fetch_all(inventory.experts[:1], settings)
    assert set(caught.value.failures) == {"astronomy"}
    assert "tokenizer corpus" in str(caught.value)


def test_random_weights_never_print_broken_characters(made: Checkpoint) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(made.path)
    model = AutoModelForCausalLM.from_pretrained(made.path)
    assert model.generation_config.suppress_tokens  # the bare byte tokens
    inputs = tokenizer("Plan a trip to the island", return_tensors="pt")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        out = model.generate(**inputs, max_new_tokens=200, do_sample=True, temperature=1.5, top_k=0)
    text = tokenizer.decode(out[0][inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert text and "\ufffd" not in text
    assert all(c >= " " or c == "\n" for c in text)
