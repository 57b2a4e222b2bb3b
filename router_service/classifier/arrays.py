"""A fitted router as plain arrays + JSON on disk: save, load, validate, content hash.

Directory layout (nothing here is ever unpickled; ``np.load(allow_pickle=False)``)::

    router.json        format, settings, array manifest, content hash, provenance
    vocabulary.json    term -> column index (JSON object, ASCII-escaped)
    idf.npy            (V,)    float64   smoothed IDF of each column
    projection.npy     (V, d)  float64   TruncatedSVD ``components_`` transposed (a term's row
                                         is contiguous, which is what serving gathers);
                                         float32 after an explicit conversion (see below)
    centroids.npy      (k, d)  float64   k-means centres in the scaled space
    scaler_mean.npy    (d,)    float64   only for the ``standard`` scaler
    scaler_scale.npy   (d,)    float64   only for the ``standard`` scaler

Everything is float64 by default because that is what scikit-learn computes in, which is what
gives identical cluster ids to the reference pipeline. The projection alone may be float32:
with c-BTM's unbounded vocabulary (V near 1M) it is V × 100 × 8 bytes ≈ 800 MB per process in
float64, 400 MB in float32, and with ``load(mmap=True)`` its pages come from the page cache,
shared by every replica on the host, and only the rows of terms actually seen are read. That is
an explicit choice (:meth:`RouterArrays.with_projection_dtype`,
``python -m router_service.classifier.convert``): a prompt whose two nearest centroids are
nearly tied can change cluster (scripts/bench_classifier.py ``--synthetic-vocab`` measures how
often). The dtype is part of the settings, so the content hash says which one is served.

The content hash covers the settings, the vocabulary and every array as stored (not the
provenance, which does not change routing), so two routers with the same hash route every
prompt the same way.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import mmap
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
from numpy.typing import NDArray

from router_service.classifier.errors import ClassifierError
from router_service.classifier.text import TextSettings

ScalerKind = Literal["l2_normalizer", "standard"]
SCALER_KINDS: tuple[ScalerKind, ...] = ("l2_normalizer", "standard")
FORMAT_NAME = "expert-deploy-router"
FORMAT_VERSION = 1
METADATA_FILE = "router.json"
VOCABULARY_FILE = "vocabulary.json"
FloatArray = NDArray[np.float64]
#: The projection's storage: float64 (exact sklearn parity) or float32 (half the memory).
ProjectionArray = NDArray[np.float64] | NDArray[np.float32]
PROJECTION_DTYPES = ("float64", "float32")
# Finiteness is checked in row blocks so a memory-mapped projection is never copied whole.
_CHECK_ROWS = 65_536


@dataclass(frozen=True, eq=False)
class RouterArrays:
    """Everything a :class:`Classifier` needs, as validated float64 arrays.

    ``projection`` is ``svd.components_.T`` (V × d). ``scaler_mean``/``scaler_scale`` are set
    only for the ``standard`` scaler. ``provenance`` (library versions, source hashes, fit
    parameters) is recorded but not part of the content hash.
    """

    vocabulary: Mapping[str, int]
    idf: FloatArray
    projection: ProjectionArray
    centroids: FloatArray
    scaler: ScalerKind
    text: TextSettings
    scaler_mean: FloatArray | None = None
    scaler_scale: FloatArray | None = None
    provenance: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def k(self) -> int:
        """Number of clusters."""
        return int(self.centroids.shape[0])

    @property
    def dims(self) -> int:
        """Dimension of the SVD space."""
        return int(self.projection.shape[1])

    @property
    def vocab_size(self) -> int:
        """Number of TF-IDF columns."""
        return int(self.idf.shape[0])

    def settings_json(self) -> dict[str, Any]:
        """The hashed settings: analyser, scaler kind and array shapes."""
        return {
            "text": self.text.to_json(),
            "scaler": self.scaler,
            "k": self.k,
            "dims": self.dims,
            "vocab_size": self.vocab_size,
            "arrays": {
                name: {"shape": list(array.shape), "dtype": array.dtype.str}
                for name, array in self.named_arrays().items()
            },
        }

    def with_projection_dtype(self, dtype: str) -> RouterArrays:
        """A copy whose projection is stored as ``dtype`` (``float32`` or ``float64``).

        float32 halves the largest array; assignments may differ from scikit-learn for prompts
        whose nearest centroids are nearly tied. Raises ClassifierError for another dtype.
        """
        if dtype not in PROJECTION_DTYPES:
            raise ClassifierError(
                f"projection dtype {dtype!r} is not supported; use one of {PROJECTION_DTYPES}"
            )
        if self.projection.dtype == np.dtype(dtype):
            return self
        projection = np.ascontiguousarray(self.projection, dtype=np.dtype(dtype))
        return dataclasses.replace(self, projection=projection)

    def named_arrays(self) -> dict[str, ProjectionArray]:
        """Arrays by file stem, in the fixed order the content hash reads them."""
        arrays: dict[str, ProjectionArray] = {
            "idf": self.idf,
            "projection": self.projection,
            "centroids": self.centroids,
        }
        if self.scaler_mean is not None and self.scaler_scale is not None:
            arrays["scaler_mean"] = self.scaler_mean
            arrays["scaler_scale"] = self.scaler_scale
        return arrays

    @functools.cached_property
    def content_hash(self) -> str:
        """``sha256:<hex>`` over settings, vocabulary and arrays, computed once per instance."""
        # Once: hashing an 800 MB projection again costs seconds and pulls every mapped page
        # back into the process.
        return _content_hash(self.settings_json(), _vocabulary_bytes(self.vocabulary), self)

    def save(self, directory: Path) -> str:
        """Write the artifact into ``directory`` (created if needed); return the content hash.

        Raises:
            ClassifierError: the directory cannot be written.
        """
        content_hash = self.content_hash
        metadata = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "content_hash": content_hash,
            "settings": self.settings_json(),
            "provenance": dict(self.provenance),
        }
        try:
            directory.mkdir(parents=True, exist_ok=True)
            for name, array in self.named_arrays().items():
                np.save(directory / f"{name}.npy", array, allow_pickle=False)
            (directory / VOCABULARY_FILE).write_bytes(_vocabulary_bytes(self.vocabulary))
            # Metadata last: a directory with router.json is complete.
            (directory / METADATA_FILE).write_text(json.dumps(metadata, indent=2, sort_keys=True))
        except OSError as error:
            raise ClassifierError(f"cannot write router to {directory}: {error}") from error
        return content_hash

    @classmethod
    def load(cls, directory: Path, *, mmap: bool = False) -> RouterArrays:
        """Read and fully validate an artifact written by :meth:`save`.

        With ``mmap`` the arrays are memory-mapped read-only instead of read into private
        memory: replicas on one host then share the page cache, and pages of terms never seen
        are only read once, by the content-hash check at load.

        Raises:
            ClassifierError: a file is missing, unreadable, of the wrong shape or dtype, or the
                recomputed content hash differs from the recorded one.
        """
        metadata = _read_json(directory / METADATA_FILE)
        if not isinstance(metadata, dict) or metadata.get("format") != FORMAT_NAME:
            raise ClassifierError(f"{directory / METADATA_FILE} is not an expert-deploy router")
        if metadata.get("format_version") != FORMAT_VERSION:
            raise ClassifierError(
                f"{directory}: router format version {metadata.get('format_version')!r} is not "
                f"supported (expected {FORMAT_VERSION}); re-create it with this version"
            )
        settings = metadata.get("settings")
        if not isinstance(settings, dict):
            raise ClassifierError(f"{directory / METADATA_FILE}: 'settings' must be an object")
        vocab_bytes = _read_bytes(directory / VOCABULARY_FILE)
        vocabulary = _parse_vocabulary(vocab_bytes, directory / VOCABULARY_FILE)
        manifest = settings.get("arrays")
        if not isinstance(manifest, dict):
            raise ClassifierError(f"{directory / METADATA_FILE}: 'settings.arrays' is missing")
        arrays = {
            name: _load_array(directory, name, spec, mmap=mmap) for name, spec in manifest.items()
        }
        scaler = settings.get("scaler")
        if scaler not in SCALER_KINDS:
            raise ClassifierError(f"{directory}: unknown scaler {scaler!r}")
        try:
            loaded = cls(
                vocabulary=vocabulary,
                idf=cast(FloatArray, arrays["idf"]),
                projection=arrays["projection"],
                centroids=cast(FloatArray, arrays["centroids"]),
                scaler=cast(ScalerKind, scaler),
                text=TextSettings.from_json(settings.get("text") or {}),
                scaler_mean=cast("FloatArray | None", arrays.get("scaler_mean")),
                scaler_scale=cast("FloatArray | None", arrays.get("scaler_scale")),
                provenance=metadata.get("provenance") or {},
            )
        except KeyError as error:
            raise ClassifierError(f"{directory}: array {error} is not listed") from error
        except ClassifierError as error:
            raise ClassifierError(f"{directory}: {error}") from error
        if loaded.settings_json() != settings:
            raise ClassifierError(
                f"{directory}: router.json settings do not match the arrays; re-create the router"
            )
        recorded = metadata.get("content_hash")
        actual = _content_hash(settings, vocab_bytes, loaded)
        if recorded != actual:
            raise ClassifierError(
                f"{directory}: content hash mismatch (recorded {recorded}, files give {actual}); "
                "the artifact was modified or is incomplete: copy or re-create it"
            )
        # Equal to what the property computes: the recorded hash was made from canonical bytes.
        loaded.__dict__["content_hash"] = actual
        if mmap:
            for array in arrays.values():
                _release_mapped_pages(array)
        return loaded


def _release_mapped_pages(array: ProjectionArray) -> None:
    """Drop the pages the hash check read from this process's resident set.

    They stay in the page cache (shared with every replica mapping the file), so serving reads
    them back without disk I/O; only the rows of terms that prompts contain come back into this
    process. MADV_RANDOM stops read-ahead from pulling whole neighbourhoods of rows per lookup.
    """
    mapping = getattr(array, "_mmap", None)  # numpy.memmap keeps its mmap.mmap here
    if mapping is None or not hasattr(mapping, "madvise"):
        return
    for advice in ("MADV_DONTNEED", "MADV_RANDOM"):
        flag = getattr(mmap, advice, None)
        if flag is not None:
            mapping.madvise(flag)


def _validate(arrays: RouterArrays) -> None:
    """Check shapes, dtypes, finiteness and the vocabulary's index set."""
    vocab_size = len(arrays.vocabulary)
    checks: list[tuple[str, ProjectionArray | None, int, tuple[str, ...]]] = [
        ("idf", arrays.idf, 1, ("float64",)),
        ("projection", arrays.projection, 2, PROJECTION_DTYPES),
        ("centroids", arrays.centroids, 2, ("float64",)),
        ("scaler_mean", arrays.scaler_mean, 1, ("float64",)),
        ("scaler_scale", arrays.scaler_scale, 1, ("float64",)),
    ]
    for name, array, ndim, dtypes in checks:
        if array is None:
            continue
        if (
            not isinstance(array, np.ndarray)
            or array.dtype.name not in dtypes
            or array.ndim != ndim
        ):
            raise ClassifierError(f"array {name} must be a {ndim}-d {' or '.join(dtypes)} array")
        if not all(
            np.isfinite(array[start : start + _CHECK_ROWS]).all()
            for start in range(0, len(array), _CHECK_ROWS)
        ):
            raise ClassifierError(f"array {name} contains NaN or infinity")
    if arrays.idf.shape != (vocab_size,) or arrays.projection.shape[0] != vocab_size:
        raise ClassifierError(
            f"vocabulary has {vocab_size} terms but idf has shape {arrays.idf.shape} and "
            f"projection {arrays.projection.shape}"
        )
    dims = arrays.projection.shape[1]
    if arrays.centroids.shape[1] != dims or arrays.centroids.shape[0] < 1:
        raise ClassifierError(
            f"centroids have shape {arrays.centroids.shape}; expected (k, {dims}) with k >= 1"
        )
    is_standard = arrays.scaler == "standard"
    has_params = arrays.scaler_mean is not None and arrays.scaler_scale is not None
    if is_standard != has_params or (is_standard and arrays.scaler_mean is None):
        raise ClassifierError(
            "scaler_mean and scaler_scale are required for, and only for, the standard scaler"
        )
    for name, array in (("scaler_mean", arrays.scaler_mean), ("scaler_scale", arrays.scaler_scale)):
        if array is not None and array.shape != (dims,):
            raise ClassifierError(f"array {name} has shape {array.shape}; expected ({dims},)")
    if arrays.scaler_scale is not None and (arrays.scaler_scale == 0).any():
        raise ClassifierError("array scaler_scale contains zeros")
    indices = sorted(arrays.vocabulary.values())
    if indices != list(range(vocab_size)):
        raise ClassifierError("vocabulary indices must be exactly 0..V-1, each once")


def _vocabulary_bytes(vocabulary: Mapping[str, int]) -> bytes:
    """Canonical JSON (sorted keys, ASCII escapes) so the bytes and the hash are stable."""
    return json.dumps(dict(vocabulary), sort_keys=True, ensure_ascii=True).encode("ascii")


def _content_hash(settings: Mapping[str, Any], vocab_bytes: bytes, arrays: RouterArrays) -> str:
    digest = hashlib.sha256()
    digest.update(f"{FORMAT_NAME}/{FORMAT_VERSION}\n".encode())
    digest.update(json.dumps(settings, sort_keys=True, separators=(",", ":")).encode())
    digest.update(hashlib.sha256(vocab_bytes).digest())
    for name, array in arrays.named_arrays().items():
        digest.update(f"\n{name}:{array.dtype.str}:{array.shape}\n".encode())
        # A buffer view of the stored little-endian bytes, not tobytes(): hashing must not
        # double the peak memory of a load (float64 arrays hash exactly as before float32).
        digest.update(np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).data)
    return f"sha256:{digest.hexdigest()}"


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError as error:
        raise ClassifierError(
            f"{path} is missing; point --router at a directory made by `expert-deploy router fit`"
        ) from error
    except OSError as error:
        raise ClassifierError(f"cannot read {path}: {error}") from error


def _read_json(path: Path) -> Any:
    try:
        return json.loads(_read_bytes(path))
    except (ValueError, UnicodeDecodeError) as error:
        raise ClassifierError(f"{path} is not valid JSON ({error}); re-create it") from error


def _parse_vocabulary(data: bytes, path: Path) -> dict[str, int]:
    try:
        vocabulary = json.loads(data)
    except (ValueError, UnicodeDecodeError) as error:
        raise ClassifierError(f"{path} is not valid JSON ({error}); re-create it") from error
    if not isinstance(vocabulary, dict) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in vocabulary.values()
    ):
        raise ClassifierError(f"{path} must be a JSON object mapping each term to an integer")
    return vocabulary


def _load_array(directory: Path, name: str, spec: Any, *, mmap: bool) -> ProjectionArray:
    if name not in ("idf", "projection", "centroids", "scaler_mean", "scaler_scale"):
        raise ClassifierError(f"{directory}: unexpected array {name!r} in router.json")
    path = directory / f"{name}.npy"
    try:
        array = np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
    except FileNotFoundError as error:
        raise ClassifierError(f"{path} is missing; copy the whole router directory") from error
    except (OSError, ValueError) as error:
        raise ClassifierError(f"{path} is not a readable .npy array ({error})") from error
    shape = spec.get("shape") if isinstance(spec, dict) else None
    dtype = spec.get("dtype") if isinstance(spec, dict) else None
    if list(array.shape) != shape or array.dtype.str != dtype:
        raise ClassifierError(
            f"{path} has shape {list(array.shape)} and dtype {array.dtype.str}; router.json "
            f"says {shape} and {dtype}: the artifact is inconsistent, re-create it"
        )
    if math.prod(array.shape) and not array.flags.c_contiguous:
        array = np.ascontiguousarray(array)
    return cast(ProjectionArray, array)
