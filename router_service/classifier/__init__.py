"""The c-BTM prompt classifier: plain arrays on disk, numpy at serve time.

Serving (this package's import never loads scikit-learn)::

    classifier = Classifier.load(Path("router/"))
    prediction = classifier.predict("some prompt")   # Prediction(cluster, distances, is_empty)

Fitting and importing c-BTM pickles live in ``router_service.classifier.fit`` and
``router_service.classifier.cbtm_import``, which import scikit-learn and are offline only.
"""

from __future__ import annotations

from router_service.classifier.arrays import RouterArrays, ScalerKind
from router_service.classifier.errors import ClassifierError
from router_service.classifier.serving import Classifier, Prediction
from router_service.classifier.text import TextSettings

__all__ = [
    "Classifier",
    "ClassifierError",
    "Prediction",
    "RouterArrays",
    "ScalerKind",
    "TextSettings",
]
