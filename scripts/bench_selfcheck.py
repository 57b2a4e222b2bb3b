"""Print the user simulator's own timing error at 1, 100 and 1,000 streams, and its processes.

Starts one real tritonserver with the synthetic model (known ``--ttft-ms`` / ``--tpot-ms``,
``--tokens`` per request) and one real gateway in front of it (three clusters, all served by
that server), then runs ``expert-deploy bench selfcheck`` for each ``--processes`` value:
direct to Triton over gRPC and through the gateway over HTTP/SSE, closed loop.

Read the columns as: TTFT/ITL error = measured − configured (direct: simulator + Triton +
Python-backend sleep overshoot, an upper bound on the simulator's error; gateway: plus the
gateway); client lag p99 = how long a just-queued callback waited on the simulator's event loop
(the simulator's own timestamp error); +TTFT = gateway minus direct at the same streams.
Everything shares this machine's CPUs, so figures at 1,000 streams include CPU contention
between the simulator, the gateway and tritonserver.

Usage: ``.venv/bin/python scripts/bench_selfcheck.py [--users 1,100,1000] [--processes 1,2]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from expert_deploy.cli import main as cli_main  # noqa: E402
from router_service.classifier.fit import fit_router  # noqa: E402
from tests.support.gateway import Gateway, routing_table  # noqa: E402
from tests.support.ports import free_port  # noqa: E402
from tests.support.triton import TritonServer, write_synthetic_repository  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", default="1,100,1000")
    parser.add_argument("--processes", default="auto", help="comma list; auto = one per 250")
    parser.add_argument("--ttft-ms", type=float, default=50.0)
    parser.add_argument("--tpot-ms", type=float, default=100.0)
    parser.add_argument("--tokens", type=int, default=10)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="bench_selfcheck_"))
    started: list[TritonServer | Gateway] = []
    try:
        repository = write_synthetic_repository(
            root / "repo", ttft_ms=args.ttft_ms, tpot_ms=args.tpot_ms, default_tokens=args.tokens
        )
        triton = TritonServer(repository=repository, workdir=root / "triton").start()
        started.append(triton)
        topics = (
            "recipe oven flour butter garlic roast simmer bake dough",
            "galaxy orbit comet nebula planet quasar stellar eclipse telescope",
            "stock bond ledger equity audit invoice dividend inflation interest",
        )
        # Rotations of each topic's words: three clearly separated clusters to fit on.
        corpus = [
            " ".join(words.split()[i:] + words.split()[:i]) for words in topics for i in range(9)
        ]
        fit_router(corpus, k=3, seed=0).save(root / "router")
        config = {
            "router_dir": str(root / "router"),
            "routing": routing_table(1, {f"e{i}": ([i], [triton.grpc_port]) for i in range(3)}),
            "log_level": "warning",
            "grpc_port": free_port(),
            "limits": {"max_inflight_per_upstream": 4096, "max_queue_per_upstream": 4096},
        }
        gateway = Gateway(root / "gateway", config).start()
        started.append(gateway)
        print(
            f"synthetic expert: TTFT {args.ttft_ms} ms, TPOT {args.tpot_ms} ms, {args.tokens}"
            f" tokens; {args.duration} s measured after {args.warmup} s warm-up per point;"
            f" {os.cpu_count()} CPUs shared by simulator, gateway and tritonserver",
            flush=True,
        )
        for processes in args.processes.split(","):
            print(f"\n--processes {processes}", flush=True)
            argv = [
                "bench", "selfcheck", "--grpc", f"127.0.0.1:{triton.grpc_port}",
                "--url", gateway.base_url, "--ttft-ms", str(args.ttft_ms),
                "--tpot-ms", str(args.tpot_ms), "--tokens", str(args.tokens),
                "--users", args.users, "--duration", str(args.duration),
                "--warmup", str(args.warmup), "--out", str(root / f"out-{processes}"),
            ]  # fmt: skip
            if processes != "auto":
                argv += ["--processes", processes]
            status = cli_main(argv)
            if status != 0:
                return status
        return 0
    finally:
        for item in reversed(started):
            item.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
