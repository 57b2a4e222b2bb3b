"""Benchmark the router classifier against its targets; prints figures, asserts nothing.

Targets (ARCHITECTURE.md): single-prompt p50 ≤ 100 µs and ≥ 20,000 prompts/s on one core,
identical cluster ids to scikit-learn. Run: ``.venv/bin/python scripts/bench_classifier.py``.
The process pins itself to one CPU and limits BLAS to one thread before numpy loads.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--train", type=int, default=20_000, help="prompts to fit on")
    parser.add_argument("--held-out", type=int, default=5_000, help="prompts to time")
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--scaler", choices=["l2_normalizer", "standard"], default="l2_normalizer")
    args = parser.parse_args()
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
