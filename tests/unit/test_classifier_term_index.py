"""TermIndex: an exact term → column lookup, even when hashes collide."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray

from router_service.classifier import term_index
from router_service.classifier.term_index import TermIndex

VOCABULARY = {"galaxy": 0, "orbit": 3, "naïve": 1, "東京": 2, "x" * 300: 4}


def test_lookup_keeps_token_order_and_repeats_and_skips_unknown_tokens() -> None:
    index = TermIndex(VOCABULARY)
    tokens = ["orbit", "unknown", "galaxy", "orbit", "東京", "naive", "naïve", "x" * 300, "x"]
    assert index.columns(tokens) == [3, 0, 3, 2, 1, 4]
    assert index.columns([]) == []
    assert len(index) == 5
    assert TermIndex({}).columns(["galaxy"]) == []


def test_colliding_digests_are_told_apart_by_the_stored_bytes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def first_letter_hash(terms: list[str]) -> NDArray[np.int64]:
        # Every term starting with the same letter collides: the byte comparison must decide.
        return np.array([ord(term[0]) if term else 0 for term in terms], dtype=np.int64)

    monkeypatch.setattr(term_index, "_hashes", first_letter_hash)
    index = TermIndex({"apple": 0, "apricot": 1, "avocado": 2, "banana": 3})
    assert index.columns(["avocado", "apple", "apricot", "axe", "banana", "berry"]) == [2, 0, 1, 3]


def test_index_is_far_smaller_than_a_dict_of_the_same_terms() -> None:
    terms = {f"term{i:07d}": i for i in range(50_000)}
    index = TermIndex(terms)
    assert index.columns(["term0049999", "term0000000", "term9999999"]) == [49_999, 0]
    # Per term: hash, column and offset (8 bytes each) plus the 11 UTF-8 bytes; a dict of
    # the same str keys takes over 100 bytes per term.
    assert index.nbytes == (8 + 8 + 8 + 11) * len(terms) + 8
