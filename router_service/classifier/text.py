"""How prompt text becomes terms: the c-BTM analyser settings, as plain data.

c-BTM (kernelmachine/cbtm ``metaseq/scripts/train_clusterer.py``) uses sklearn's
``TfidfVectorizer`` defaults plus two changes: the English stop words extended with the literal
``#NUMBER``, and a tokenizer that turns every token whose first character ``isdigit()`` into
``#NUMBER``. Because the placeholder is itself a stop word, numeric tokens are dropped. This
module holds those settings in a JSON-friendly form so serving needs no scikit-learn.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from router_service.classifier.errors import ClassifierError

NUMBER_PLACEHOLDER = "#NUMBER"
SKLEARN_WORD_PATTERN = r"(?u)\b\w\w+\b"
NUMBER_RULE = "first_char_isdigit"


@dataclass(frozen=True)
class TextSettings:
    """The analyser: lower-case, regex tokens, numbers to a placeholder, stop words dropped."""

    token_pattern: str
    lowercase: bool
    stop_words: frozenset[str]
    number_placeholder: str = NUMBER_PLACEHOLDER

    def __post_init__(self) -> None:
        try:
            re.compile(self.token_pattern)
        except re.error as error:
            raise ClassifierError(
                f"token pattern {self.token_pattern!r} is not a valid regex ({error}); "
                "re-create the router artifact"
            ) from error
        if self.number_placeholder not in self.stop_words:
            # The fast path relies on numeric tokens being dropped, which c-BTM guarantees by
            # listing the placeholder as a stop word; any other setup is not c-BTM.
            raise ClassifierError(
                f"the number placeholder {self.number_placeholder!r} must be a stop word "
                "(as in c-BTM); re-create the router with `expert-deploy router fit`"
            )

    def analyze(self, text: str) -> list[str]:
        """Terms of ``text`` in order, exactly as the c-BTM vectoriser produces them.

        This is the readable reference; :class:`Classifier` uses an equivalent precomputed
        lookup instead (see :func:`servable_terms`).
        """
        doc = text.lower() if self.lowercase else text
        tokens = re.findall(self.token_pattern, doc)
        normalised = (self.number_placeholder if t[0].isdigit() else t for t in tokens)
        return [t for t in normalised if t not in self.stop_words]

    def to_json(self) -> dict[str, Any]:
        """A JSON object with sorted stop words, so equal settings serialise identically."""
        return {
            "token_pattern": self.token_pattern,
            "lowercase": self.lowercase,
            "stop_words": sorted(self.stop_words),
            "number_placeholder": self.number_placeholder,
            "number_rule": NUMBER_RULE,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TextSettings:
        """Inverse of :meth:`to_json`; raises ClassifierError on anything unexpected."""
        try:
            rule = data["number_rule"]
            pattern = data["token_pattern"]
            lowercase = data["lowercase"]
            stop_words = data["stop_words"]
            placeholder = data["number_placeholder"]
        except (KeyError, TypeError) as error:
            raise ClassifierError(f"text settings lack {error}; re-create the router") from error
        if rule != NUMBER_RULE:
            raise ClassifierError(f"unknown number rule {rule!r}; expected {NUMBER_RULE!r}")
        if not isinstance(pattern, str) or not isinstance(lowercase, bool):
            raise ClassifierError("text settings: token_pattern must be text, lowercase a bool")
        if not isinstance(stop_words, list) or not all(isinstance(w, str) for w in stop_words):
            raise ClassifierError("text settings: stop_words must be a list of strings")
        if not isinstance(placeholder, str):
            raise ClassifierError("text settings: number_placeholder must be text")
        return cls(pattern, lowercase, frozenset(stop_words), placeholder)


def servable_terms(vocabulary: Mapping[str, int], settings: TextSettings) -> dict[str, int]:
    """The vocabulary minus terms the analyser can never emit (stop words, digit-led tokens).

    Looking a raw regex token up in this dict is equivalent to the full analyser followed by
    the vocabulary lookup: a digit-led token would become the placeholder, which is a stop
    word, and stop words are dropped; so neither may count even if a vocabulary lists it.
    """
    servable = {
        term: index
        for term, index in vocabulary.items()
        if term and not term[0].isdigit() and term not in settings.stop_words
    }
    if len(servable) == len(vocabulary) and isinstance(vocabulary, dict):
        # Nothing excluded (the usual case: sklearn never emits such terms): share the dict,
        # which at c-BTM's ~1M terms saves tens of MB per replica.
        return vocabulary
    return servable
