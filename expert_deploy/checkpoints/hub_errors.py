"""The one place huggingface_hub's and its HTTP client's errors become CheckpointErrors.

Each message is one line that says what to do. None of them quotes a request's headers, so
the token cannot leak through an error message.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx2
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
    RevisionResolutionError,
)

from expert_deploy.errors import CheckpointError

DEFAULT_ENDPOINT = "https://huggingface.co"


@dataclass(frozen=True)
class HubCall:
    """What a failing call was about, for the message."""

    repo: str
    revision: str
    endpoint: str | None
    cache_dir: Path
    has_token: bool
    offline: bool

    @property
    def where(self) -> str:
        return (self.endpoint or DEFAULT_ENDPOINT).rstrip("/")


@contextmanager
def translated(call: HubCall) -> Iterator[None]:
    """Turn any known hub, network or disk error inside the block into a CheckpointError.

    Raises:
        CheckpointError: with a one-line message and the fix.
    """
    try:
        yield
    except CheckpointError:
        raise
    except Exception as error:
        message = message_for(error, call)
        if message is None:
            raise
        raise CheckpointError(message) from error


def message_for(error: BaseException, call: HubCall) -> str | None:
    """The one-line message for ``error``, or None when it is not one we know."""
    name = f"{call.repo}@{call.revision}"
    # Order matters: GatedRepoError is a RepositoryNotFoundError, and both are HfHubHTTPError.
    if isinstance(error, GatedRepoError):
        if call.has_token:
            return (
                f"{call.repo} is gated and your token has no access yet: accept the licence at "
                f"{call.where}/{call.repo} with the account the token belongs to"
            )
        return (
            f"{call.repo} is gated: accept the licence on the Hub and set HF_TOKEN "
            "or run `huggingface-cli login`"
        )
    if isinstance(error, RevisionNotFoundError):
        return (
            f"revision {call.revision!r} not found in {call.repo} on {call.where}: set "
            "model.revision to an existing branch, tag or 40-hex commit"
        )
    if isinstance(error, RepositoryNotFoundError):
        token_hint = "" if call.has_token else " (a private repository also needs HF_TOKEN)"
        return (
            f"model repository {call.repo} not found on {call.where}: check model.repo "
            f"in the inventory{token_hint}"
        )
    if call.offline and isinstance(
        error, (LocalEntryNotFoundError, RevisionResolutionError, OfflineModeIsEnabled)
    ):
        return (
            f"{name} is not (completely) in the cache {call.cache_dir} and HF_HUB_OFFLINE=1 "
            "is set: run `expert-deploy fetch` once with network access (HF_HUB_OFFLINE=0)"
        )
    if isinstance(error, (httpx2.TransportError, LocalEntryNotFoundError, OfflineModeIsEnabled)):
        return (
            f"cannot reach the Hub at {call.where} to fetch {name}: check the network, a proxy "
            "or HF_ENDPOINT; HF_HUB_OFFLINE=1 uses the local cache instead"
        )
    if isinstance(error, HfHubHTTPError):
        status = error.response.status_code
        if status == 401:
            return f"the Hub at {call.where} rejected the token (HTTP 401): set a valid HF_TOKEN"
        return f"the Hub at {call.where} answered HTTP {status} for {name}: try again later" + (
            " or check HF_ENDPOINT" if call.endpoint else ""
        )
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return (
            f"disk full while downloading {name} into {call.cache_dir}: free space there "
            "or set HF_HOME to a larger disk"
        )
    if isinstance(error, OSError) and "Consistency check failed" in str(error):
        return (
            f"a file of {name} arrived truncated (network trouble): run `expert-deploy fetch` "
            "again, completed files are kept"
        )
    return None
