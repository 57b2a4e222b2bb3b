"""The router model a deployment serves: fitted, imported or given, cached by its inputs.

A fitted router lives in ``<workdir>/router/<input key>/`` where the key hashes everything
that changes the fit (corpus bytes, k, scaler, seed, text field). A folder with
``router.json`` is complete (arrays.save writes it last), so a second ``up`` or ``build``
reuses it without importing scikit-learn.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from expert_deploy.artifacts.corpus import RouterError, read_corpus
from expert_deploy.atomic_file import staging_dir
from expert_deploy.builder.cache import sha256_file
from expert_deploy.inventory.models import ArtifactSource, CbtmSource, FitSource, RouterSpec

_METADATA = "router.json"


@dataclass(frozen=True)
class RouterArtifact:
    path: Path
    #: ``sha256:<hex>`` over the arrays: equal hashes route every prompt the same way.
    content_hash: str
    #: ``fitted``, ``cached``, ``imported`` or ``given``.
    status: str


def prepare_router(spec: RouterSpec, workdir: Path) -> RouterArtifact:
    """The router directory ``spec`` asks for, fitting or importing it when not cached.

    Raises:
        RouterError: the corpus, artifact or pickles are unusable, or k does not match.
    """
    source = spec.source
    if isinstance(source, ArtifactSource):
        artifact = RouterArtifact(source.path, _read_hash(source.path), "given")
    else:
        key = _input_key(spec)
        target = workdir.resolve() / "router" / key[:16]
        if (target / _METADATA).is_file():
            artifact = RouterArtifact(target, _read_hash(target), "cached")
        elif isinstance(source, FitSource):
            artifact = _fit(spec, source, target)
        else:
            artifact = _import(source, target)
    _check_k(artifact, spec.k)
    return artifact


def _input_key(spec: RouterSpec) -> str:
    digest = hashlib.sha256()
    source = spec.source
    if isinstance(source, FitSource):
        parts = ["fit", _file_sha256(source.corpus), source.text_field, str(source.seed)]
    else:
        assert isinstance(source, CbtmSource)
        parts = ["cbtm", _file_sha256(source.tfidf), _file_sha256(source.kmeans)]
    parts += [str(spec.k), spec.scaler]
    digest.update("\0".join(parts).encode())
    return digest.hexdigest()


def _fit(spec: RouterSpec, source: FitSource, target: Path) -> RouterArtifact:
    texts, _ = read_corpus(source.corpus, text_field=source.text_field, label_field=None)
    if spec.k > len(texts):
        raise RouterError(
            f"router.k is {spec.k} but {source.corpus} has {len(texts)} prompts; add prompts"
        )
    from router_service.classifier import ClassifierError
    from router_service.classifier.fit import fit_router

    try:
        arrays = fit_router(texts, k=spec.k, scaler=spec.scaler, seed=source.seed)
    except ClassifierError as error:
        raise RouterError(f"fitting the router on {source.corpus} failed: {error}") from error
    return _save_into(target, arrays.save, "fitted")


def _import(source: CbtmSource, target: Path) -> RouterArtifact:
    from router_service.classifier import ClassifierError
    from router_service.classifier.cbtm_import import import_cbtm

    try:
        arrays = import_cbtm(source.tfidf, source.kmeans)
    except ClassifierError as error:
        raise RouterError(f"importing the c-BTM router failed: {error}") from error
    return _save_into(target, arrays.save, "imported")


def _save_into(target: Path, save: object, status: str) -> RouterArtifact:
    """Save into a temporary sibling, then rename: a half-written router is never found."""
    assert callable(save)
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = staging_dir(target.parent, f".{target.name}-")
    try:
        content_hash = str(save(temp))
        if target.exists():  # another command saved the same key meanwhile: same content
            shutil.rmtree(temp)
        else:
            temp.rename(target)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return RouterArtifact(target, content_hash, status)


def _read_hash(path: Path) -> str:
    try:
        metadata = json.loads((path / _METADATA).read_text(encoding="utf-8"))
        return str(metadata["content_hash"])
    except (OSError, ValueError, KeyError, TypeError):
        raise RouterError(
            f"{path} is not a router directory (no readable {_METADATA}); "
            "make one with `expert-deploy router fit`"
        ) from None


def _check_k(artifact: RouterArtifact, k: int) -> None:
    metadata = json.loads((artifact.path / _METADATA).read_text(encoding="utf-8"))
    centroids = metadata.get("settings", {}).get("arrays", {}).get("centroids", {})
    shape = centroids.get("shape") if isinstance(centroids, dict) else None
    if isinstance(shape, list) and shape and shape[0] != k:
        raise RouterError(
            f"the router at {artifact.path} has {shape[0]} clusters but router.k is {k}; "
            "refit it or change router.k"
        )


def _file_sha256(path: Path) -> str:
    try:
        return sha256_file(path)
    except OSError as error:
        raise RouterError(f"cannot read {path}: {error}") from error
