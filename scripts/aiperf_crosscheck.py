"""Run the same short load with NVIDIA aiperf and with ``expert-deploy bench``; print both.

Starts one real tritonserver with the synthetic model (``--ttft-ms``, ``--tpot-ms``,
``--tokens``) and one real gateway in front of it, then runs, against the gateway's OpenAI
``/v1/completions`` endpoint with streaming, the same closed-loop load (``--users`` concurrent,
``--requests`` in total, ``max_tokens = --tokens``) twice: with aiperf and with our simulator.

aiperf lives in its own virtualenv (``--venv``, default ``venv-aiperf/`` in the checkout, which
git ignores) so its pins do not fight ours; the first run creates it with ``pip install aiperf``.
It runs offline with a local tokenizer directory made here with the ``tokenizers`` library: a
word-level tokenizer (whitespace pre-tokenizer), under which each synthetic token ``" tokN"`` is
exactly one token, so aiperf's re-tokenised output count equals the number of streamed chunks.
``--tokenizer-kind char`` makes a character-level one instead (each ``" tokN"`` is 4-6 tokens),
to show how re-tokenising changes aiperf's inter-token figure. ``HF_HUB_OFFLINE`` is left unset
for aiperf, as it needs.

Usage: ``.venv/bin/python scripts/aiperf_crosscheck.py [--users 8] [--requests 200]``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from expert_deploy.cli import main as cli_main  # noqa: E402
from router_service.classifier.fit import fit_router  # noqa: E402
from tests.support.gateway import Gateway, routing_table  # noqa: E402
from tests.support.triton import TritonServer, write_synthetic_repository  # noqa: E402

TOPICS = (
    "recipe oven flour butter garlic roast simmer bake dough",
    "galaxy orbit comet nebula planet quasar stellar eclipse telescope",
    "stock bond ledger equity audit invoice dividend inflation interest",
)

MAKE_TOKENIZER = """
import sys
from tokenizers import Tokenizer, models, pre_tokenizers, decoders
from transformers import PreTrainedTokenizerFast
kind, target = sys.argv[1], sys.argv[2]
words = {"[UNK]": 0, "[BOS]": 1, "[EOS]": 2}
if kind == "word":
    extra = [f"tok{i}" for i in range(5000)] + sys.argv[3].split()
    for w in extra:
        words.setdefault(w, len(words))
    tok = Tokenizer(models.WordLevel(words, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece(prefix="##")
else:
    for c in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,;:!?'-":
        words.setdefault(c, len(words))
    tok = Tokenizer(models.WordLevel(words, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    tok.decoder = decoders.Fuse()
fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", bos_token="[BOS]",
                               eos_token="[EOS]")
fast.save_pretrained(target)
"""


def ensure_venv(venv: Path) -> Path:
    """aiperf's own virtualenv; created with pip on first use."""
    binary = venv / "bin" / "aiperf"
    if binary.exists():
        return binary
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "aiperf", "tokenizers", "transformers"], check=True)
    return binary


def aiperf_env() -> dict[str, str]:
    """This environment without HF_HUB_OFFLINE (aiperf needs it unset) and without proxies' use."""
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    env["HF_HUB_DISABLE_TELEMETRY"] = "1"
    return env


def run_aiperf(binary: Path, args: argparse.Namespace, url: str, tokenizer: Path, out: Path) -> Any:
    argv = [
        str(binary), "profile", "--model", "expert-router", "--url", url,
        "--endpoint-type", "completions", "--streaming", "--tokenizer", str(tokenizer),
        "--concurrency", str(args.users), "--request-count", str(args.requests),
        "--warmup-request-count", str(args.users),
        "--synthetic-input-tokens-mean", "16", "--synthetic-input-tokens-stddev", "0",
        "--output-tokens-mean", str(args.tokens), "--output-tokens-stddev", "0",
        "--random-seed", "0", "--artifact-dir", str(out), "--ui-type", "none",
    ]  # fmt: skip
    print("$ " + " ".join(argv), flush=True)
    done = subprocess.run(
        argv, check=False, env=aiperf_env(), cwd=out.parent, capture_output=True, text=True
    )
    if done.returncode != 0:
        print(done.stdout[-3000:], done.stderr[-3000:], sep="\n", file=sys.stderr)
        raise SystemExit(f"aiperf exited with {done.returncode}")
    exports = sorted(out.rglob("profile_export_aiperf.json"))
    if not exports:
        raise SystemExit(f"aiperf wrote no profile_export_aiperf.json under {out}")
    return json.loads(exports[-1].read_text())


def aiperf_metric(export: Any, name: str, stat: str) -> float | None:
    """A statistic of one aiperf metric, whichever of its export layouts is used."""
    holder = export.get("records", export) if isinstance(export, dict) else {}
    metric = holder.get(name)
    if isinstance(metric, dict):
        value = metric.get(stat)
        return float(value) if isinstance(value, int | float) else None
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--ttft-ms", type=float, default=50.0)
    parser.add_argument("--tpot-ms", type=float, default=20.0)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--venv", type=Path, default=REPO_ROOT / "venv-aiperf")
    parser.add_argument("--tokenizer-kind", choices=("word", "char"), default="word")
    args = parser.parse_args()

    binary = ensure_venv(args.venv)
    root = Path(tempfile.mkdtemp(prefix="aiperf_crosscheck_"))
    started: list[TritonServer | Gateway] = []
    try:
        tokenizer = root / "tokenizer"
        subprocess.run(
            [str(args.venv / "bin" / "python"), "-c", MAKE_TOKENIZER, args.tokenizer_kind,
             str(tokenizer), " ".join(TOPICS)],
            check=True, env=aiperf_env(),
        )  # fmt: skip
        repository = write_synthetic_repository(
            root / "repo", ttft_ms=args.ttft_ms, tpot_ms=args.tpot_ms, default_tokens=args.tokens
        )
        triton = TritonServer(repository=repository, workdir=root / "triton").start()
        started.append(triton)
        corpus = [" ".join(t.split()[i:] + t.split()[:i]) for t in TOPICS for i in range(9)]
        fit_router(corpus, k=3, seed=0).save(root / "router")
        config = {
            "router_dir": str(root / "router"),
            "routing": routing_table(1, {f"e{i}": ([i], [triton.grpc_port]) for i in range(3)}),
            "log_level": "warning",
        }
        gateway = Gateway(root / "gateway", config).start()
        started.append(gateway)
        prompts = root / "prompts.jsonl"
        prompts.write_text("".join(json.dumps({"text": t, "cluster": 0}) + "\n" for t in corpus))

        export = run_aiperf(binary, args, gateway.base_url, tokenizer, root / "aiperf")
        ours_out = root / "ours"
        argv = [
            "bench", "run", "--url", gateway.base_url, "--prompts", str(prompts),
            "--users", str(args.users), "--requests", str(args.requests), "--warmup", "2",
            "--max-tokens", str(args.tokens), "--out", str(ours_out),
        ]  # fmt: skip
        status = cli_main(argv)
        if status != 0:
            return status
        ours = json.loads((ours_out / f"users-{args.users}" / "summary.json").read_text())
        m = ours["metrics"]
        rows = [
            ("TTFT mean ms", "time_to_first_token", "avg", m["ttft_ms"]["mean"]),
            ("TTFT p50 ms", "time_to_first_token", "p50", m["ttft_ms"]["p50"]),
            ("TTFT p99 ms", "time_to_first_token", "p99", m["ttft_ms"]["p99"]),
            ("inter-token mean ms [aiperf ITL = our TPOT]", "inter_token_latency", "avg",
             m["tpot_ms"]["mean"]),
            ("inter-token p99 ms [aiperf ITL = our TPOT]", "inter_token_latency", "p99",
             m["tpot_ms"]["p99"]),
            ("our per-chunk ITL mean ms (no aiperf twin)", "", "", m["itl_ms"]["mean"]),
            ("request latency mean ms [= our E2E + stream close]", "request_latency", "avg",
             m["e2e_ms"]["mean"]),
            ("output tokens per request", "output_sequence_length", "avg",
             m["tokens"]["received_mean"]),
            ("output token throughput tok/s", "output_token_throughput", "avg",
             m["system_throughput"]["overall_tok_s"]),
            ("request throughput req/s", "request_throughput", "avg",
             m["request_throughput_rps"]),
            ("per-user tok/s [aiperf 1/ITL; ours N/E2E]", "output_token_throughput_per_user",
             "avg", m["user_throughput_tok_s"]["mean"]),
        ]  # fmt: skip
        print(
            f"\nsame load: {args.users} concurrent users, {args.requests} requests, synthetic "
            f"TTFT {args.ttft_ms} ms / TPOT {args.tpot_ms} ms / {args.tokens} tokens, "
            f"tokenizer {args.tokenizer_kind}-level"
        )
        print(f"{'figure':<52} {'aiperf':>12} {'ours':>12}")
        for label, name, stat, value in rows:
            theirs = aiperf_metric(export, name, stat) if name else None
            left = "-" if theirs is None else f"{theirs:.3f}"
            right = "-" if value is None else f"{value:.3f}"
            print(f"{label:<52} {left:>12} {right:>12}")
        return 0
    finally:
        for item in reversed(started):
            item.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
