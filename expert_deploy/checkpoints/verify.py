"""Checks that a checkpoint folder holds a loadable Llama checkpoint, read without torch.

A download can "succeed" and still be unusable: a mirror or a git clone without git-lfs
serves 135-byte pointer files in place of weights (TensorRT-LLM#2052), a shard is cut short,
or the index names a shard that is not there. These checks read only the config, the index
and each shard's safetensors header, so they take milliseconds even for 70B.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from expert_deploy.errors import CheckpointError

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")

_LFS_POINTER_PREFIX = b"version https://git-lfs"
#: Real pointer files are ~130 bytes; anything this small cannot hold a Llama shard anyway.
_POINTER_MAX_BYTES = 1024
#: safetensors caps its JSON header at 100 MB; a bigger length prefix means garbage.
_HEADER_MAX_BYTES = 100 * 1024 * 1024


def verify_checkpoint(path: Path) -> None:
    """Check config, tokenizer and every weight shard of the checkpoint in ``path``.

    Raises:
        CheckpointError: a file is missing, unreadable, an LFS pointer, or a shard is cut
            short or corrupt; the message names the file and what to do.
    """
    if not path.is_dir():
        raise CheckpointError(f"checkpoint folder {path} does not exist: run `expert-deploy fetch`")
    _check_config(path)
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise CheckpointError(
            f"{path} has no tokenizer ({' or '.join(TOKENIZER_FILES)}): "
            "choose a revision of the repository that ships one"
        )
    index = path / INDEX_FILE
    if index.is_file():
        _check_sharded(path, _read_json(index, path))
    elif (path / SINGLE_FILE).is_file():
        _check_shard(path, SINGLE_FILE)
    else:
        raise CheckpointError(
            f"{path} has neither {INDEX_FILE} nor {SINGLE_FILE}: expert-deploy needs "
            "safetensors weights; choose a repository or revision that has them"
        )


def _check_config(path: Path) -> None:
    config = _read_json(path / "config.json", path)
    if not isinstance(config, dict) or "model_type" not in config:
        raise CheckpointError(
            f"{path / 'config.json'} is not a model config (no model_type): "
            "check the repository and revision of this expert"
        )


def _check_sharded(path: Path, index: Any) -> None:
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(f"{path / INDEX_FILE} has no weight_map: the index is corrupt")
    shards: dict[str, set[str]] = {}
    for tensor, shard in weight_map.items():
        shards.setdefault(str(shard), set()).add(str(tensor))
    data_bytes = 0
    for shard, tensors in sorted(shards.items()):
        header, size = _check_shard(path, shard)
        missing = sorted(tensors - header.keys())
        if missing:
            raise CheckpointError(
                f"{path / shard} lacks tensor {missing[0]} that {INDEX_FILE} places there "
                f"({len(missing)} missing): the shard does not belong to this index"
            )
        data_bytes += size
    total = (index.get("metadata") or {}).get("total_size")
    # Llama copies disagree by a few bytes of padding, so only a shortfall is an error.
    if isinstance(total, int) and data_bytes < total:
        raise CheckpointError(
            f"shards in {path} hold {data_bytes} bytes of tensors but {INDEX_FILE} says "
            f"{total}: a shard is incomplete; {_refetch(path)}"
        )


def _check_shard(path: Path, name: str) -> tuple[dict[str, Any], int]:
    """Validate one safetensors file; return its tensor header and the bytes of tensor data."""
    file = path / name
    if not file.is_file():
        raise CheckpointError(
            f"shard {name} named in {INDEX_FILE} is missing from {path}: {_refetch(path)}"
        )
    size = file.stat().st_size
    with file.open("rb") as stream:
        head = stream.read(8)
        if size <= _POINTER_MAX_BYTES and (head + stream.read(64)).startswith(_LFS_POINTER_PREFIX):
            raise CheckpointError(
                f"{file} is a Git LFS pointer ({size} bytes), not weights: the Hub endpoint "
                f"served the pointer instead of the file; {_refetch(path)}"
            )
        if len(head) < 8:
            raise CheckpointError(f"shard {file} is {size} bytes, too short: {_refetch(path)}")
        (header_len,) = struct.unpack("<Q", head)
        if header_len > min(_HEADER_MAX_BYTES, size - 8):
            raise CheckpointError(
                f"shard {file} is corrupt (header length {header_len}, file {size} bytes): "
                f"{_refetch(path)}"
            )
        try:
            stream.seek(8)  # the pointer check above may have read past the length prefix
            header = json.loads(stream.read(header_len))
        except (UnicodeDecodeError, ValueError):
            raise CheckpointError(
                f"shard {file} is corrupt (unreadable header): {_refetch(path)}"
            ) from None
    if not isinstance(header, dict):
        raise CheckpointError(f"shard {file} is corrupt (header is not a map): {_refetch(path)}")
    header.pop("__metadata__", None)
    data_end = max(
        (int(t["data_offsets"][1]) for t in header.values() if isinstance(t, dict)), default=0
    )
    if 8 + header_len + data_end != size:
        raise CheckpointError(
            f"shard {file} is {size} bytes but its header describes "
            f"{8 + header_len + data_end}: the file is cut short or corrupt; {_refetch(path)}"
        )
    return header, data_end


def _read_json(file: Path, path: Path) -> Any:
    if not file.is_file():
        raise CheckpointError(
            f"{file.name} is missing from {path}: check the repository and revision of this expert"
        )
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise CheckpointError(f"{file} is not readable JSON ({error}): {_refetch(path)}") from None


def _refetch(path: Path) -> str:
    """The fix for a bad cached file: drop the repository's cache folder and fetch again."""
    # <cache>/models--org--name/snapshots/<commit>: the blobs sit two levels up, and deleting
    # only the snapshot would let huggingface_hub link the same bad blob back in.
    repo_folder = path.parent.parent if path.parent.name == "snapshots" else path
    return f"delete {repo_folder} and run `expert-deploy fetch` again"
