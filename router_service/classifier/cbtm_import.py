"""Convert the published c-BTM pickles (``tfidf.pkl``, ``kmeans.pkl``) into RouterArrays.

Offline only, and only for trusted files: unpickling executes code named in the file. The
unpickler below narrows that risk (it resolves only the modules a c-BTM artifact needs and
refuses anything else) but does not remove it, so the caller is warned every time.

- ``tfidf.pkl`` is an sklearn ``Pipeline`` whose vectoriser class was recorded as
  ``__main__.NumberNormalizingVectorizer`` (c-BTM ran its script as ``__main__``) or
  ``metaseq.scripts.train_clusterer.NumberNormalizingVectorizer``; both map to ours.
- ``kmeans.pkl`` is a ``kmeans_pytorch.KMeans`` (kernelmachine/balanced-kmeans) whose
  ``cluster_centers`` is a torch tensor, possibly saved on CUDA. Its class is never imported:
  its attributes are read into :class:`PickledKMeans`. Tensors need torch; their storages are
  mapped to the CPU. c-BTM writes it with ``pickle.dump``; a file written with ``torch.save``
  (zip archive or the legacy format) is read through ``torch.load`` with the same
  allow-listed unpickler and ``map_location="cpu"``.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import io
import logging
import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.pipeline import Pipeline

from router_service.classifier.arrays import RouterArrays
from router_service.classifier.errors import ClassifierError
from router_service.classifier.fit import (
    NumberNormalizingVectorizer,
    library_versions,
    number_normalizer,
)
from router_service.classifier.sklearn_export import arrays_from_pipeline

logger = logging.getLogger(__name__)

TORCH_INSTALL_HINT = "pip install torch==2.13.0"
TRUST_WARNING = (
    "importing c-BTM pickles executes code stored in those files: only import files from a "
    "source you trust, and check their SHA-256 (recorded in the router's provenance)"
)
_CBTM_MODULES = ("__main__", "metaseq.scripts.train_clusterer")
# Module prefixes a c-BTM pickle legitimately names: estimators, arrays, tensors, containers.
_ALLOWED_PREFIXES = ("sklearn.", "numpy", "scipy.", "torch")
_ALLOWED_NAMES = {
    ("builtins", name) for name in ("set", "frozenset", "slice", "complex", "bytearray", "object")
} | {
    ("copyreg", "_reconstructor"),
    ("collections", "OrderedDict"),
    ("collections", "defaultdict"),
    ("_codecs", "encode"),
}


class PickledKMeans:
    """The attributes of a pickled ``kmeans_pytorch.KMeans``, without running its code."""

    cluster_centers: Any

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Keep the pickled attributes as they are."""
        self.__dict__.update(state)


@dataclass(frozen=True)
class CbtmPickles:
    """What the two pickles hold: the sklearn pipeline and the centres as float64."""

    pipeline: Pipeline
    centroids: np.ndarray[Any, np.dtype[np.float64]]
    tfidf_sha256: str
    kmeans_sha256: str


class _CbtmUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module in _CBTM_MODULES and name == "NumberNormalizingVectorizer":
            return NumberNormalizingVectorizer
        if module in _CBTM_MODULES and name == "number_normalizer":
            return number_normalizer
        package = module.partition(".")[0]
        if package == "kmeans_pytorch" and name == "KMeans":
            return PickledKMeans
        if package == "torch":
            _require_torch(module, name)
            if (module, name) == ("torch.storage", "_load_from_bytes"):
                return _load_storage_on_cpu
            return super().find_class(module, name)
        if module.startswith(_ALLOWED_PREFIXES) or (module, name) in _ALLOWED_NAMES:
            return super().find_class(module, name)
        raise ClassifierError(
            f"the pickle refers to {module}.{name}, which a c-BTM artifact never needs; "
            "refusing to load it (is this the right file?)"
        )


def _require_torch(module: str, name: str) -> None:
    if importlib.util.find_spec("torch") is None:
        raise ClassifierError(
            f"kmeans.pkl holds torch tensors ({module}.{name}); install torch to import it: "
            f"{TORCH_INSTALL_HINT}"
        )


class _CbtmPickleModule:
    """The ``pickle_module`` handed to ``torch.load``: the same allow-list as plain pickles."""

    Unpickler = _CbtmUnpickler

    @staticmethod
    def load(file: Any, **kwargs: Any) -> Any:
        return _CbtmUnpickler(file, **kwargs).load()


# torch.save's legacy format starts with this number, pickled on its own.
_TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_ZIP_MAGIC = b"PK\x03\x04"


def _torch_load(data: bytes) -> Any:
    """Load a torch.save archive or storage on the CPU, through the allow-listed unpickler."""
    torch = importlib.import_module("torch")
    return torch.load(
        io.BytesIO(data),
        map_location="cpu",
        pickle_module=_CbtmPickleModule,
        weights_only=False,  # weights_only refuses kmeans_pytorch.KMeans; the allow-list guards
    )


def _require_torch_for_archive(path: Path) -> None:
    if importlib.util.find_spec("torch") is None:
        raise ClassifierError(
            f"{path} was written with torch.save; install torch to import it: {TORCH_INSTALL_HINT}"
        )


def _load_storage_on_cpu(data: bytes) -> Any:
    """Rebuild a pickled torch storage on the CPU, even if it was saved from a GPU."""
    return _torch_load(data)


def load_cbtm_pickles(tfidf_pkl: Path, kmeans_pkl: Path) -> CbtmPickles:
    """Unpickle both files (trusted files only!) and check their shape.

    Raises:
        ClassifierError: a file is missing or unreadable, needs torch that is not installed,
            names an unexpected class, or does not hold a c-BTM pipeline / k-means object.
    """
    logger.warning(TRUST_WARNING)
    pipeline = _unpickle(tfidf_pkl)
    if not isinstance(pipeline, Pipeline):
        raise ClassifierError(
            f"{tfidf_pkl} holds a {type(pipeline).__name__}, not an sklearn Pipeline"
        )
    kmeans = _unpickle(kmeans_pkl)
    centers = getattr(kmeans, "cluster_centers", None)
    if centers is None:
        raise ClassifierError(f"{kmeans_pkl} holds no cluster_centers; is it c-BTM's kmeans.pkl?")
    if hasattr(centers, "detach"):  # a torch tensor: move to CPU before numpy sees it
        centers = centers.detach().cpu().double().numpy()
    centroids = np.ascontiguousarray(np.asarray(centers, dtype=np.float64))
    if centroids.ndim != 2:
        raise ClassifierError(f"{kmeans_pkl}: cluster_centers has shape {centroids.shape}")
    return CbtmPickles(pipeline, centroids, _sha256(tfidf_pkl), _sha256(kmeans_pkl))


def import_cbtm(tfidf_pkl: Path, kmeans_pkl: Path) -> RouterArrays:
    """Convert c-BTM's pickles into plain router arrays; the pipeline's own scaler wins.

    Raises:
        ClassifierError: see :func:`load_cbtm_pickles`, or the pipeline's steps or the
            centroid dimensions are not what the fast path reproduces.
    """
    loaded = load_cbtm_pickles(tfidf_pkl, kmeans_pkl)
    provenance = {
        "source": "cbtm_import",
        "tfidf_pkl": {"name": tfidf_pkl.name, "sha256": loaded.tfidf_sha256},
        "kmeans_pkl": {"name": kmeans_pkl.name, "sha256": loaded.kmeans_sha256},
        "pickled_sklearn_version": getattr(loaded.pipeline, "_sklearn_version", "unknown"),
        "library_versions": library_versions(),
    }
    return arrays_from_pipeline(loaded.pipeline, loaded.centroids, provenance)


def _unpickle(path: Path) -> Any:
    try:
        data = path.read_bytes()
    except FileNotFoundError as error:
        raise ClassifierError(f"{path} not found; pass the c-BTM file's path") from error
    except OSError as error:
        raise ClassifierError(f"cannot read {path}: {error}") from error
    # sklearn warns when a pickle comes from another version; say so once, in the log.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            is_zip = data[:4] == _ZIP_MAGIC
            value = None if is_zip else _CbtmUnpickler(io.BytesIO(data)).load()
            if is_zip or (type(value) is int and value == _TORCH_LEGACY_MAGIC):
                _require_torch_for_archive(path)
                value = _torch_load(data)
        except ClassifierError:
            raise
        except Exception as error:  # any unpickling failure means "not this kind of file"
            raise ClassifierError(f"cannot unpickle {path}: {error!r}") from error
    for warning in caught:
        logger.warning("%s: %s", path.name, warning.message)
    return value


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
