"""Importing c-BTM's pickles: test-built pickles of the same shape as the published ones.

The vectoriser below copies c-BTM's ``NumberNormalizingVectorizer`` (kernelmachine/cbtm
``metaseq/scripts/train_clusterer.py``) and is recorded under the module names c-BTM's pickles
carry. ``kmeans.pkl`` uses a stand-in ``kmeans_pytorch.KMeans`` with a float32 numpy array as
``cluster_centers`` (torch is not installed here), so test names say "stand_in".
"""

from __future__ import annotations

import importlib.util
import logging
import pickle
import sys
import types
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction import text as sklearn_text
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import Normalizer, StandardScaler

from expert_deploy.cli import main
from router_service.classifier import Classifier, ClassifierError, RouterArrays
from router_service.classifier.cbtm_import import TRUST_WARNING, import_cbtm, load_cbtm_pickles
from router_service.classifier.fit import reference_transform
from router_service.classifier.synthetic import topic_corpus

K = 5


def number_normalizer(tokens: Iterable[str]) -> Iterable[str]:
    return ("#NUMBER" if token[0].isdigit() else token for token in tokens)


def _build_tokenizer(self: TfidfVectorizer) -> Any:
    tokenize = TfidfVectorizer.build_tokenizer(self)
    return lambda doc: list(number_normalizer(tokenize(doc)))


def _cbtm_vectorizer_class(module: str, monkeypatch: pytest.MonkeyPatch) -> type:
    """c-BTM's class, registered where pickle will look it up under ``module``."""
    cls = type(
        "NumberNormalizingVectorizer",
        (TfidfVectorizer,),
        {"build_tokenizer": _build_tokenizer, "__module__": module},
    )
    if module == "__main__":
        monkeypatch.setattr(sys.modules["__main__"], "NumberNormalizingVectorizer", cls, False)
    else:
        parts = module.split(".")
        for depth in range(1, len(parts) + 1):
            name = ".".join(parts[:depth])
            monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
        sys.modules[module].NumberNormalizingVectorizer = cls  # type: ignore[attr-defined]
    return cls


def _stand_in_kmeans_class(monkeypatch: pytest.MonkeyPatch) -> type:
    module = types.ModuleType("kmeans_pytorch")
    cls = type("KMeans", (), {"__module__": "kmeans_pytorch"})
    module.KMeans = cls  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "kmeans_pytorch", module)
    return cls


def write_cbtm_pickles(
    directory: Path, texts: list[str], *, module: str, scaler: str, monkeypatch: pytest.MonkeyPatch
) -> Pipeline:
    """Fit and pickle a c-BTM-shaped pipeline and a stand-in kmeans; return the pipeline."""
    vectorizer = _cbtm_vectorizer_class(module, monkeypatch)
    stop_words = list(sklearn_text.ENGLISH_STOP_WORDS.union(["#NUMBER"]))
    last = (
        ("normalizer", Normalizer(copy=False)) if scaler == "l2" else ("scaler", StandardScaler())
    )
    pipeline = Pipeline(
        [
            ("tfidf", vectorizer(stop_words=stop_words)),
            ("svd", TruncatedSVD(n_components=100, random_state=0)),
            last,
        ]
    )
    with pytest.warns(UserWarning, match="stop_words may be inconsistent"):
        vectors = pipeline.fit_transform(texts)
    kmeans = _stand_in_kmeans_class(monkeypatch)()
    kmeans.n_clusters = K
    kmeans.device = "cpu"
    kmeans.balanced = False
    # torch k-means trains in float32, so the published centres are float32.
    centers = KMeans(K, random_state=0, n_init=3).fit(vectors).cluster_centers_
    kmeans.cluster_centers = centers.astype(np.float32)
    (directory / "tfidf.pkl").write_bytes(pickle.dumps(pipeline))
    (directory / "kmeans.pkl").write_bytes(pickle.dumps(kmeans))
    return pipeline


@pytest.fixture(scope="module")
def texts() -> tuple[list[str], list[str]]:
    corpus = [item.text for item in topic_corpus(3_400, n_topics=K, seed=21)]
    return corpus[:1_200], corpus[1_200:]


@pytest.mark.parametrize("module", ["__main__", "metaseq.scripts.train_clusterer"])
@pytest.mark.parametrize("scaler", ["l2", "standard"])
def test_import_with_stand_in_kmeans_matches_pickled_pipeline(
    texts: tuple[list[str], list[str]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    module: str,
    scaler: str,
) -> None:
    train, held_out = texts
    write_cbtm_pickles(tmp_path, train, module=module, scaler=scaler, monkeypatch=monkeypatch)

    arrays = import_cbtm(tmp_path / "tfidf.pkl", tmp_path / "kmeans.pkl")

    pickled = load_cbtm_pickles(tmp_path / "tfidf.pkl", tmp_path / "kmeans.pkl")
    vectors = reference_transform(pickled.pipeline, held_out)
    squared = ((vectors[:, None, :] - pickled.centroids[None, :, :]) ** 2).sum(axis=2)
    classifier = Classifier(arrays)
    ours = [classifier.predict(text) for text in held_out]
    assert [p.cluster for p in ours] == squared.argmin(axis=1).tolist()
    np.testing.assert_allclose([p.distances for p in ours], squared, rtol=1e-9, atol=1e-9)
    assert arrays.scaler == ("l2_normalizer" if scaler == "l2" else "standard")
    assert arrays.k == K
    assert arrays.provenance["source"] == "cbtm_import"
    assert len(arrays.provenance["tfidf_pkl"]["sha256"]) == 64


def test_imported_router_survives_save_and_load(
    texts: tuple[list[str], list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    train, held_out = texts
    write_cbtm_pickles(tmp_path, train, module="__main__", scaler="l2", monkeypatch=monkeypatch)
    arrays = import_cbtm(tmp_path / "tfidf.pkl", tmp_path / "kmeans.pkl")

    arrays.save(tmp_path / "router")

    loaded = Classifier.load(tmp_path / "router")
    assert loaded.predict_many(held_out[:200]) == Classifier(arrays).predict_many(held_out[:200])
    saved = RouterArrays.load(tmp_path / "router")
    assert saved.provenance["kmeans_pkl"] == arrays.provenance["kmeans_pkl"]


def test_import_logs_the_trust_warning(
    texts: tuple[list[str], list[str]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    write_cbtm_pickles(tmp_path, texts[0], module="__main__", scaler="l2", monkeypatch=monkeypatch)

    with caplog.at_level(logging.WARNING):
        import_cbtm(tmp_path / "tfidf.pkl", tmp_path / "kmeans.pkl")

    assert TRUST_WARNING in caplog.messages


class _RunsCode:
    def __reduce__(self) -> tuple[Any, tuple[()]]:
        import os

        return (os.getcwd, ())


@pytest.mark.parametrize(
    ("tfidf_payload", "message"),
    [
        (pickle.dumps(_RunsCode()), "never needs; refusing"),
        (pickle.dumps({"not": "a pipeline"}), "not an sklearn Pipeline"),
        (b"not a pickle at all", "cannot unpickle"),
    ],
)
def test_unexpected_tfidf_pickles_are_refused(
    tmp_path: Path, tfidf_payload: bytes, message: str
) -> None:
    (tmp_path / "tfidf.pkl").write_bytes(tfidf_payload)
    (tmp_path / "kmeans.pkl").write_bytes(pickle.dumps({}))

    with pytest.raises(ClassifierError, match=message):
        import_cbtm(tmp_path / "tfidf.pkl", tmp_path / "kmeans.pkl")


def test_plain_tfidf_without_number_rule_is_refused(
    texts: tuple[list[str], list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipeline = Pipeline(
        [("tfidf", TfidfVectorizer()), ("svd", TruncatedSVD(10)), ("n", Normalizer())]
    )
    pipeline.fit(texts[0][:200])
    (tmp_path / "tfidf.pkl").write_bytes(pickle.dumps(pipeline))
    kmeans = _stand_in_kmeans_class(monkeypatch)()
    kmeans.cluster_centers = np.zeros((2, 10), dtype=np.float32)
    (tmp_path / "kmeans.pkl").write_bytes(pickle.dumps(kmeans))

    with pytest.raises(ClassifierError, match="NumberNormalizingVectorizer"):
        import_cbtm(tmp_path / "tfidf.pkl", tmp_path / "kmeans.pkl")


def test_kmeans_pickle_without_centres_is_refused(
    texts: tuple[list[str], list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_cbtm_pickles(tmp_path, texts[0], module="__main__", scaler="l2", monkeypatch=monkeypatch)
    (tmp_path / "kmeans.pkl").write_bytes(pickle.dumps(_stand_in_kmeans_class(monkeypatch)()))

    with pytest.raises(ClassifierError, match="no cluster_centers"):
        import_cbtm(tmp_path / "tfidf.pkl", tmp_path / "kmeans.pkl")


@pytest.mark.skipif(importlib.util.find_spec("torch") is not None, reason="torch is installed")
def test_torch_tensor_pickle_without_torch_says_how_to_install(tmp_path: Path) -> None:
    (tmp_path / "tfidf.pkl").write_bytes(pickle.dumps(Pipeline([("n", Normalizer())])))
    # Protocol-0 opcodes: GLOBAL torch._utils._rebuild_tensor_v2, EMPTY_TUPLE, REDUCE, STOP.
    (tmp_path / "kmeans.pkl").write_bytes(b"ctorch._utils\n_rebuild_tensor_v2\n)R.")

    with pytest.raises(ClassifierError, match=r"pip install torch==2\.13\.0"):
        import_cbtm(tmp_path / "tfidf.pkl", tmp_path / "kmeans.pkl")


def test_missing_pickle_file(tmp_path: Path) -> None:
    with pytest.raises(ClassifierError, match="not found"):
        import_cbtm(tmp_path / "tfidf.pkl", tmp_path / "kmeans.pkl")


def test_cli_import_cbtm_prints_trust_warning_and_hash(
    texts: tuple[list[str], list[str]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    write_cbtm_pickles(tmp_path, texts[0], module="__main__", scaler="l2", monkeypatch=monkeypatch)
    argv = ["router", "import-cbtm", "--tfidf", str(tmp_path / "tfidf.pkl")]
    argv += ["--kmeans", str(tmp_path / "kmeans.pkl"), "--out", str(tmp_path / "router")]

    code = main(argv)

    out, err = capsys.readouterr()
    assert code == 0, err
    assert f"warning: {TRUST_WARNING}" in err
    assert f"content hash {Classifier.load(tmp_path / 'router').content_hash}" in out
    assert "scaler l2_normalizer" in out


def test_cli_import_cbtm_missing_file_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["router", "import-cbtm", "--tfidf", str(tmp_path / "t.pkl")]
    argv += ["--kmeans", str(tmp_path / "k.pkl"), "--out", str(tmp_path / "router")]

    code = main(argv)

    err = capsys.readouterr().err
    assert code == 1
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1
    assert "t.pkl not found" in lines[0]
