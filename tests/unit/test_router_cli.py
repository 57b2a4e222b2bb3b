"""``expert-deploy router fit | eval | predict`` through the real CLI entry point."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from expert_deploy.cli import main
from router_service.classifier import Classifier
from router_service.classifier.synthetic import topic_corpus

N_TOPICS = 4


def _write_corpus(path: Path, n_texts: int, *, seed: int, skip: int = 0) -> list[dict[str, str]]:
    # The same seed gives the same topic vocabularies, and a longer corpus extends a shorter
    # one, so ``skip`` yields held-out prompts from the topics a router was fitted on.
    corpus = topic_corpus(skip + n_texts, n_topics=N_TOPICS, edge_fraction=0.0, seed=seed)
    records = [{"text": item.text, "label": item.label} for item in corpus[skip:]]
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return records


@pytest.fixture(scope="module")
def fitted_router(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("router")
    _write_corpus(directory / "corpus.jsonl", 800, seed=4)
    argv = ["router", "fit", "--corpus", str(directory / "corpus.jsonl"), "--k", str(N_TOPICS)]
    assert main([*argv, "--out", str(directory / "router")]) == 0
    return directory / "router", directory / "corpus.jsonl"


def test_fit_prints_sizes_and_the_hash_it_wrote(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _write_corpus(tmp_path / "corpus.jsonl", 500, seed=1)
    argv = ["router", "fit", "--corpus", str(tmp_path / "corpus.jsonl"), "--k", "3"]
    argv += ["--out", str(tmp_path / "router"), "--scaler", "standard", "--seed", "7"]

    code = main(argv)

    out = capsys.readouterr().out
    assert code == 0
    classifier = Classifier.load(tmp_path / "router")
    assert f"content hash {classifier.content_hash}" in out
    assert "scaler standard" in out
    sizes = [int(m) for m in re.findall(r"^\s+\d+\s+(\d+)\s+[\d.]+%$", out, flags=re.M)]
    assert len(sizes) == 3
    assert sum(sizes) == 500


def test_fit_reads_another_text_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    records = topic_corpus(200, n_topics=2, seed=3)
    lines = [json.dumps({"prompt": item.text}) for item in records]
    (tmp_path / "c.jsonl").write_text("\n".join(lines) + "\n\n")
    argv = ["router", "fit", "--corpus", str(tmp_path / "c.jsonl"), "--k", "2"]

    code = main([*argv, "--out", str(tmp_path / "r"), "--text-field", "prompt"])

    assert code == 0, capsys.readouterr().err
    assert Classifier.load(tmp_path / "r").k == 2


def test_predict_prints_the_cluster_the_classifier_picks(
    fitted_router: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    router, corpus = fitted_router
    text = json.loads(corpus.read_text().splitlines()[0])["text"]
    expected = Classifier.load(router).predict(text)

    assert main(["router", "predict", "--router", str(router), text]) == 0
    assert capsys.readouterr().out.startswith(f"cluster {expected.cluster}\n")

    assert main(["router", "predict", "--router", str(router), "--json", text]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload == {
        "cluster": expected.cluster,
        "distances": list(expected.distances),
        "is_empty": False,
    }


def test_predict_flags_a_prompt_without_known_terms(
    fitted_router: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    router, _ = fitted_router

    assert main(["router", "predict", "--router", str(router), "the 42 of"]) == 0
    assert "no known term" in capsys.readouterr().out


def test_eval_reports_agreement_and_speed(
    fitted_router: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    router, _ = fitted_router
    _write_corpus(tmp_path / "labelled.jsonl", 400, seed=4, skip=800)
    argv = ["router", "eval", "--router", str(router), "--corpus", str(tmp_path / "labelled.jsonl")]

    assert main([*argv, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["prompts"] == 400
    assert sum(report["cluster_sizes"]) == 400
    # Topics have disjoint vocabularies, so k-means recovers them almost perfectly.
    assert report["hungarian_accuracy"] > 0.9
    assert report["purity"] >= report["hungarian_accuracy"]
    assert report["batch_prompts_per_s"] > 0
    assert 0 < report["single_p50_us"] <= report["single_p99_us"]

    assert main(argv) == 0
    assert "hungarian accuracy" in capsys.readouterr().out


def _error_lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


@pytest.mark.parametrize(
    ("content", "extra", "code", "message"),
    [
        (None, [], 2, "not found; pass --corpus"),
        (
            '{"text": "alpha beta"}\n{"text": "gamma"}\n{oops\n',
            [],
            1,
            r"corpus\.jsonl:3: not valid",
        ),
        ('{"text": "alpha beta"}\n["a list"]\n', [], 1, r"corpus\.jsonl:2: expected a JSON object"),
        ('{"body": "alpha beta"}\n', [], 1, r"corpus\.jsonl:1: needs a string field 'text'"),
        ("\n\n", [], 1, "has no prompts"),
        ('{"text": "alpha beta"}\n{"text": "gamma delta"}\n', [], 2, "larger than the corpus"),
        ('{"text": "the of"}\n{"text": "12 34"}\n', ["--k", "1"], 1, "cannot build a vocabulary"),
        ('{"text": "alpha beta"}\n', ["--scaler", "minmax"], 2, "minmax"),
    ],
    ids=[
        "missing",
        "bad-json",
        "not-object",
        "no-text",
        "empty",
        "k-too-big",
        "stop-words-only",
        "bad-scaler",
    ],
)
def test_fit_input_mistakes_are_one_line_errors(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    content: str | None,
    extra: list[str],
    code: int,
    message: str,
) -> None:
    corpus = tmp_path / "corpus.jsonl"
    if content is not None:
        corpus.write_text(content)
    k = [] if "--k" in extra else ["--k", "3"]
    argv = ["router", "fit", "--corpus", str(corpus), *k, *extra]

    returned = main([*argv, "--out", str(tmp_path / "r")])

    lines = _error_lines(capsys)
    assert returned == code
    assert any(re.search(message, line) for line in lines), lines
    assert not (tmp_path / "r" / "router.json").exists()


def test_eval_needs_labels(
    fitted_router: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    router, _ = fitted_router
    (tmp_path / "c.jsonl").write_text('{"text": "alpha"}\n')

    argv = ["router", "eval", "--router", str(router), "--corpus", str(tmp_path / "c.jsonl")]

    assert main(argv) == 1
    assert "needs a scalar field 'label'" in capsys.readouterr().err


def test_damaged_router_is_a_one_line_error(
    fitted_router: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    router, _ = fitted_router
    broken = tmp_path / "broken"
    broken.mkdir()
    for path in router.iterdir():
        (broken / path.name).write_bytes(path.read_bytes())
    metadata = json.loads((broken / "router.json").read_text())
    metadata["content_hash"] = "sha256:" + "0" * 64
    (broken / "router.json").write_text(json.dumps(metadata))

    assert main(["router", "predict", "--router", str(broken), "alpha"]) == 1
    lines = _error_lines(capsys)
    assert len(lines) == 1
    assert lines[0].startswith("error: ") and "content hash mismatch" in lines[0]
