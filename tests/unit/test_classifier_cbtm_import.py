"""Importing c-BTM's pickles: test-built pickles of the same shape as the published ones.

The vectoriser below copies c-BTM's ``NumberNormalizingVectorizer`` (kernelmachine/cbtm
``metaseq/scripts/train_clusterer.py``) and is recorded under the module names c-BTM's pickles
carry. ``kmeans.pkl`` comes in two kinds: a stand-in ``kmeans_pytorch.KMeans`` holding a float32
numpy array (test names say "stand_in"; runs without torch), and, when torch is installed, a
``kmeans_pytorch.KMeans`` shaped like kernelmachine/balanced-kmeans's (``n_clusters``,
``cluster_centers`` as a torch tensor, ``device``, ``balanced``), fitted with torch the way its
``fit`` does and written with ``pickle.dump`` as c-BTM's ``train_kmeans`` does, or with
``torch.save``. The fork itself is not installed (its package name clashes with PyPI's
kmeans-pytorch, see router.md), so its class is recreated under its module name.
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


# -- real torch tensors -----------------------------------------------------------------------

needs_torch = pytest.mark.skipif(
    importlib.util.find_spec("torch") is None, reason="torch is not installed"
)


def _balanced_kmeans_class(monkeypatch: pytest.MonkeyPatch) -> type:
    """A class shaped like balanced-kmeans's ``KMeans``, fitted like its unbalanced ``fit``."""
    import torch

    class KMeans:
        def __init__(self, n_clusters: int, device: Any, balanced: bool = False) -> None:
            self.n_clusters = n_clusters
            self.cluster_centers: Any = None
            self.device = device
            self.balanced = balanced

        def fit(self, x: Any, iter_limit: int = 20, tol: float = 1e-3) -> None:
            x = x.float().to(self.device)  # the fork casts inputs to float32
            generator = torch.Generator().manual_seed(0)
            state = x[torch.randperm(len(x), generator=generator)[: self.n_clusters]].clone()
            for _ in range(iter_limit):
                assignments = ((x[:, None, :] - state[None, :, :]) ** 2).sum(-1).argmin(dim=1)
                before = state.clone()
                for index in range(self.n_clusters):
                    members = x[assignments == index]
                    if len(members):
                        state[index] = members.mean(dim=0)
                if (((state - before) ** 2).sum(dim=1).sqrt().sum()) ** 2 < tol:
                    break
            self.cluster_centers = state

        def predict(self, x: Any) -> Any:
            distances = ((x.float()[:, None, :] - self.cluster_centers[None, :, :]) ** 2).sum(-1)
            return distances.argmin(dim=1)

    KMeans.__module__ = "kmeans_pytorch"
    KMeans.__qualname__ = "KMeans"
    module = types.ModuleType("kmeans_pytorch")
    module.KMeans = KMeans  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "kmeans_pytorch", module)
    return KMeans


def _write_torch_kmeans(
    directory: Path, vectors: Any, monkeypatch: pytest.MonkeyPatch, *, writer: str, cuda: bool
) -> Any:
    """Fit on ``vectors`` and write kmeans.pkl; ``cuda`` records the storages as on cuda:0."""
    import torch
    import torch.serialization

    kmeans = _balanced_kmeans_class(monkeypatch)(K, torch.device("cpu"))
    kmeans.fit(torch.from_numpy(vectors))
    with pytest.MonkeyPatch.context() as patch, (directory / "kmeans.pkl").open("wb") as handle:
        if cuda:
            # What a file trained on a GPU carries: c-BTM picks CUDA when it is available and
            # torch tags each storage with its device. No GPU here, so only the tag is set.
            kmeans.device = torch.device("cuda")
            patch.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
        if writer == "pickle":
            pickle.dump(kmeans, handle)  # what c-BTM's train_kmeans does
        else:
            torch.save(kmeans, handle, _use_new_zipfile_serialization=writer == "torch.save")
    return kmeans


@needs_torch
@pytest.mark.parametrize("writer", ["pickle", "torch.save", "torch.save-legacy"])
@pytest.mark.parametrize("cuda", [False, True], ids=["cpu", "cuda_tagged"])
def test_import_with_torch_kmeans_matches_the_pickled_pipeline(
    texts: tuple[list[str], list[str]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    writer: str,
    cuda: bool,
) -> None:
    import torch

    train, held_out = texts
    pipeline = write_cbtm_pickles(
        tmp_path, train, module="__main__", scaler="l2", monkeypatch=monkeypatch
    )
    kmeans = _write_torch_kmeans(
        tmp_path, reference_transform(pipeline, train), monkeypatch, writer=writer, cuda=cuda
    )

    arrays = import_cbtm(tmp_path / "tfidf.pkl", tmp_path / "kmeans.pkl")

    expected = kmeans.cluster_centers.double().numpy()
    np.testing.assert_array_equal(arrays.centroids, expected)  # float32 centres, exactly
    vectors = reference_transform(pipeline, held_out)
    squared = ((vectors[:, None, :] - expected[None, :, :]) ** 2).sum(axis=2)
    ours = Classifier(arrays).predict_many(held_out)
    assert [p.cluster for p in ours] == squared.argmin(axis=1).tolist()
    # The fork predicts in float32; only near-ties may differ from the float64 argmin.
    theirs = kmeans.predict(torch.from_numpy(vectors)).tolist()
    agree = sum(a == b.cluster for a, b in zip(theirs, ours, strict=True))
    assert agree >= 0.99 * len(held_out)


@needs_torch
def test_cuda_tagged_kmeans_needs_the_cpu_mapping(
    texts: tuple[list[str], list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Plain unpickling of a GPU-trained kmeans.pkl fails on a CPU host; the import does not."""
    import torch

    assert not torch.cuda.is_available()
    pipeline = write_cbtm_pickles(
        tmp_path, texts[0], module="__main__", scaler="l2", monkeypatch=monkeypatch
    )
    _write_torch_kmeans(
        tmp_path, reference_transform(pipeline, texts[0]), monkeypatch, writer="pickle", cuda=True
    )

    with pytest.raises(RuntimeError, match="CUDA"):
        pickle.loads((tmp_path / "kmeans.pkl").read_bytes())
    assert import_cbtm(tmp_path / "tfidf.pkl", tmp_path / "kmeans.pkl").k == K


@needs_torch
def test_torch_kmeans_naming_an_unexpected_global_is_refused(tmp_path: Path) -> None:
    import torch

    (tmp_path / "tfidf.pkl").write_bytes(pickle.dumps(Pipeline([("n", Normalizer())])))
    torch.save({"cluster_centers": _RunsCode()}, tmp_path / "kmeans.pkl")

    with pytest.raises(ClassifierError, match="never needs; refusing"):
        import_cbtm(tmp_path / "tfidf.pkl", tmp_path / "kmeans.pkl")
