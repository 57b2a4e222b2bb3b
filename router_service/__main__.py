"""``python -m router_service --config gateway.yaml``: run one gateway replica."""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import logging
import os
import sys
from pathlib import Path

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv``, load the config and serve; returns the process exit code."""
    parser = argparse.ArgumentParser(prog="python -m router_service", description=__doc__)
    parser.add_argument("--config", type=Path, required=True, help="gateway YAML file")
    parser.add_argument(
        "--loop",
        choices=("auto", "asyncio", "uvloop"),
        default="auto",
        help="event loop; auto (the default) = uvloop when installed (the router extra has it)",
    )
    args = parser.parse_args(argv)

    from router_service.config import ConfigError, load_config

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if config.cpus:
        # Before the imports below: numpy's BLAS pool and gRPC's threads start with the
        # affinity of the thread that creates them.
        problem = pin_to_cpus(config.cpus)
        if problem is not None:
            print(f"error: {args.config}: {problem}", file=sys.stderr)
            return 2

    from router_service.classifier.errors import ClassifierError
    from router_service.server import serve

    logging.basicConfig(
        level=config.log_level.upper(), format="%(message)s", stream=sys.stderr, force=True
    )
    # The environment is read here, once; nothing below reads os.environ.
    environ = dict(os.environ)
    loop = args.loop
    if loop == "auto":
        # uvloop: 4-8 % less gateway CPU per request at 1, 100 and 1,000 streams on both front
        # ends, time to first token within noise (scripts/bench_gateway.py --ref-loop uvloop,
        # two interleaved runs). Under uvicorn it had cost the HTTP path ~0.4 ms.
        loop = "uvloop" if importlib.util.find_spec("uvloop") is not None else "asyncio"
    try:
        if loop == "uvloop":
            import uvloop

            uvloop.run(serve(config, environ))
        else:
            asyncio.run(serve(config, environ))
    except (ConfigError, ClassifierError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


def pin_to_cpus(cpus: tuple[int, ...]) -> str | None:
    """Run this process (and the threads it starts later) on ``cpus``; a problem, or None."""
    allowed = os.sched_getaffinity(0)
    missing = sorted(set(cpus) - allowed)
    if missing:
        usable = ",".join(map(str, sorted(allowed)))
        return (
            f"cpus {','.join(map(str, missing))} are not available here (this process may use "
            f"{usable}); set cpus (gateway.cpus in the inventory) to some of those"
        )
    os.sched_setaffinity(0, cpus)
    return None


if __name__ == "__main__":
    sys.exit(main())
