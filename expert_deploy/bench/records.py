"""The per-request record every metric is computed from, and its JSONL file.

One line per request, so any metric can be recomputed later with other definitions. Times are
integer nanoseconds on one monotonic clock (``time.perf_counter_ns``, which is Linux's
``CLOCK_MONOTONIC`` and so the same clock in every worker process), relative to the run's
start instant; ``summary.json`` keeps a wall-clock anchor for aligning with server metrics.

Notation (docs/bench.md): ``a`` intended start, ``s`` actual send, ``r[j]`` arrival of the
j-th response that carried at least one token, ``n[j]`` its token count.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from expert_deploy.bench.errors import BenchError

Status = Literal["ok", "error", "incomplete"]
#: Where ``N`` came from: the server's own count, or one per token-carrying response.
TokenSource = Literal["server", "responses"]


@dataclass(slots=True)
class RequestRecord:
    """Everything observed about one request; mutable while the request runs."""

    id: str
    user: int
    worker: int
    protocol: Literal["http", "grpc"]
    prompt_id: str
    #: Cluster label of the prompt in the workload (from the file or the router).
    cluster: int | None
    a_ns: int
    #: None until the request was written (a request cancelled before that has none).
    s_ns: int | None = None
    r_ns: list[int] = field(default_factory=list)
    n: list[int] = field(default_factory=list)
    #: Responses with no token (role-only chunks, empty final responses): counted, never timed.
    empty_responses: int = 0
    #: When the stream closed (after the last token: ``[DONE]``, the final flag, EOF).
    end_ns: int | None = None
    requested_tokens: int | None = None
    input_words: int = 0
    #: What the gateway said (``x-expert-router-*`` headers); ``None`` on direct Triton runs.
    expert: str | None = None
    routed_cluster: int | None = None
    gateway_overhead_ms: float | None = None
    server_tokens: int | None = None
    status: Status = "incomplete"
    error_kind: str | None = None
    error: str | None = None

    @property
    def tokens(self) -> int:
        """``N``: the server's count when it gave one, else the sum of ``n``."""
        return self.server_tokens if self.server_tokens is not None else sum(self.n)

    @property
    def token_source(self) -> TokenSource:
        return "server" if self.server_tokens is not None else "responses"

    def fail(self, kind: str, message: str) -> None:
        """Mark the request failed; tokens already received stay (they count in windows)."""
        self.status = "error"
        self.error_kind = kind
        self.error = message[:300]

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["token_source"] = self.token_source
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RequestRecord:
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**fields)


def write_records(path: Path, records: Iterable[RequestRecord]) -> int:
    """Write one JSON object per line; returns how many were written."""
    count = 0
    with path.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record.to_json(), separators=(",", ":")) + "\n")
            count += 1
    return count


def iter_records(path: Path) -> Iterator[RequestRecord]:
    """Read a ``requests.jsonl`` file.

    Raises:
        BenchError: the file is missing or a line is not a request record.
    """
    try:
        handle = path.open(encoding="utf-8")
    except OSError as error:
        raise BenchError(f"cannot read {path}: {error.strerror}") from None
    with handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield RequestRecord.from_json(json.loads(line))
            except (ValueError, TypeError) as error:
                raise BenchError(f"{path}:{number}: not a request record ({error})") from None


def read_records(path: Path) -> list[RequestRecord]:
    return list(iter_records(path))
