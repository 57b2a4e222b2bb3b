"""Serve-time classification: the c-BTM transform over plain arrays, no scikit-learn.

Per prompt: lower-case → regex tokens → look each token up in a precomputed dict (which
already excludes stop words and digit-led terms, see ``text.servable_terms``; for c-BTM-sized
vocabularies a :class:`~router_service.classifier.term_index.TermIndex`) → counts × IDF →
L2-normalise (a zero row stays zero) → weighted sum of the terms' projection rows → scale →
nearest centroid by ``‖c‖² − 2·z·c`` (ties → lowest index, as sklearn's and torch's argmin).
With the l2 normaliser the TF-IDF norm cancels out, so that path skips it and gathers one row
per token occurrence instead of counting terms.
The cost is O(tokens × d); nothing V-sized is allocated per call. A float32
projection is gathered as float32 and multiplied with float64 weights, so every sum is still
accumulated in float64; only the stored components are rounded.
"""

from __future__ import annotations

import ctypes
import itertools
import math
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from router_service.classifier.arrays import FloatArray, ProjectionArray, RouterArrays
from router_service.classifier.term_index import COMPACT_MIN_TERMS, TermIndex
from router_service.classifier.text import servable_terms

# Batches are transformed in chunks so the gathered (nnz × d) block stays a few MB.
_BATCH_CHUNK = 512
# Terms in rehearsal_prompt: about a short prompt's count, so a rehearsal gathers as many rows.
REHEARSAL_TERMS = 8


def _release_freed_heap() -> None:
    """Hand freed heap memory back to the OS (glibc's malloc_trim; a no-op elsewhere)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    trim = getattr(libc, "malloc_trim", None)
    if trim is not None:
        trim(0)


def _dict_lookup(lookup: Mapping[str, int]) -> Callable[[Sequence[str]], list[int]]:
    def columns(tokens: Sequence[str]) -> list[int]:
        return [lookup[t] for t in tokens if t in lookup]

    return columns


@dataclass(frozen=True, slots=True)
class Prediction:
    """Where one prompt goes.

    ``distances[j]`` is the squared Euclidean distance from the prompt's scaled vector to
    centroid ``j``. ``is_empty`` means no term survived analysis (only stop words, numbers,
    one-letter or unknown tokens); such a prompt is routed exactly as scikit-learn would,
    to the centroid nearest the zero (or, for ``standard``, the scaled-zero) vector.
    """

    cluster: int
    distances: tuple[float, ...]
    is_empty: bool

    def ranked(self) -> list[int]:
        """Clusters nearest first; equal distances keep the lower index first."""
        return sorted(range(len(self.distances)), key=self.distances.__getitem__)


class Classifier:
    """A loaded router: assigns prompts to clusters with numpy only."""

    k: int
    content_hash: str
    #: A few vocabulary terms: a prompt that takes the full predict path (router_service.keep_warm).
    rehearsal_prompt: str

    def __init__(self, arrays: RouterArrays, *, compact_min_terms: int = COMPACT_MIN_TERMS) -> None:
        """Precompute the per-term lookups; prefer :meth:`load` for artifacts on disk.

        A vocabulary of ``compact_min_terms`` or more servable terms is held in a
        :class:`TermIndex` instead of a dict. Nothing here keeps ``arrays.vocabulary``, so
        :meth:`load` frees that dict once the index is built.
        """
        self.k = arrays.k
        self.content_hash = arrays.content_hash
        self._findall = re.compile(arrays.text.token_pattern).findall
        self._lowercase = arrays.text.lowercase
        servable = servable_terms(arrays.vocabulary, arrays.text)
        self.rehearsal_prompt = " ".join(itertools.islice(servable, REHEARSAL_TERMS))
        self.is_compact = len(servable) >= compact_min_terms
        self._columns_of = (
            TermIndex(servable).columns if self.is_compact else _dict_lookup(servable)
        )
        self._idf = arrays.idf
        self._projection = arrays.projection
        self._centroids = arrays.centroids
        self._centroids_t: FloatArray = np.ascontiguousarray(arrays.centroids.T)
        self._centroid_sq_norms: FloatArray = np.einsum("ij,ij->i", *(arrays.centroids,) * 2)
        self._centroid_sq_norm_list: list[float] = self._centroid_sq_norms.tolist()
        self._is_standard = arrays.scaler == "standard"
        # Unused by the l2 normaliser; zeros and ones keep the types simple.
        self._mean = np.zeros(arrays.dims) if arrays.scaler_mean is None else arrays.scaler_mean
        self._scale = np.ones(arrays.dims) if arrays.scaler_scale is None else arrays.scaler_scale
        # The scaled image of an empty prompt is a constant: compute its answer once.
        self._empty = self._predict_vector(np.zeros(arrays.dims), is_empty=True)

    @classmethod
    def load(cls, directory: Path, *, mmap: bool = False) -> Classifier:
        """Load and validate an artifact directory (``mmap``: see :meth:`RouterArrays.load`).

        Raises:
            ClassifierError: the artifact is missing, corrupt or inconsistent.
        """
        classifier = cls(RouterArrays.load(directory, mmap=mmap))
        if classifier.is_compact:
            # The parsed vocabulary (~200 MB of str objects at 1M terms) is garbage now, but
            # glibc keeps the freed heap: 103 -> 49 MiB private after trimming (1M terms).
            _release_freed_heap()
        return classifier

    @property
    def projection(self) -> ProjectionArray:
        """The V × d projection as loaded (float64 or float32, in memory or memory-mapped)."""
        return self._projection

    def terms(self, text: str) -> list[int]:
        """Vocabulary columns of the terms of ``text`` that count, in order (with repeats)."""
        return self._columns_of(self._findall(text.lower() if self._lowercase else text))

    def predict(self, text: str) -> Prediction:
        """Classify one prompt."""
        columns = self.terms(text)
        if not columns:
            return self._empty
        if not self._is_standard:
            # The l2 normaliser divides by ‖z‖, so the TF-IDF row norm cancels out: skip it.
            # Without it, a repeated term may be gathered once per occurrence (its rows sum to
            # count × idf × row), which saves counting: fewer calls, and each call is costly
            # when the gateway was idle (cold caches).
            # take() with the list: fancy indexing would first convert it to an index array.
            weights = self._idf.take(columns)
            return self._predict_l2(weights @ self._projection.take(columns, axis=0))
        counts = Counter(columns)
        n_terms = len(counts)
        unique = np.fromiter(counts.keys(), dtype=np.intp, count=n_terms)
        weights = np.fromiter(counts.values(), dtype=np.float64, count=n_terms)
        weights *= self._idf[unique]
        weights /= np.sqrt(weights @ weights)
        return self._predict_vector(weights @ self._projection[unique], is_empty=False)

    def predict_many(self, texts: Sequence[str]) -> list[Prediction]:
        """Classify a batch; same answers as :meth:`predict`, vectorised per chunk."""
        results: list[Prediction] = []
        for start in range(0, len(texts), _BATCH_CHUNK):
            results.extend(self._predict_chunk(texts[start : start + _BATCH_CHUNK]))
        return results

    def _predict_chunk(self, texts: Sequence[str]) -> list[Prediction]:
        columns_per_text = [self.terms(text) for text in texts]
        lengths = np.fromiter(map(len, columns_per_text), dtype=np.intp, count=len(texts))
        non_empty = np.flatnonzero(lengths)
        out: list[Prediction] = [self._empty] * len(texts)
        if non_empty.size == 0:
            return out
        rows = np.repeat(np.arange(len(texts), dtype=np.int64), lengths)
        flat = np.fromiter(
            (c for cols in columns_per_text for c in cols), dtype=np.int64, count=rows.size
        )
        # Unique (row, column) pairs with their counts: the CSR entries sklearn would build.
        pairs, counts = np.unique(rows * len(self._idf) + flat, return_counts=True)
        pair_rows, pair_cols = np.divmod(pairs, len(self._idf))
        weights = counts * self._idf[pair_cols]
        norms = np.sqrt(np.bincount(pair_rows, weights * weights, minlength=len(texts)))
        weights /= norms[pair_rows]
        starts = np.searchsorted(pair_rows, non_empty)
        projected = np.add.reduceat(self._projection[pair_cols] * weights[:, None], starts)
        scaled = self._scale_rows(projected)
        scores = self._centroid_sq_norms - 2.0 * (scaled @ self._centroids_t)
        clusters = scores.argmin(axis=1)
        distances = np.maximum(scores + np.einsum("ij,ij->i", scaled, scaled)[:, None], 0.0)
        for i, row in enumerate(non_empty.tolist()):
            out[row] = Prediction(int(clusters[i]), tuple(distances[i].tolist()), False)
        return out

    def _scale_rows(self, z: NDArray[np.float64]) -> NDArray[np.float64]:
        if self._is_standard:
            scaled: NDArray[np.float64] = (z - self._mean) / self._scale
            return scaled
        norms = np.sqrt(np.einsum("ij,ij->i", z, z))
        norms[norms == 0.0] = 1.0  # sklearn's Normalizer leaves zero rows at zero
        normalised: NDArray[np.float64] = z / norms[:, None]
        return normalised

    def _predict_l2(self, v: FloatArray) -> Prediction:
        """``_predict_vector`` for the l2 normaliser with the k-sized tail in plain floats.

        A gateway serves one prompt after tens of idle milliseconds, when each numpy call
        costs many times its hot time (cold caches); three calls here instead of ten took
        ``predict`` from 12.8 to 9.0 µs hot and from ~76 to ~47–68 µs after a cache flush.
        """
        squared = float(v @ v)
        if squared == 0.0:
            return self._predict_vector(v, is_empty=False)
        norm = math.sqrt(squared)
        dots = (self._centroids @ v).tolist()
        norms = self._centroid_sq_norm_list
        scores = [c - 2.0 * (d / norm) for c, d in zip(norms, dots, strict=True)]
        cluster = scores.index(min(scores))  # the first minimum on ties
        z_squared = squared / (norm * norm)
        return Prediction(cluster, tuple([max(s + z_squared, 0.0) for s in scores]), False)

    def _predict_vector(self, z: FloatArray, *, is_empty: bool) -> Prediction:
        if self._is_standard:
            z = (z - self._mean) / self._scale
        else:
            norm = np.sqrt(z @ z)
            if norm != 0.0:
                z = z / norm
        scores = self._centroid_sq_norms - 2.0 * (self._centroids @ z)
        cluster = int(scores.argmin())
        distances = np.maximum(scores + z @ z, 0.0)
        return Prediction(cluster, tuple(distances.tolist()), is_empty)
