"""Fetching checkpoints from the local hub stand-in with the real huggingface_hub client."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from expert_deploy.checkpoints import (
    FetchFailedError,
    fetch_all,
    fetch_checkpoint,
    resolve_revision,
)
from expert_deploy.errors import CheckpointError
from expert_deploy.inventory.models import Expert, ModelSource
from expert_deploy.settings import Secret, Settings
from tests.localhub import LocalHub, lfs_pointer, tiny_llama_files

pytestmark = pytest.mark.integration

REPO = "org/tiny-llama"
SHARD = "model-00001-of-00002.safetensors"


@pytest.fixture
def hub() -> Iterator[LocalHub]:
    with LocalHub() as server:
        yield server


def test_download_pins_the_branch_and_verifies(hub: LocalHub, tmp_path: Path) -> None:
    commit = hub.add_repo(REPO, tiny_llama_files())
    cp = fetch_checkpoint(REPO, "main", cache_dir=tmp_path, token=None, endpoint=hub.url)
    assert (cp.revision, cp.commit, cp.cached) == ("main", commit, False)
    assert cp.path == tmp_path / "models--org--tiny-llama" / "snapshots" / commit
    names = [name for name, _ in cp.files]
    assert SHARD in names and "tokenizer.json" in names and "LICENSE" in names
    assert not any(name.startswith("original/") for name in names)
    assert not hub.seen(contains="/original/")  # never even asked for
    assert ".gitattributes" not in names  # outside the allow patterns
    hashes = dict(cp.files)
    assert len(hashes[SHARD]) == 64 and len(hashes["config.json"]) == 40  # sha256 / git oid
    # The branch is recorded as huggingface_hub does, for offline runs and the planner.
    assert (cp.path.parent.parent / "refs" / "main").read_text() == commit

    # The branch moves: a new fetch follows it and pins the new commit.
    files = tiny_llama_files(extra={"README.md": b"# v2\n"})
    new_commit = hub.commit(REPO, files)
    again = fetch_checkpoint(REPO, "main", cache_dir=tmp_path, token=None, endpoint=hub.url)
    assert again.commit == new_commit != commit and not again.cached


def test_second_fetch_is_a_cache_hit(hub: LocalHub, tmp_path: Path) -> None:
    hub.add_repo(REPO, tiny_llama_files())
    first = fetch_checkpoint(REPO, "main", cache_dir=tmp_path, token=None, endpoint=hub.url)
    assert len(hub.seen("GET", "/resolve/")) == len(first.files)
    before = len(hub.requests)
    second = fetch_checkpoint(REPO, "main", cache_dir=tmp_path, token=None, endpoint=hub.url)
    new = hub.requests[before:]
    assert second.cached and second.files == first.files
    assert [(r.method, r.path) for r in new] == [
        ("GET", "/api/models/org/tiny-llama/revision/main")
    ]

    # Pinned to the commit, nothing at all is asked; offline, neither.
    before = len(hub.requests)
    fetch_checkpoint(REPO, first.commit, cache_dir=tmp_path, token=None, endpoint=hub.url)
    offline = fetch_checkpoint(
        REPO, "main", cache_dir=tmp_path, token=None, endpoint=hub.url, offline=True
    )
    assert offline.commit == first.commit and hub.requests[before:] == []


def test_experts_sharing_a_checkpoint_download_it_once(hub: LocalHub, tmp_path: Path) -> None:
    hub.add_repo(REPO, tiny_llama_files())
    hub.add_repo("org/other", tiny_llama_files(extra={"README.md": b"# other\n"}))
    experts = [
        Expert(id="e0", cluster=0, model=ModelSource(repo=REPO)),
        Expert(id="e1", cluster=1, model=ModelSource(repo=REPO, revision="main")),
        Expert(id="e2", cluster=2, model=ModelSource(repo="org/other")),
        Expert(id="e3", cluster=3, engine="synthetic"),
    ]
    settings = Settings(hf_home=tmp_path, hf_endpoint=hub.url)
    done = fetch_all(experts, settings)
    assert sorted(done) == ["e0", "e1", "e2"]
    assert done["e0"] is done["e1"] and done["e2"].repo == "org/other"
    assert len(hub.seen("GET", f"/{REPO}/resolve/")) == len(done["e0"].files)
    assert len(hub.seen("GET", f"/{REPO}/resolve/{done['e0'].commit}/{SHARD}")) == 1


def test_gated_repo_needs_a_token(hub: LocalHub, tmp_path: Path) -> None:
    hub.add_repo(REPO, tiny_llama_files(), gated=True, allowed_tokens=("hf_good",))
    with pytest.raises(CheckpointError) as caught:
        fetch_checkpoint(REPO, "main", cache_dir=tmp_path, token=None, endpoint=hub.url)
    assert str(caught.value) == (
        f"{REPO} is gated: accept the licence on the Hub and set HF_TOKEN "
        "or run `huggingface-cli login`"
    )
    with pytest.raises(CheckpointError, match="your token has no access yet"):
        resolve_revision(REPO, "main", token=Secret("hf_other"), endpoint=hub.url)
    cp = fetch_checkpoint(
        REPO, "main", cache_dir=tmp_path, token=Secret("hf_good"), endpoint=hub.url
    )
    assert cp.files and all(r.has_auth for r in hub.seen("GET", "/resolve/"))


@pytest.mark.parametrize(
    ("repo", "revision", "expected"),
    [
        (
            REPO,
            "no-such-branch",
            f"revision 'no-such-branch' not found in {REPO} on ",
        ),
        (REPO, "f" * 40, f"revision '{'f' * 40}' not found in {REPO}"),
        ("org/missing", "main", "model repository org/missing not found on "),
    ],
)
def test_missing_repos_and_revisions(
    hub: LocalHub, tmp_path: Path, repo: str, revision: str, expected: str
) -> None:
    hub.add_repo(REPO, tiny_llama_files())
    with pytest.raises(CheckpointError) as caught:
        fetch_checkpoint(repo, revision, cache_dir=tmp_path, token=None, endpoint=hub.url)
    assert expected in str(caught.value) and "\n" not in str(caught.value)


def test_lfs_pointer_shard_is_refused_and_not_recorded(hub: LocalHub, tmp_path: Path) -> None:
    files = tiny_llama_files()
    files[SHARD] = lfs_pointer(files[SHARD])
    hub.add_repo(REPO, files)
    with pytest.raises(CheckpointError, match=f"{SHARD} is a Git LFS pointer"):
        fetch_checkpoint(REPO, "main", cache_dir=tmp_path, token=None, endpoint=hub.url)
    # Not marked as done: no ref tells a later offline run this revision is usable.
    assert not (tmp_path / "models--org--tiny-llama" / "refs" / "main").exists()


def test_unreachable_hub_and_offline_without_cache(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    with pytest.raises(CheckpointError, match="HF_HUB_OFFLINE=1 uses the local cache"):
        fetch_checkpoint(REPO, "main", cache_dir=tmp_path, token=None, endpoint=closed)
    with pytest.raises(CheckpointError, match="not \\(completely\\) in the cache"):
        fetch_checkpoint(
            REPO, "main", cache_dir=tmp_path, token=None, endpoint=closed, offline=True
        )


def test_failures_keep_the_checkpoints_that_worked(hub: LocalHub, tmp_path: Path) -> None:
    hub.add_repo(REPO, tiny_llama_files())
    experts = [
        Expert(id="good", cluster=0, model=ModelSource(repo=REPO)),
        Expert(id="bad", cluster=1, model=ModelSource(repo="org/missing")),
    ]
    settings = replace(Settings(hf_home=tmp_path), hf_endpoint=hub.url)
    with pytest.raises(FetchFailedError) as caught:
        fetch_all(experts, settings)
    assert list(caught.value.completed) == ["good"]
    assert str(caught.value).startswith("expert bad: model repository org/missing not found")


def test_local_hub_serves_ranges(hub: LocalHub) -> None:
    files = tiny_llama_files()
    commit = hub.add_repo(REPO, files)
    url = f"{hub.url}/{REPO}/resolve/{commit}/{SHARD}"
    response = httpx.get(url, headers={"Range": "bytes=10-"})
    assert response.status_code == 206 and response.content == files[SHARD][10:]
    assert (
        response.headers["Content-Range"] == f"bytes 10-{len(files[SHARD]) - 1}/{len(files[SHARD])}"
    )
