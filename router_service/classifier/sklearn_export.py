"""Turn a fitted scikit-learn c-BTM pipeline (TF-IDF → SVD → scaler) into RouterArrays.

Offline only: imports scikit-learn. Shared by ``fit`` (our own fits) and ``cbtm_import``
(the published pickles), so both produce artifacts by the same rules.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import Normalizer, StandardScaler

from router_service.classifier.arrays import FloatArray, RouterArrays, ScalerKind
from router_service.classifier.errors import ClassifierError
from router_service.classifier.text import NUMBER_PLACEHOLDER, TextSettings


def arrays_from_pipeline(
    pipeline: Pipeline, centroids: Any, provenance: Mapping[str, Any]
) -> RouterArrays:
    """Export ``pipeline`` plus k-means ``centroids`` (k × d) as validated float64 arrays.

    Raises:
        ClassifierError: the pipeline is not TF-IDF → TruncatedSVD → Normalizer/StandardScaler
            with the settings the fast path reproduces.
    """
    steps = [step for _, step in pipeline.steps]
    if len(steps) != 3:
        raise ClassifierError(f"expected 3 pipeline steps (tfidf, svd, scaler), got {len(steps)}")
    tfidf, svd, scaler_step = steps
    if not isinstance(tfidf, TfidfVectorizer) or not isinstance(svd, TruncatedSVD):
        raise ClassifierError(
            "pipeline must start with a TfidfVectorizer and a TruncatedSVD, found "
            f"{type(tfidf).__name__} and {type(svd).__name__}"
        )
    text = _text_settings(tfidf)
    scaler, mean, scale = _scaler_params(scaler_step, svd.components_.shape[0])
    vocabulary = {str(term): int(index) for term, index in tfidf.vocabulary_.items()}
    return RouterArrays(
        vocabulary=vocabulary,
        idf=_float64(_idf(tfidf)),
        projection=np.ascontiguousarray(_float64(svd.components_).T),
        centroids=_float64(centroids),
        scaler=scaler,
        text=text,
        scaler_mean=mean,
        scaler_scale=scale,
        provenance=provenance,
    )


def _text_settings(tfidf: TfidfVectorizer) -> TextSettings:
    expected = {
        "analyzer": "word",
        "ngram_range": (1, 1),
        "strip_accents": None,
        "preprocessor": None,
        "tokenizer": None,
        "norm": "l2",
        "use_idf": True,
        "sublinear_tf": False,
        "binary": False,
    }
    for name, value in expected.items():
        actual = getattr(tfidf, name, value)
        if (tuple(actual) if isinstance(actual, list) else actual) != value:
            raise ClassifierError(
                f"TF-IDF setting {name}={actual!r} is not supported (c-BTM uses {value!r})"
            )
    if type(tfidf).build_tokenizer is TfidfVectorizer.build_tokenizer:
        raise ClassifierError(
            "the TF-IDF step lacks c-BTM's number-normalising tokenizer "
            "(NumberNormalizingVectorizer); cannot reproduce it"
        )
    stop_words = tfidf.get_stop_words() or frozenset()
    return TextSettings(
        token_pattern=str(tfidf.token_pattern),
        lowercase=bool(tfidf.lowercase),
        stop_words=frozenset(str(w) for w in stop_words),
        number_placeholder=NUMBER_PLACEHOLDER,
    )


def _idf(tfidf: TfidfVectorizer) -> Any:
    transformer = tfidf._tfidf
    # scikit-learn < 1.3 kept the IDF as a sparse diagonal matrix; newer ones as an array.
    if hasattr(transformer, "idf_"):
        return transformer.idf_
    if hasattr(transformer, "_idf_diag"):
        return transformer._idf_diag.diagonal()
    raise ClassifierError("the TF-IDF step is not fitted (no idf_); fit it first")


def _scaler_params(step: Any, dims: int) -> tuple[ScalerKind, FloatArray | None, FloatArray | None]:
    if isinstance(step, Normalizer):
        if step.norm != "l2":
            raise ClassifierError(f"Normalizer(norm={step.norm!r}) is not supported; use 'l2'")
        return "l2_normalizer", None, None
    if isinstance(step, StandardScaler):
        # with_mean/with_std=False leave mean_/scale_ as None: equivalent to 0 and 1.
        mean = step.mean_ if step.with_mean else None
        scale = step.scale_ if step.with_std else None
        mean_arr = np.zeros(dims) if mean is None else _float64(mean)
        scale_arr = np.ones(dims) if scale is None else _float64(scale)
        return "standard", mean_arr, scale_arr
    raise ClassifierError(
        f"scaling step {type(step).__name__} is not supported; use Normalizer or StandardScaler"
    )


def _float64(values: Any) -> FloatArray:
    return np.ascontiguousarray(np.asarray(values, dtype=np.float64))
