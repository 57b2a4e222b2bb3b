"""The float32 projection and memory-mapped loading (for c-BTM vocabularies near 1M terms)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from router_service.classifier import Classifier, ClassifierError, RouterArrays
from router_service.classifier.convert import convert_projection, main
from router_service.classifier.fit import fit_router
from router_service.classifier.synthetic import topic_corpus
from router_service.config import GatewayConfig


@pytest.fixture(scope="module")
def corpus() -> tuple[list[str], list[str]]:
    texts = [item.text for item in topic_corpus(2_400, n_topics=6, seed=5)]
    return texts[:800], texts[800:]


@pytest.fixture(scope="module", params=["l2_normalizer", "standard"])
def float64_dir(
    request: pytest.FixtureRequest,
    corpus: tuple[list[str], list[str]],
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    directory = tmp_path_factory.mktemp("router64")
    fit_router(corpus[0], k=6, scaler=request.param, seed=3).save(directory)
    return directory


def test_float32_conversion_routes_like_float64(
    float64_dir: Path, corpus: tuple[list[str], list[str]], tmp_path: Path
) -> None:
    before = RouterArrays.load(float64_dir).content_hash

    new_hash = convert_projection(float64_dir, tmp_path / "r32", dtype="float32")

    wide = Classifier.load(float64_dir)
    narrow = Classifier.load(tmp_path / "r32", mmap=True)
    assert narrow.projection.dtype == np.float32
    assert isinstance(narrow.projection, np.memmap)
    assert new_hash == narrow.content_hash != wide.content_hash
    assert RouterArrays.load(float64_dir).content_hash == before  # source untouched
    held_out = corpus[1]
    ours, reference = narrow.predict_many(held_out), wide.predict_many(held_out)
    same = sum(a.cluster == b.cluster for a, b in zip(ours, reference, strict=True))
    assert same == len(held_out)  # no near-tie in this corpus; the 1M-term bench counts flips
    np.testing.assert_allclose(
        [p.distances for p in ours], [p.distances for p in reference], rtol=1e-5, atol=1e-6
    )
    assert [narrow.predict(t).cluster for t in held_out[:50]] == [p.cluster for p in ours[:50]]
    provenance = RouterArrays.load(tmp_path / "r32").provenance["projection_converted"]
    assert provenance == {
        "from_content_hash": before,
        "from_dtype": "float64",
        "to_dtype": "float32",
    }


def test_mmap_load_gives_the_same_answers_and_still_checks_the_hash(
    float64_dir: Path, corpus: tuple[list[str], list[str]], tmp_path: Path
) -> None:
    mapped = Classifier.load(float64_dir, mmap=True)
    assert isinstance(mapped.projection, np.memmap)
    assert not mapped.projection.flags.writeable
    assert mapped.predict_many(corpus[1]) == Classifier.load(float64_dir).predict_many(corpus[1])

    convert_projection(float64_dir, tmp_path / "r32", dtype="float32")
    path = tmp_path / "r32" / "projection.npy"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x01  # one bit of one float32 component
    path.write_bytes(bytes(data))
    with pytest.raises(ClassifierError, match="content hash mismatch"):
        Classifier.load(tmp_path / "r32", mmap=True)


def test_round_trip_to_float64_restores_the_original_hash(
    float64_dir: Path, tmp_path: Path
) -> None:
    arrays = RouterArrays.load(float64_dir)
    assert arrays.with_projection_dtype("float64") is arrays
    convert_projection(float64_dir, tmp_path / "r32", dtype="float32")
    back = convert_projection(tmp_path / "r32", tmp_path / "r64", dtype="float64")
    # float32 rounding is not undone, so the projection (and the hash) differ from the source.
    assert back != arrays.content_hash
    assert RouterArrays.load(tmp_path / "r64").projection.dtype == np.float64


def test_bad_conversions_are_one_line_errors(
    float64_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ClassifierError, match="projection dtype 'float16' is not supported"):
        RouterArrays.load(float64_dir).with_projection_dtype("float16")
    with pytest.raises(ClassifierError, match="is the source"):
        convert_projection(float64_dir, float64_dir, dtype="float32")

    assert main([str(tmp_path / "missing"), str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()

    assert main([str(float64_dir), str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "projection float32" in out and Classifier.load(tmp_path / "out").content_hash in out
    with pytest.raises(ClassifierError, match="already holds a router"):
        convert_projection(float64_dir, tmp_path / "out", dtype="float32")


def test_float16_arrays_are_refused_at_load(float64_dir: Path, tmp_path: Path) -> None:
    arrays = RouterArrays.load(float64_dir)
    with pytest.raises(ClassifierError, match="projection must be a 2-d float64 or float32"):
        RouterArrays(
            vocabulary=arrays.vocabulary,
            idf=arrays.idf,
            projection=arrays.projection.astype(np.float16),  # type: ignore[arg-type]
            centroids=arrays.centroids,
            scaler=arrays.scaler,
            text=arrays.text,
            scaler_mean=arrays.scaler_mean,
            scaler_scale=arrays.scaler_scale,
        )
    with pytest.raises(ClassifierError, match="idf must be a 1-d float64 array"):
        RouterArrays(
            vocabulary=arrays.vocabulary,
            idf=arrays.idf.astype(np.float32),  # type: ignore[arg-type]
            projection=arrays.projection,
            centroids=arrays.centroids,
            scaler=arrays.scaler,
            text=arrays.text,
            scaler_mean=arrays.scaler_mean,
            scaler_scale=arrays.scaler_scale,
        )


def test_gateway_config_option_for_mmap(tmp_path: Path) -> None:
    base = {
        "router_dir": str(tmp_path),
        "routing": {"generation": 1, "experts": [
            {"id": "e0", "clusters": [0], "upstreams": [{"grpc_port": 9}]}]},
    }  # fmt: skip
    assert GatewayConfig.model_validate(base).classifier.mmap is False
    assert GatewayConfig.model_validate({**base, "classifier": {"mmap": True}}).classifier.mmap
