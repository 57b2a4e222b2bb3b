"""The numpy fast path routes exactly like the scikit-learn c-BTM pipeline it was fitted from."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from router_service.classifier import Classifier, ClassifierError, Prediction
from router_service.classifier.fit import FittedRouter, fit_reference, fit_router
from router_service.classifier.synthetic import topic_corpus
from router_service.classifier.term_index import COMPACT_MIN_TERMS

HAND_WRITTEN = [
    "",
    "   \n\t",
    "the of and to is",
    "12 3.5 2024-05-01 7th 42nd",
    "٣٤ ² ½ ①",
    "a b c d",
    "🙂🙂 — … ¿¡",
    "NUMBER number Number #NUMBER",
    "Ünïcödé ÇAFÉ naïve façade İstanbul ǅungla ﬁle",
    "x" * 5000,
]


@pytest.fixture(scope="module")
def corpus() -> tuple[list[str], list[str]]:
    texts = [item.text for item in topic_corpus(4_600, edge_fraction=0.03, seed=5)]
    return texts[:2_000], texts[2_000:] + HAND_WRITTEN


@pytest.fixture(scope="module", params=["l2_normalizer", "standard"])
def fitted(request: pytest.FixtureRequest, corpus: tuple[list[str], list[str]]) -> FittedRouter:
    train, _ = corpus
    return fit_reference(train, k=6, scaler=request.param, seed=0)


@pytest.fixture(params=["dict", "term_index"])
def compact_min_terms(request: pytest.FixtureRequest) -> int:
    """Both term lookups: the dict (small vocabularies) and the TermIndex (c-BTM-sized)."""
    return COMPACT_MIN_TERMS if request.param == "dict" else 0


def test_fast_path_agrees_with_sklearn_on_every_held_out_prompt(
    fitted: FittedRouter, corpus: tuple[list[str], list[str]], compact_min_terms: int
) -> None:
    _, held_out = corpus
    assert len(held_out) >= 2_000
    classifier = Classifier(fitted.arrays, compact_min_terms=compact_min_terms)
    assert classifier.is_compact == (compact_min_terms == 0)

    ours = np.array([classifier.predict(text).cluster for text in held_out])
    reference = fitted.reference_predict(held_out)

    assert (ours == reference).all(), f"{int((ours != reference).sum())} prompts disagree"
    assert len(set(ours.tolist())) == 6  # every cluster is actually used


def test_distances_match_sklearn_squared_distances(
    fitted: FittedRouter, corpus: tuple[list[str], list[str]], compact_min_terms: int
) -> None:
    _, held_out = corpus
    classifier = Classifier(fitted.arrays, compact_min_terms=compact_min_terms)

    ours = np.array([classifier.predict(text).distances for text in held_out])

    np.testing.assert_allclose(ours, fitted.reference_distances(held_out), rtol=1e-9, atol=1e-9)


def test_batch_path_equals_single_path(
    fitted: FittedRouter, corpus: tuple[list[str], list[str]], compact_min_terms: int
) -> None:
    _, held_out = corpus
    classifier = Classifier(fitted.arrays, compact_min_terms=compact_min_terms)

    single = [classifier.predict(text) for text in held_out]
    batch = classifier.predict_many(held_out)

    assert [p.cluster for p in batch] == [p.cluster for p in single]
    assert [p.is_empty for p in batch] == [p.is_empty for p in single]
    np.testing.assert_allclose(
        [p.distances for p in batch], [p.distances for p in single], rtol=1e-12, atol=1e-12
    )
    assert classifier.predict_many([]) == []


def test_is_empty_exactly_when_sklearn_row_has_no_term(
    fitted: FittedRouter, corpus: tuple[list[str], list[str]]
) -> None:
    _, held_out = corpus
    classifier = Classifier(fitted.arrays)
    tfidf_rows = fitted.pipeline.named_steps["tfidf"].transform(held_out)

    flags = np.array([classifier.predict(text).is_empty for text in held_out])

    assert (flags == (tfidf_rows.getnnz(axis=1) == 0)).all()
    assert flags[len(held_out) - len(HAND_WRITTEN) :].sum() >= 7  # the hand-written edge cases
    assert classifier.predict("").cluster == fitted.reference_predict([""])[0]


def test_analyzer_reproduces_sklearn_terms(
    fitted: FittedRouter, corpus: tuple[list[str], list[str]]
) -> None:
    _, held_out = corpus
    sklearn_analyze = fitted.pipeline.named_steps["tfidf"].build_analyzer()

    for text in held_out[:300] + HAND_WRITTEN:
        assert fitted.arrays.text.analyze(text) == sklearn_analyze(text)


def test_same_seed_gives_same_router(corpus: tuple[list[str], list[str]]) -> None:
    train, _ = corpus

    first = fit_router(train[:800], k=4, seed=3)
    second = fit_router(train[:800], k=4, seed=3)

    assert first.content_hash == second.content_hash
    np.testing.assert_array_equal(first.centroids, second.centroids)
    np.testing.assert_array_equal(first.projection, second.projection)
    assert first.provenance["corpus_sha256"] == second.provenance["corpus_sha256"]


def test_tiny_corpus_caps_svd_dims_below_vocabulary() -> None:
    texts = ["alpha beta gamma", "delta epsilon", "alpha zeta", "gamma eta theta"]

    fitted = fit_reference(texts, k=2, svd_dims=100)

    assert fitted.arrays.vocab_size == 8
    assert fitted.pipeline.named_steps["svd"].n_components == 7  # vocabulary − 1
    assert fitted.arrays.dims <= 7
    assert fitted.arrays.projection.shape == (8, fitted.arrays.dims)
    clusters = [Classifier(fitted.arrays).predict(text).cluster for text in texts]
    assert clusters == fitted.reference_predict(texts).tolist()


@pytest.mark.parametrize(
    ("texts", "kwargs", "message"),
    [
        (["alpha beta", "gamma delta"], {"k": 3}, "between 1 and the number of texts"),
        (["alpha beta", "gamma delta"], {"k": 0}, "between 1 and the number of texts"),
        (["the of and", "12 34", "a b"], {"k": 2}, "cannot build a vocabulary"),
        (["alpha"] * 5, {"k": 2}, "distinct term"),
        (["alpha beta", "alpha beta", "gamma delta"], {"k": 3}, "distinct prompt vectors"),
        (["alpha beta", "gamma delta"], {"k": 2, "scaler": "minmax"}, "unknown scaler"),
        (["alpha beta", "gamma delta"], {"k": 2, "svd_dims": 0}, "svd_dims"),
    ],
)
def test_unfittable_input_raises_classifier_error(
    texts: list[str], kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ClassifierError, match=message):
        fit_router(texts, **kwargs)  # type: ignore[arg-type]


def test_ranked_orders_by_distance_and_ties_by_index() -> None:
    prediction = Prediction(cluster=1, distances=(1.0, 0.5, 0.5, 0.75), is_empty=False)

    assert prediction.ranked() == [1, 2, 3, 0]


def test_serving_modules_never_import_sklearn_or_scipy() -> None:
    package = Path(__file__).resolve().parents[2] / "router_service" / "classifier"
    serving_modules = ["__init__.py", "arrays.py", "errors.py", "serving.py", "text.py"]
    for name in serving_modules:
        tree = ast.parse((package / name).read_text())
        imported = {
            alias.name.split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.Import)
            for alias in node.names
        } | {
            (node.module or "").split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom)
        }
        assert not imported & {"sklearn", "scipy", "torch", "pickle"}, name
