"""Synthetic topic corpora for tests, benchmarks and demos (numpy RNG, no downloads).

Each topic has its own vocabulary of pseudo-words; paragraphs mix topic words with shared
words, English stop words, numbers, punctuation, mixed case and non-ASCII letters. A fraction
of prompts are edge cases: empty, whitespace, stop words only, numbers only, one-letter
tokens, Unicode digits. The same arguments always give the same corpus.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_CONSONANTS = [*"bcdfghjklmnprstvwz", "ch", "sh", "th", "qu", "ß", "ж", "ñ"]
_VOWELS = [*"aeiou", "é", "ø", "ü", "ai", "ou", "東"]
_STOP_SAMPLE = tuple(
    [
        "the",
        "of",
        "and",
        "to",
        "in",
        "is",
        "it",
        "that",
        "for",
        "on",
        "with",
        "as",
        "was",
        "at",
        "by",
        "an",
        "be",
        "this",
        "are",
    ]
)
_EDGE_CASES = (
    "",
    "   ",
    "the of and to in is it that",
    "12 3.5 2024-05-01 7th 42",
    "a b c d e x y z",
    "THE NUMBER 7 AND THE",
    "٣٤ ²x ½ 1st",
    "🙂 👍 … — ok?",
    "Ünïcödé ÇAFÉ naïve façade",
)
EMPTY_LABEL = "none"


@dataclass(frozen=True)
class LabelledText:
    """One prompt and the topic it was drawn from (``none`` for edge cases)."""

    text: str
    label: str


def pseudo_words(rng: np.random.Generator, count: int, taken: set[str]) -> list[str]:
    """``count`` new distinct pseudo-words (2–4 syllables) not already in ``taken``."""
    words: list[str] = []
    while len(words) < count:
        n_syllables = int(rng.integers(2, 5))
        word = "".join(
            str(rng.choice(_CONSONANTS)) + str(rng.choice(_VOWELS)) for _ in range(n_syllables)
        )
        if word not in taken:
            taken.add(word)
            words.append(word)
    return words


def topic_corpus(
    n_texts: int,
    *,
    n_topics: int = 6,
    words_per_topic: int = 400,
    shared_words: int = 300,
    edge_fraction: float = 0.02,
    words_per_text: tuple[int, int] = (30, 110),
    seed: int = 0,
) -> list[LabelledText]:
    """Generate ``n_texts`` labelled paragraphs from ``n_topics`` distinct vocabularies."""
    rng = np.random.default_rng(seed)
    taken: set[str] = set()
    topics = [pseudo_words(rng, words_per_topic, taken) for _ in range(n_topics)]
    shared = pseudo_words(rng, shared_words, taken)
    corpus: list[LabelledText] = []
    for _ in range(n_texts):
        if rng.random() < edge_fraction:
            corpus.append(LabelledText(str(rng.choice(_EDGE_CASES)), EMPTY_LABEL))
            continue
        topic = int(rng.integers(n_topics))
        corpus.append(
            LabelledText(_paragraph(rng, topics[topic], shared, words_per_text), f"topic-{topic}")
        )
    return corpus


def _paragraph(
    rng: np.random.Generator, topic: list[str], shared: list[str], length: tuple[int, int]
) -> str:
    # Zipf-like choice inside the topic, so some words are frequent, as in real text.
    n_words = int(rng.integers(length[0], length[1] + 1))
    kinds = rng.random(n_words)
    ranks = np.minimum(rng.zipf(1.3, n_words) - 1, len(topic) - 1)
    words: list[str] = []
    for i in range(n_words):
        kind = kinds[i]
        if kind < 0.6:
            word = topic[int(ranks[i])]
        elif kind < 0.78:
            word = shared[int(rng.integers(len(shared)))]
        elif kind < 0.93:
            word = _STOP_SAMPLE[int(rng.integers(len(_STOP_SAMPLE)))]
        else:
            word = str(int(rng.integers(0, 10_000)))
        if rng.random() < 0.08:
            word = word.capitalize()
        if rng.random() < 0.1:
            word += str(rng.choice([",", ".", ";", "!", "?", ":"]))
        words.append(word)
    return " ".join(words)
