"""Benchmark the router classifier against its targets; prints figures, asserts nothing.

Targets (ARCHITECTURE.md): single-prompt p50 ≤ 100 µs and ≥ 20,000 prompts/s on one core,
identical cluster ids to scikit-learn. Run: ``.venv/bin/python scripts/bench_classifier.py``.
The process pins itself to one CPU and limits BLAS to one thread before numpy loads.

``--synthetic-vocab 1000000`` instead measures the float32 / memory-mapped projection on a
synthetic c-BTM-sized router (V terms × 100 dims, k=8; no corpus could be fitted to that size
here): share of identical cluster ids float32 vs float64, the float64 margin of the prompts
that change, and per-variant RSS (anonymous vs file-backed), PSS, load time and p50 latency,
each variant in a fresh interpreter.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

P50_TARGET_US = 100.0
THROUGHPUT_TARGET = 20_000.0

_RSS_PROBE = """
import sys
from pathlib import Path
def peak_rss_kib():
    # VmHWM belongs to this process image; ru_maxrss would carry the parent's peak over exec.
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])

from router_service.classifier import Classifier
classifier = Classifier.load(Path(sys.argv[1]))
classifier.predict_many(["warm up the classifier once"] * 64)
print(peak_rss_kib())
"""
_BASELINE_PROBE = """
import numpy
def peak_rss_kib():
    # VmHWM belongs to this process image; ru_maxrss would carry the parent's peak over exec.
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
print(peak_rss_kib())
"""


def _peak_rss_mb(code: str, *args: str) -> float:
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, check=True)
    return int(out.stdout.decode().strip()) / 1024


_VARIANT_PROBE = """
import json, sys, time
from pathlib import Path
import numpy as np
from router_service.classifier import Classifier

def status():
    fields = {}
    for line in open("/proc/self/status"):
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    for line in open("/proc/self/smaps_rollup"):
        if line.startswith("Pss:"):
            fields["Pss"] = int(line.split()[1]) / 1024
    return fields

started = time.perf_counter()
classifier = Classifier.load(Path(sys.argv[1]), mmap=sys.argv[2] == "mmap")
load_s = time.perf_counter() - started
after_load = status()
prompts = json.loads(Path(sys.argv[3]).read_text())
timings = []
for text in prompts:
    t0 = time.perf_counter_ns()
    classifier.predict(text)
    timings.append(time.perf_counter_ns() - t0)
print(json.dumps({"load_s": load_s, "after_load": after_load, "after_predict": status(),
                  "p50_us": float(np.percentile(timings, 50)) / 1e3}))
"""


def _synthetic_prompts(rng: Any, topic_terms: list[Any], n: int, vocab: int) -> list[str]:
    """Prompts of 20–120 terms: mostly one topic (Zipf), some mixing two, some rare terms."""
    prompts = []
    for _ in range(n):
        words = int(rng.integers(20, 121))
        first, second = rng.choice(len(topic_terms), 2, replace=False)
        share = 1.0 if rng.random() < 0.7 else float(rng.uniform(0.3, 0.7))
        ranks = rng.zipf(1.2, words) - 1
        picks = [
            topic_terms[first if rng.random() < share else second][r % len(topic_terms[0])]
            for r in ranks
        ]
        picks += rng.integers(0, vocab, words // 10).tolist()  # rare terms from anywhere
        prompts.append(" ".join(f"t{i:07d}" for i in picks))
    return prompts


def synthetic_vocab_bench(n_terms: int, k: int, n_prompts: int) -> None:
    """Float32 vs float64 parity and memory on a synthetic router with ``n_terms`` terms."""
    import json
    import shutil

    import numpy as np

    from router_service.classifier import Classifier, RouterArrays, TextSettings
    from router_service.classifier.convert import convert_projection
    from router_service.classifier.text import NUMBER_PLACEHOLDER, SKLEARN_WORD_PATTERN

    dims = 100
    rng = np.random.default_rng(0)
    topic_of = rng.integers(0, k, n_terms)
    directions = rng.normal(size=(k, dims))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    # SVD-like rows: a topic direction plus noise, columns scaled like components_ (≈ 1/sqrt(V)).
    projection = np.empty((n_terms, dims))
    for start in range(0, n_terms, 100_000):
        rows = slice(start, min(start + 100_000, n_terms))
        block = directions[topic_of[rows]] + rng.normal(scale=1.5, size=(rows.stop - start, dims))
        projection[rows] = block / np.sqrt(n_terms)
    idf = 1.0 + rng.exponential(4.0, n_terms)
    vocabulary = {f"t{i:07d}": i for i in range(n_terms)}
    topic_terms = [np.flatnonzero(topic_of == t)[:5_000] for t in range(k)]
    sample = _synthetic_prompts(rng, topic_terms, 4_000, n_terms)
    text = TextSettings(SKLEARN_WORD_PATTERN, True, frozenset({"the", NUMBER_PLACEHOLDER}))
    # Centroids the way c-BTM gets them: k-means means of scaled prompt vectors, one topic each.
    zeros = np.zeros((k, dims))
    draft = RouterArrays(vocabulary, idf, projection, zeros, "l2_normalizer", text)
    classifier = Classifier(draft)
    vectors = []
    for prompt in sample:
        columns = classifier.terms(prompt)
        counts = np.bincount(columns, minlength=0)
        keys = np.flatnonzero(counts)
        weights = counts[keys] * idf[keys]
        z = (weights / np.linalg.norm(weights)) @ projection[keys]
        vectors.append(z / np.linalg.norm(z))
    z_all = np.array(vectors)
    labels = np.argmax(z_all @ directions.T, axis=1)
    centroids = np.array([z_all[labels == c].mean(axis=0) for c in range(k)])
    arrays = RouterArrays(vocabulary, idf, projection, centroids, "l2_normalizer", text)
    del classifier, draft, projection

    root = Path(tempfile.mkdtemp(prefix="bench_vocab_"))
    try:
        started = time.perf_counter()
        arrays.save(root / "f64")
        save_s = time.perf_counter() - started
        del arrays
        started = time.perf_counter()
        convert_projection(root / "f64", root / "f32", dtype="float32")
        convert_s = time.perf_counter() - started
        sizes = {
            name: (root / name / "projection.npy").stat().st_size / 2**20 for name in ("f64", "f32")
        }
        print(
            f"synthetic router: V={n_terms:,} terms, d={dims}, k={k}; projection.npy "
            f"{sizes['f64']:.0f} MiB float64 / {sizes['f32']:.0f} MiB float32; save "
            f"{save_s:.1f} s, convert {convert_s:.1f} s"
        )
        prompts = _synthetic_prompts(rng, topic_terms, n_prompts, n_terms)
        wide = Classifier.load(root / "f64", mmap=True).predict_many(prompts)
        narrow = Classifier.load(root / "f32", mmap=True).predict_many(prompts)
        flips = [
            i for i, (a, b) in enumerate(zip(wide, narrow, strict=True)) if a.cluster != b.cluster
        ]
        margins = np.array([np.diff(sorted(p.distances)[:2])[0] for p in wide])
        print(
            f"parity float32 vs float64: {n_prompts - len(flips)}/{n_prompts} identical "
            f"({100 * (1 - len(flips) / n_prompts):.3f} %)"
        )
        print(
            f"float64 margin d2-d1 (squared distances): p1 {np.percentile(margins, 1):.2e}, "
            f"p50 {np.percentile(margins, 50):.2e}, min {margins.min():.2e}; "
            "changed prompts' margins "
            f"{sorted(float(f'{margins[i]:.1e}') for i in flips)[:10]}"
        )
        prompt_file = root / "prompts.json"
        prompt_file.write_text(json.dumps(prompts[:2_000]))
        print(
            f"{'variant':<16} {'load s':>7} {'RSS MiB':>8} {'anon':>7} {'file':>7} {'PSS':>7}"
            f" {'peak':>7} {'p50 µs':>7}   (RSS after 2,000 predictions; peak = VmHWM)"
        )
        for name, mode in (("f64", "copy"), ("f64", "mmap"), ("f32", "copy"), ("f32", "mmap")):
            out = subprocess.run(
                [sys.executable, "-c", _VARIANT_PROBE, str(root / name), mode, str(prompt_file)],
                capture_output=True,
                check=True,
            )
            r = json.loads(out.stdout)
            a = r["after_predict"]
            label = f"{'float64' if name == 'f64' else 'float32'} {mode}"
            print(
                f"{label:<16} {r['load_s']:7.2f} {a['VmRSS']:8.0f} {a['RssAnon']:7.0f}"
                f" {a['RssFile']:7.0f} {a['Pss']:7.0f} {a['VmHWM']:7.0f} {r['p50_us']:7.1f}"
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--train", type=int, default=20_000, help="prompts to fit on")
    parser.add_argument("--held-out", type=int, default=5_000, help="prompts to time")
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--scaler", choices=["l2_normalizer", "standard"], default="l2_normalizer")
    parser.add_argument(
        "--synthetic-vocab", type=int, default=0, help="V: float32/mmap bench on a synthetic router"
    )
    parser.add_argument("--prompts", type=int, default=20_000, help="prompts for --synthetic-vocab")
    args = parser.parse_args()
    if args.synthetic_vocab:
        synthetic_vocab_bench(args.synthetic_vocab, args.k, args.prompts)
        return
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"  # before numpy loads, so BLAS stays on the pinned core
    import numpy as np

    core = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {core})
    from router_service.classifier import Classifier
    from router_service.classifier.fit import fit_reference
    from router_service.classifier.synthetic import topic_corpus

    corpus = topic_corpus(
        args.train + args.held_out, n_topics=20, words_per_topic=1_800, shared_words=5_000, seed=7
    )
    texts = [item.text for item in corpus]
    train, held_out = texts[: args.train], texts[args.train :]
    started = time.perf_counter()
    fitted = fit_reference(train, k=args.k, scaler=args.scaler, seed=0)
    fit_s = time.perf_counter() - started
    words = np.mean([len(t.split()) for t in held_out])
    print(f"corpus: {len(train)} train / {len(held_out)} held-out prompts, ~{words:.0f} words each")
    print(
        f"router: vocabulary {fitted.arrays.vocab_size} terms, d={fitted.arrays.dims}, "
        f"k={args.k}, scaler {args.scaler}; fit {fit_s:.1f} s"
    )

    with tempfile.TemporaryDirectory() as tmp:
        fitted.arrays.save(Path(tmp))
        started = time.perf_counter()
        classifier = Classifier.load(Path(tmp))
        load_s = time.perf_counter() - started
        rss_mb = _peak_rss_mb(_RSS_PROBE, tmp)
    baseline_mb = _peak_rss_mb(_BASELINE_PROBE)

    reference = fitted.reference_predict(held_out)
    ours = np.array([p.cluster for p in classifier.predict_many(held_out)])
    for text in held_out[:500]:
        classifier.predict(text)  # warm-up
    timings_ns = np.empty(len(held_out), dtype=np.float64)
    for i, text in enumerate(held_out):
        t0 = time.perf_counter_ns()
        classifier.predict(text)
        timings_ns[i] = float(time.perf_counter_ns() - t0)
    p50_us, p99_us = np.percentile(timings_ns, [50, 99]) / 1e3
    single_rate = len(held_out) / (timings_ns.sum() / 1e9)
    batch_rates: list[float] = []
    for _ in range(5):
        batch_started = time.perf_counter()
        classifier.predict_many(held_out)
        batch_rates.append(len(held_out) / (time.perf_counter() - batch_started))
    batch_rate = float(np.median(batch_rates))

    def verdict(ok: bool) -> str:
        return "PASS" if ok else "FAIL"

    agree = int((ours == reference).sum())
    print(f"pinned to CPU {core}; BLAS threads 1")
    print(
        f"parity with sklearn   : {agree}/{len(held_out)} identical cluster ids "
        f"[{verdict(agree == len(held_out))}]"
    )
    print(
        f"single predict p50    : {p50_us:7.1f} µs (target ≤ {P50_TARGET_US:.0f}) "
        f"[{verdict(p50_us <= P50_TARGET_US)}]"
    )
    print(f"single predict p99    : {p99_us:7.1f} µs")
    print(f"single predict loop   : {single_rate:9,.0f} prompts/s")
    print(
        f"predict_many, 1 core  : {batch_rate:9,.0f} prompts/s (target ≥ "
        f"{THROUGHPUT_TARGET:,.0f}) [{verdict(batch_rate >= THROUGHPUT_TARGET)}]"
    )
    print(f"load artifact         : {load_s * 1e3:7.0f} ms (with full hash check)")
    print(f"peak RSS, classifier  : {rss_mb:7.1f} MB (python + numpy alone: {baseline_mb:.1f} MB)")


if __name__ == "__main__":
    main()
