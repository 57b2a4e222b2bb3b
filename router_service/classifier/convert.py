"""Convert a router artifact's projection to float32 (or back): an explicit, offline step.

``python -m router_service.classifier.convert SRC DST --projection-dtype float32``

The source is memory-mapped, so converting an ~800 MB float64 projection needs about the
float32 copy (~400 MB) in memory, not both. The new artifact gets its own content hash and
records the source's hash in its provenance; the source directory is never modified. Serving
the result gives the same clusters as the float64 artifact except for prompts whose two
nearest centroids are nearly tied (scripts/bench_classifier.py ``--synthetic-vocab`` measures
the share). Routers fitted by scikit-learn stay float64 unless converted here.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from router_service.classifier.arrays import PROJECTION_DTYPES, RouterArrays
from router_service.classifier.errors import ClassifierError

__all__ = ["convert_projection", "main"]


def convert_projection(source: Path, target: Path, *, dtype: str) -> str:
    """Write ``source``'s artifact to ``target`` with its projection stored as ``dtype``.

    Returns:
        The new artifact's content hash.

    Raises:
        ClassifierError: the source cannot be loaded, ``dtype`` is not supported, or
            ``target`` is the source or already holds a router.
    """
    if source.resolve() == target.resolve():
        raise ClassifierError(f"{target} is the source; write the converted router elsewhere")
    if (target / "router.json").exists():
        raise ClassifierError(f"{target} already holds a router; choose an empty directory")
    arrays = RouterArrays.load(source, mmap=True)
    converted = arrays.with_projection_dtype(dtype)
    provenance = {
        **arrays.provenance,
        "projection_converted": {
            "from_content_hash": arrays.content_hash,
            "from_dtype": arrays.projection.dtype.name,
            "to_dtype": dtype,
        },
    }
    return dataclasses.replace(converted, provenance=provenance).save(target)


def main(argv: list[str] | None = None) -> int:
    """Command line: convert, print the new hash; one-line error and exit 1 on failure."""
    parser = argparse.ArgumentParser(
        prog="python -m router_service.classifier.convert", description=__doc__.splitlines()[0]
    )
    parser.add_argument("source", type=Path, help="router directory to read")
    parser.add_argument("target", type=Path, help="new router directory to write")
    parser.add_argument("--projection-dtype", choices=PROJECTION_DTYPES, default="float32")
    args = parser.parse_args(argv)
    try:
        content_hash = convert_projection(args.source, args.target, dtype=args.projection_dtype)
    except ClassifierError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {args.target} (projection {args.projection_dtype}, content hash {content_hash})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
