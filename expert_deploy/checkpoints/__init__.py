"""Checkpoints: download experts' weights from the Hugging Face Hub, pinned and verified.

This package is the only importer of ``huggingface_hub`` and the only place its errors are
translated (``hub_errors.py``). It is imported lazily by the CLI: ``huggingface_hub`` is an
optional dependency (the ``build`` extra).

    checkpoint.py   Checkpoint (repo, revision, resolved commit, folder, file hashes)
    hub.py          resolve_revision, fetch_checkpoint (snapshot_download at the commit)
    hub_errors.py   huggingface_hub / network / disk errors -> one-line CheckpointError
    verify.py       verify_checkpoint: config, tokenizer, shards vs. index, LFS pointers
    batch.py        fetch_all: one download per distinct checkpoint, several in parallel
    generated.py    generate_checkpoint: a small random-weight Llama made offline (`generate:`)
    progress.py     rich bars fed through huggingface_hub's tqdm_class hook
    record.py       <workdir>/checkpoints.json, written atomically, read by the lockfile
"""

from expert_deploy.checkpoints.batch import FetchFailedError, fetch_all
from expert_deploy.checkpoints.checkpoint import ALLOW_PATTERNS, IGNORE_PATTERNS, Checkpoint
from expert_deploy.checkpoints.hub import fetch_checkpoint, resolve_revision
from expert_deploy.checkpoints.progress import DownloadProgress
from expert_deploy.checkpoints.record import RECORD_FILE, read_record, write_record
from expert_deploy.checkpoints.verify import verify_checkpoint

__all__ = [
    "ALLOW_PATTERNS",
    "IGNORE_PATTERNS",
    "RECORD_FILE",
    "Checkpoint",
    "DownloadProgress",
    "FetchFailedError",
    "fetch_all",
    "fetch_checkpoint",
    "read_record",
    "resolve_revision",
    "verify_checkpoint",
    "write_record",
]
