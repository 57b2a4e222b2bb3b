"""Fit a c-BTM router with scikit-learn (offline only), and keep the reference pipeline.

The pipeline is c-BTM's (kernelmachine/cbtm ``metaseq/scripts/train_clusterer.py``):
``NumberNormalizingVectorizer(stop_words=ENGLISH_STOP_WORDS + "#NUMBER")`` →
``TruncatedSVD(100)`` → ``Normalizer`` (or ``StandardScaler``, the paper's wording), followed by
k-means. Two deliberate differences, both for reproducibility: the SVD and k-means are seeded,
and k-means is scikit-learn's (c-BTM's online torch k-means needs ≥ 50,000 documents).
"""

from __future__ import annotations

import hashlib
import platform
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy
import sklearn
from numpy.typing import NDArray
from sklearn.cluster import KMeans
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, TfidfVectorizer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import Normalizer, StandardScaler

from router_service.classifier.arrays import SCALER_KINDS, RouterArrays, ScalerKind
from router_service.classifier.errors import ClassifierError
from router_service.classifier.sklearn_export import arrays_from_pipeline
from router_service.classifier.text import NUMBER_PLACEHOLDER

DEFAULT_N_INIT = 10


def number_normalizer(tokens: Iterable[str]) -> Iterable[str]:
    """Map every token whose first character is a digit to ``#NUMBER`` (c-BTM's rule)."""
    return (NUMBER_PLACEHOLDER if token[0].isdigit() else token for token in tokens)


class NumberNormalizingVectorizer(TfidfVectorizer):  # type: ignore[misc]
    """c-BTM's TF-IDF vectoriser: numbers become ``#NUMBER`` before stop-word removal.

    Pickle-compatible with the class c-BTM recorded under ``__main__`` /
    ``metaseq.scripts.train_clusterer``: the state is plain TfidfVectorizer state.
    """

    def build_tokenizer(self) -> Callable[[str], list[str]]:
        """The default regex tokenizer followed by :func:`number_normalizer`."""
        tokenize = super().build_tokenizer()
        return lambda doc: list(number_normalizer(tokenize(doc)))


def cbtm_stop_words() -> list[str]:
    """sklearn's English stop words plus the number placeholder, sorted."""
    return sorted(ENGLISH_STOP_WORDS.union([NUMBER_PLACEHOLDER]))


@dataclass(frozen=True)
class FittedRouter:
    """The fitted reference estimators together with their exported arrays."""

    pipeline: Pipeline
    kmeans: KMeans
    arrays: RouterArrays

    def reference_transform(self, texts: Sequence[str]) -> NDArray[np.float64]:
        """The scaled SVD vectors scikit-learn computes for ``texts``."""
        return reference_transform(self.pipeline, texts)

    def reference_predict(self, texts: Sequence[str]) -> NDArray[np.intp]:
        """Cluster ids by ``KMeans.predict`` on the reference pipeline's output."""
        return np.asarray(self.kmeans.predict(self.reference_transform(texts)), dtype=np.intp)

    def reference_distances(self, texts: Sequence[str]) -> NDArray[np.float64]:
        """Squared Euclidean distances to each centroid (``KMeans.transform`` squared)."""
        return np.asarray(self.kmeans.transform(self.reference_transform(texts)) ** 2)


def reference_transform(pipeline: Pipeline, texts: Sequence[str]) -> NDArray[np.float64]:
    """``pipeline.transform`` with c-BTM's known stop-word warning silenced.

    sklearn tokenises each stop word to check consistency; ``#NUMBER`` lower-cases and
    tokenises to ``number``, which is not a stop word, so it warns on every fresh estimator.
    The warning is expected for c-BTM's configuration and changes nothing.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Your stop_words may be inconsistent")
        return np.asarray(pipeline.transform(list(texts)), dtype=np.float64)


def fit_reference(
    texts: Sequence[str],
    *,
    k: int,
    scaler: ScalerKind = "l2_normalizer",
    seed: int = 0,
    svd_dims: int = 100,
    n_init: int = DEFAULT_N_INIT,
    provenance: Mapping[str, Any] | None = None,
) -> FittedRouter:
    """Fit the c-BTM pipeline and k-means on ``texts``; same inputs give the same router.

    ``svd_dims`` is capped at (vocabulary size − 1), which TruncatedSVD requires.

    Raises:
        ClassifierError: k is out of range, the scaler is unknown, or the corpus has too few
            distinct terms or prompts to form ``k`` clusters.
    """
    if scaler not in SCALER_KINDS:
        raise ClassifierError(f"unknown scaler {scaler!r}; choose one of {', '.join(SCALER_KINDS)}")
    if k < 1 or k > len(texts):
        raise ClassifierError(f"k={k} must be between 1 and the number of texts ({len(texts)})")
    if svd_dims < 1:
        raise ClassifierError(f"svd_dims={svd_dims} must be at least 1")
    tfidf = NumberNormalizingVectorizer(stop_words=cbtm_stop_words())
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Your stop_words may be inconsistent")
        try:
            tfidf_rows = tfidf.fit_transform(list(texts))
        except ValueError as error:  # "empty vocabulary": only stop words and numbers
            raise ClassifierError(f"cannot build a vocabulary from the corpus: {error}") from error
    vocab_size = len(tfidf.vocabulary_)
    if vocab_size < 2:
        raise ClassifierError(f"the corpus has {vocab_size} distinct term(s); need at least 2")
    svd = TruncatedSVD(n_components=min(svd_dims, vocab_size - 1), random_state=seed)
    scale_step = Normalizer(copy=False) if scaler == "l2_normalizer" else StandardScaler()
    vectors = scale_step.fit_transform(svd.fit_transform(tfidf_rows))
    distinct = len(np.unique(vectors, axis=0))
    if distinct < k:
        raise ClassifierError(
            f"the corpus gives only {distinct} distinct prompt vectors, fewer than k={k}; "
            "use a smaller k or a larger, more varied corpus"
        )
    kmeans = KMeans(n_clusters=k, random_state=seed, n_init=n_init).fit(vectors)
    pipeline = Pipeline([("tfidf", tfidf), ("svd", svd), ("scaler", scale_step)])
    record = {
        "source": "fit",
        "n_texts": len(texts),
        "corpus_sha256": corpus_sha256(texts),
        "seed": seed,
        "svd_dims_requested": svd_dims,
        "n_init": n_init,
        "kmeans": "sklearn.cluster.KMeans",
        "library_versions": library_versions(),
        **(provenance or {}),
    }
    arrays = arrays_from_pipeline(pipeline, kmeans.cluster_centers_, record)
    return FittedRouter(pipeline=pipeline, kmeans=kmeans, arrays=arrays)


def fit_router(
    texts: Sequence[str],
    *,
    k: int,
    scaler: ScalerKind = "l2_normalizer",
    seed: int = 0,
    svd_dims: int = 100,
) -> RouterArrays:
    """Fit a router on ``texts`` and return its arrays (see :func:`fit_reference`)."""
    return fit_reference(texts, k=k, scaler=scaler, seed=seed, svd_dims=svd_dims).arrays


def corpus_sha256(texts: Iterable[str]) -> str:
    """A digest of the texts in order, recorded so a fit can be traced to its corpus."""
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8", "surrogatepass"))
        digest.update(b"\0")
    return digest.hexdigest()


def library_versions() -> dict[str, str]:
    """Versions of the libraries whose numerics the artifact depends on."""
    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "scikit-learn": sklearn.__version__,
    }
