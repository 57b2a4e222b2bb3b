"""Term → column lookup for large vocabularies, in flat arrays instead of a dict.

c-BTM's TF-IDF vocabulary is unbounded (near 1M terms on C4). A Python dict of that many
``str`` keys costs ~100 MB of private memory in every gateway replica, most of the 150 MB
per-replica budget on its own. :class:`TermIndex` keeps the terms' hashes sorted in one array,
the columns in the same order, and the UTF-8 terms back to back (to confirm a hash match, so a
lookup is exact, never probabilistic): 24 bytes per term plus the term itself.

The hashes are Python's own ``hash(str)``: computed in C and cached on each token, but salted
per process, so the index is built at load and never stored. A lookup hashes the prompt's
tokens, finds them with one ``searchsorted`` and confirms each hit against the stored bytes.
It is slower per token than a dict, so :class:`Classifier` uses it only for vocabularies of at
least ``COMPACT_MIN_TERMS`` terms.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

__all__ = ["COMPACT_MIN_TERMS", "TermIndex"]

# Below this a dict costs < ~25 MB and is faster; above it the index saves memory.
COMPACT_MIN_TERMS = 200_000


def _hashes(terms: Sequence[str]) -> NDArray[np.int64]:
    return np.fromiter(map(hash, terms), dtype=np.int64, count=len(terms))


class TermIndex:
    """An exact, read-only term → column lookup held in numpy arrays and one bytes object."""

    def __init__(self, terms: Mapping[str, int]) -> None:
        keys = list(terms)
        hashes = _hashes(keys)
        order = np.argsort(hashes, kind="stable")
        columns = np.fromiter(terms.values(), dtype=np.int64, count=len(keys))
        self._hashes = hashes[order]
        self._columns = columns[order]
        encoded = [keys[i].encode("utf-8") for i in order.tolist()]
        lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
        self._offsets = np.concatenate(([0], np.cumsum(lengths)))
        self._blob = b"".join(encoded)

    def __len__(self) -> int:
        return int(self._hashes.shape[0])

    @property
    def nbytes(self) -> int:
        """Memory held by the index."""
        arrays = (self._hashes, self._columns, self._offsets)
        return sum(int(a.nbytes) for a in arrays) + len(self._blob)

    def columns(self, tokens: Sequence[str]) -> list[int]:
        """Columns of the tokens found in the vocabulary, in token order (with repeats)."""
        if not tokens or not len(self):
            return []
        wanted = _hashes(tokens)
        positions = np.searchsorted(self._hashes, wanted)
        np.minimum(positions, len(self) - 1, out=positions)
        hits = np.flatnonzero(self._hashes[positions] == wanted)
        if not hits.size:
            return []
        spots = positions[hits]
        starts = self._offsets[spots].tolist()
        ends = self._offsets[spots + 1].tolist()
        columns = self._columns[spots].tolist()
        blob = self._blob
        result: list[int] = []
        for i, spot, start, end, column in zip(
            hits.tolist(), spots.tolist(), starts, ends, columns, strict=True
        ):
            encoded = tokens[i].encode("utf-8")
            if blob[start:end] == encoded:
                result.append(column)
                continue
            other = self._after_collision(spot, encoded)
            if other is not None:
                result.append(other)
        return result

    def _after_collision(self, spot: int, encoded: bytes) -> int | None:
        """The column of ``encoded`` among the terms after ``spot`` with the same hash."""
        hash_value = self._hashes[spot]
        position = spot + 1
        while position < len(self) and self._hashes[position] == hash_value:
            start, end = int(self._offsets[position]), int(self._offsets[position + 1])
            if self._blob[start:end] == encoded:
                return int(self._columns[position])
            position += 1
        return None
