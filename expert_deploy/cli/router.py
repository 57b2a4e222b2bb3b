"""``expert-deploy router …``: fit, import, evaluate and try the c-BTM prompt router.

numpy, scikit-learn and scipy are imported inside the command bodies, so ``--help`` and the
rest of the CLI work without the ``[router]``/``[fit]`` extras.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from expert_deploy.artifacts.corpus import RouterError, read_corpus
from expert_deploy.cli._options import JsonOpt
from expert_deploy.errors import UsageError

if TYPE_CHECKING:
    from router_service.classifier import Classifier

app = typer.Typer(
    help="Fit, import, evaluate and try the c-BTM prompt router (TF-IDF → SVD → k-means).",
    no_args_is_help=True,
)


class Scaler(str, Enum):
    """Scaling after the SVD: c-BTM's code (l2_normalizer) or the paper's wording (standard)."""

    l2_normalizer = "l2_normalizer"
    standard = "standard"


RouterDirOpt = Annotated[
    Path, typer.Option("--router", help="Router directory made by `router fit` or `import-cbtm`.")
]
TextFieldOpt = Annotated[
    str, typer.Option("--text-field", help="JSON field holding each line's prompt text.")
]


@app.command("fit")
def fit(
    *,
    corpus: Annotated[Path, typer.Option("--corpus", help="JSONL file, one prompt per line.")],
    k: Annotated[int, typer.Option("--k", min=1, help="Number of clusters (= experts).")],
    out: Annotated[Path, typer.Option("--out", help="Directory to write the router into.")],
    scaler: Annotated[Scaler, typer.Option("--scaler")] = Scaler.l2_normalizer,
    seed: Annotated[int, typer.Option("--seed", help="Seeds the SVD and k-means.")] = 0,
    text_field: TextFieldOpt = "text",
) -> None:
    """Fit a router on a corpus: prints cluster sizes and the content hash."""
    texts, _ = read_corpus(corpus, text_field=text_field, label_field=None)
    if k > len(texts):
        raise UsageError(f"--k {k} is larger than the corpus ({len(texts)} prompts); lower --k")
    from router_service.classifier import Classifier
    from router_service.classifier.fit import fit_router

    with _classifier_errors():
        arrays = fit_router(texts, k=k, scaler=scaler.value, seed=seed)
        content_hash = arrays.save(out)
        classifier = Classifier(arrays)
    sizes = Counter(p.cluster for p in classifier.predict_many(texts))
    typer.echo(
        f"fitted {k} clusters on {len(texts)} prompts: vocabulary {arrays.vocab_size} terms, "
        f"{arrays.dims} SVD dims, scaler {arrays.scaler}"
    )
    _echo_sizes(sizes, k, len(texts))
    typer.echo(f"wrote {out}\ncontent hash {content_hash}")


@app.command("import-cbtm")
def import_cbtm(
    *,
    tfidf: Annotated[Path, typer.Option("--tfidf", help="c-BTM tfidf.pkl (trusted file only).")],
    kmeans: Annotated[Path, typer.Option("--kmeans", help="c-BTM kmeans.pkl (trusted only).")],
    out: Annotated[Path, typer.Option("--out", help="Directory to write the router into.")],
) -> None:
    """Convert c-BTM's published pickles into a plain-array router (offline, trusted files)."""
    from router_service.classifier import cbtm_import

    with _classifier_errors(), _warnings_to_stderr():
        arrays = cbtm_import.import_cbtm(tfidf, kmeans)
        content_hash = arrays.save(out)
    typer.echo(
        f"imported {arrays.k} clusters: vocabulary {arrays.vocab_size} terms, {arrays.dims} SVD "
        f"dims, scaler {arrays.scaler} (from the pickled pipeline)"
    )
    for name in ("tfidf_pkl", "kmeans_pkl"):
        typer.echo(f"{name} sha256 {arrays.provenance[name]['sha256']}")
    typer.echo(f"wrote {out}\ncontent hash {content_hash}")


@app.command("eval")
def evaluate(
    *,
    router: RouterDirOpt,
    corpus: Annotated[Path, typer.Option("--corpus", help="Labelled JSONL file.")],
    label_field: Annotated[str, typer.Option("--label-field")] = "label",
    text_field: TextFieldOpt = "text",
    as_json: JsonOpt = False,
) -> None:
    """Cluster sizes, agreement with labels and classification speed on a labelled corpus.

    Agreement is reported two ways: Hungarian accuracy (the best one-to-one cluster → label
    mapping, scipy's linear_sum_assignment) and purity (each cluster votes its majority label).
    """
    texts, labels = read_corpus(corpus, text_field=text_field, label_field=label_field)
    classifier = _load(router)
    from router_service.classifier.evaluation import agreement, latency_us

    started = time.perf_counter()
    clusters = [p.cluster for p in classifier.predict_many(texts)]
    batch_s = time.perf_counter() - started
    p50_us, p99_us = latency_us(classifier, texts)
    hungarian, purity = agreement(clusters, labels)
    report: dict[str, Any] = {
        "prompts": len(texts),
        "cluster_sizes": [clusters.count(c) for c in range(classifier.k)],
        "empty_prompts": sum(1 for t in texts if not classifier.terms(t)),
        "hungarian_accuracy": hungarian,
        "purity": purity,
        "batch_prompts_per_s": len(texts) / batch_s if batch_s > 0 else float("inf"),
        "single_p50_us": p50_us,
        "single_p99_us": p99_us,
        "content_hash": classifier.content_hash,
    }
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    _echo_sizes(Counter(clusters), classifier.k, len(texts))
    typer.echo(
        f"agreement with labels: hungarian accuracy {hungarian:.4f}, purity {purity:.4f}\n"
        f"empty prompts (no known term): {report['empty_prompts']}\n"
        f"throughput {report['batch_prompts_per_s']:,.0f} prompts/s (batch, this process); "
        f"single prompt p50 {p50_us:.1f} µs, p99 {p99_us:.1f} µs"
    )


@app.command("predict")
def predict(
    *,
    router: RouterDirOpt,
    text: Annotated[str, typer.Argument(help="The prompt to classify.")],
    as_json: JsonOpt = False,
) -> None:
    """Classify one prompt: prints its cluster and the squared distance to every centroid."""
    prediction = _load(router).predict(text)
    if as_json:
        payload = {
            "cluster": prediction.cluster,
            "distances": list(prediction.distances),
            "is_empty": prediction.is_empty,
        }
        typer.echo(json.dumps(payload))
        return
    note = " (no known term: routed as the zero vector)" if prediction.is_empty else ""
    typer.echo(f"cluster {prediction.cluster}{note}")
    for cluster in prediction.ranked():
        typer.echo(f"  {cluster:>3}  {prediction.distances[cluster]:.6f}")


def _load(router: Path) -> Classifier:
    from router_service.classifier import Classifier

    with _classifier_errors():
        return Classifier.load(router)


def _echo_sizes(sizes: Counter[int], k: int, total: int) -> None:
    typer.echo("cluster sizes:")
    for cluster in range(k):
        share = sizes[cluster] / total if total else 0.0
        typer.echo(f"  {cluster:>3}  {sizes[cluster]:>8}  {share:6.1%}")


@contextmanager
def _classifier_errors() -> Iterator[None]:
    """Re-raise the classifier's errors as the CLI's, so they print as one line."""
    from router_service.classifier import ClassifierError

    try:
        yield
    except ClassifierError as error:
        raise RouterError(str(error)) from error


class _StderrEcho(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        typer.echo(f"warning: {record.getMessage()}", err=True)


@contextmanager
def _warnings_to_stderr(names: Sequence[str] = ("router_service.classifier",)) -> Iterator[None]:
    """Print the classifier's log warnings (the trust warning above all) once, on stderr."""
    handler = _StderrEcho(level=logging.WARNING)
    loggers = [logging.getLogger(name) for name in names]
    saved = [logger.propagate for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.propagate = False
    try:
        yield
    finally:
        for logger, propagate in zip(loggers, saved, strict=True):
            logger.removeHandler(handler)
            logger.propagate = propagate
