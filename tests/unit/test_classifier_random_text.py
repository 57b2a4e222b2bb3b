"""Random text never crashes the fast path and always routes as scikit-learn does."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router_service.classifier import Classifier
from router_service.classifier.fit import FittedRouter, fit_reference
from router_service.classifier.synthetic import topic_corpus


@pytest.fixture(scope="module")
def fitted() -> FittedRouter:
    texts = [item.text for item in topic_corpus(800, n_topics=4, seed=13)]
    return fit_reference(texts, k=4, seed=0)


@pytest.fixture(scope="module")
def vocabulary_words(fitted: FittedRouter) -> list[str]:
    return sorted(fitted.arrays.vocabulary)[:500]


def _prompts(words: list[str]) -> st.SearchStrategy[str]:
    known = st.sampled_from(words).map(lambda w: w.upper() if len(w) % 3 == 0 else w)
    noise = st.text(alphabet=st.characters(codec="utf-8"), max_size=12)
    numbers = st.integers(min_value=0, max_value=10**6).map(str)
    pieces = st.lists(st.one_of(known, noise, numbers, st.sampled_from(["the", "a", "of"])))
    return st.tuples(pieces, st.sampled_from([" ", "\n", ", ", "-", ""])).map(
        lambda parts: parts[1].join(parts[0])
    )


@pytest.mark.parametrize("batch", [False, True], ids=["predict", "predict_many"])
def test_random_prompts_route_like_sklearn(
    fitted: FittedRouter, vocabulary_words: list[str], batch: bool
) -> None:
    classifier = Classifier(fitted.arrays)

    @settings(max_examples=150, deadline=None)
    @given(texts=st.lists(_prompts(vocabulary_words), min_size=1, max_size=5))
    def check(texts: list[str]) -> None:
        predictions = (
            classifier.predict_many(texts) if batch else [classifier.predict(t) for t in texts]
        )
        assert [p.cluster for p in predictions] == fitted.reference_predict(texts).tolist()
        np.testing.assert_allclose(
            [p.distances for p in predictions],
            fitted.reference_distances(texts),
            rtol=1e-9,
            atol=1e-9,
        )

    check()
