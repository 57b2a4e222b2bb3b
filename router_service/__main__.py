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
        default="asyncio",
        help="event loop to run on; auto = uvloop when installed (the router extra has it)",
    )
    args = parser.parse_args(argv)

    from router_service.config import ConfigError, load_config
    from router_service.server import serve

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=config.log_level.upper(), format="%(message)s", stream=sys.stderr, force=True
    )
    # The environment is read here, once; nothing below reads os.environ.
    environ = dict(os.environ)
    loop = args.loop
    if loop == "auto":
        # Not the default: on a shared 2-core box (3 noisy runs each, scripts/bench_gateway.py)
        # uvloop cut the gRPC front end's CPU per request by ~15 % but added ~0.4 ms to the
        # HTTP path's TTFT p50; re-measure on a quiet machine before making it the default.
        loop = "uvloop" if importlib.util.find_spec("uvloop") is not None else "asyncio"
    try:
        if loop == "uvloop":
            import uvloop

            uvloop.run(serve(config, environ))
        else:
            asyncio.run(serve(config, environ))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
