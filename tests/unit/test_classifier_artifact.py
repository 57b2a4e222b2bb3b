"""Saving and loading router artifacts: exact round trip, and a clear error on any damage."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from router_service.classifier import Classifier, ClassifierError, RouterArrays
from router_service.classifier.fit import fit_router
from router_service.classifier.synthetic import topic_corpus


@pytest.fixture(scope="module", params=["l2_normalizer", "standard"])
def arrays(request: pytest.FixtureRequest) -> RouterArrays:
    texts = [item.text for item in topic_corpus(600, n_topics=4, seed=2)]
    return fit_router(texts, k=4, scaler=request.param, seed=1)


@pytest.fixture
def saved(arrays: RouterArrays, tmp_path: Path) -> Path:
    arrays.save(tmp_path / "router")
    return tmp_path / "router"


def test_round_trip_is_exact(arrays: RouterArrays, tmp_path: Path) -> None:
    content_hash = arrays.save(tmp_path / "router")

    loaded = RouterArrays.load(tmp_path / "router")

    assert content_hash == arrays.content_hash == loaded.content_hash
    assert dict(loaded.vocabulary) == dict(arrays.vocabulary)
    assert loaded.text == arrays.text
    assert loaded.scaler == arrays.scaler
    for name, array in arrays.named_arrays().items():
        np.testing.assert_array_equal(loaded.named_arrays()[name], array)
    assert loaded.provenance["corpus_sha256"] == arrays.provenance["corpus_sha256"]
    expected_files = {"router.json", "vocabulary.json", "idf.npy", "projection.npy"}
    assert expected_files <= {p.name for p in (tmp_path / "router").iterdir()}


def test_loaded_classifier_predicts_like_in_memory_one(arrays: RouterArrays, saved: Path) -> None:
    texts = [item.text for item in topic_corpus(300, n_topics=4, seed=9)]
    in_memory = Classifier(arrays)

    loaded = Classifier.load(saved)

    assert loaded.k == arrays.k == 4
    assert loaded.content_hash == arrays.content_hash
    assert loaded.predict_many(texts) == in_memory.predict_many(texts)


def test_metadata_records_settings_and_provenance(saved: Path) -> None:
    metadata = json.loads((saved / "router.json").read_text())

    assert metadata["content_hash"].startswith("sha256:")
    assert metadata["settings"]["text"]["token_pattern"] == r"(?u)\b\w\w+\b"
    assert "#NUMBER" in metadata["settings"]["text"]["stop_words"]
    assert metadata["settings"]["text"]["number_rule"] == "first_char_isdigit"
    assert set(metadata["provenance"]["library_versions"]) >= {"numpy", "scikit-learn"}


Array = np.ndarray[Any, Any]


def _rewrite_array(directory: Path, name: str, change: Callable[[Array], Array]) -> None:
    array = np.load(directory / f"{name}.npy")
    np.save(directory / f"{name}.npy", change(array))


def _edit_one_value(array: Array) -> Array:
    edited = array.copy()
    edited.flat[0] += 1e-6
    return edited


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: _rewrite_array(d, "projection", _edit_one_value), "content hash mismatch"),
        (lambda d: _rewrite_array(d, "idf", lambda a: a[:-1]), "shape"),
        (lambda d: _rewrite_array(d, "centroids", lambda a: a.astype(np.float32)), "dtype"),
        (lambda d: (d / "idf.npy").unlink(), "idf.npy is missing"),
        (lambda d: (d / "vocabulary.json").unlink(), "vocabulary.json is missing"),
        (lambda d: (d / "router.json").unlink(), "router.json is missing"),
        (lambda d: (d / "router.json").write_text("{not json"), "not valid JSON"),
        (lambda d: (d / "idf.npy").write_bytes(b"garbage"), "not a readable .npy"),
        (
            lambda d: np.save(d / "idf.npy", np.array([{}], dtype=object), allow_pickle=True),
            "not a readable .npy",
        ),
    ],
    ids=[
        "edited-array",
        "wrong-shape",
        "wrong-dtype",
        "missing-array",
        "missing-vocabulary",
        "missing-metadata",
        "bad-json",
        "not-npy",
        "pickled-object-array",
    ],
)
def test_damaged_artifact_raises_classifier_error(
    saved: Path, damage: Callable[[Path], object], message: str
) -> None:
    damage(saved)

    with pytest.raises(ClassifierError, match=message):
        Classifier.load(saved)


def _edit_metadata(directory: Path, edit: Callable[[dict[str, Any]], object]) -> None:
    metadata = json.loads((directory / "router.json").read_text())
    edit(metadata)
    (directory / "router.json").write_text(json.dumps(metadata))


def test_recorded_hash_mismatch_is_detected(saved: Path) -> None:
    _edit_metadata(saved, lambda m: m.update(content_hash="sha256:" + "0" * 64))

    with pytest.raises(ClassifierError, match="content hash mismatch"):
        Classifier.load(saved)


def test_swapped_vocabulary_indices_are_detected(saved: Path) -> None:
    vocabulary = json.loads((saved / "vocabulary.json").read_text())
    first, second = sorted(vocabulary)[:2]
    vocabulary[first], vocabulary[second] = vocabulary[second], vocabulary[first]
    (saved / "vocabulary.json").write_text(json.dumps(vocabulary, sort_keys=True))

    with pytest.raises(ClassifierError, match="content hash mismatch"):
        Classifier.load(saved)


def test_changed_setting_is_detected(saved: Path) -> None:
    _edit_metadata(saved, lambda m: m["settings"]["text"].update(lowercase=False))

    with pytest.raises(ClassifierError, match="content hash mismatch"):
        Classifier.load(saved)


def test_unknown_format_version_is_rejected(saved: Path) -> None:
    _edit_metadata(saved, lambda m: m.update(format_version=99))

    with pytest.raises(ClassifierError, match="format version 99"):
        Classifier.load(saved)


def test_not_a_directory_of_a_router(tmp_path: Path) -> None:
    with pytest.raises(ClassifierError, match=r"router\.json is missing"):
        Classifier.load(tmp_path / "nowhere")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"idf": np.array([np.nan])}, "NaN"),
        ({"centroids": np.zeros((2, 3), dtype=np.float32)}, "float64"),
        ({"vocabulary": {"alpha": 0}}, "vocabulary has 1 terms"),
        ({"scaler": "standard", "scaler_mean": None, "scaler_scale": None}, "scaler_mean"),
    ],
)
def test_inconsistent_arrays_are_rejected_on_construction(
    arrays: RouterArrays, change: dict[str, object], message: str
) -> None:
    with pytest.raises(ClassifierError, match=message):
        replace(arrays, **change)  # type: ignore[arg-type]
