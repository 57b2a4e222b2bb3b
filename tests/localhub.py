"""A stand-in for the Hugging Face Hub: a small threaded HTTP server on 127.0.0.1.

It is the only fake these tests use (the Hub is unreachable here). It answers exactly the
endpoints huggingface_hub 2.x's ``snapshot_download`` and ``HfApi.model_info`` call:

    GET  /api/models/{org}/{name}/revision/{rev}         model info: sha, siblings
    GET  /api/models/{org}/{name}/tree/{rev}[/{path}]    file listing (size, oid, lfs)
    HEAD /{org}/{name}/resolve/{rev}/{file}              X-Repo-Commit, ETag, Content-Length
    GET  /{org}/{name}/resolve/{rev}/{file}              the bytes; honours Range

Errors carry the ``X-Error-Code`` header huggingface_hub maps to its exceptions:
RepoNotFound (404), RevisionNotFound (404), EntryNotFound (404), GatedRepo (401 without a
token, 403 with one that is not on the repo's list). Every request is recorded (method, path,
whether an Authorization header came) so tests can count what was downloaded.

Files named ``*.safetensors`` are served as LFS files (ETag = sha256, as the Hub does);
others as git files (ETag = git blob id). A ``*.safetensors`` file whose content is a Git LFS
pointer is served as a plain git file, as a mirror that forgot LFS would.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import unquote, urlsplit

LFS_POINTER_PREFIX = b"version https://git-lfs"


def git_blob_id(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def is_lfs(path: str, content: bytes) -> bool:
    return path.endswith(".safetensors") and not content.startswith(LFS_POINTER_PREFIX)


def etag_of(path: str, content: bytes) -> str:
    return hashlib.sha256(content).hexdigest() if is_lfs(path, content) else git_blob_id(content)


@dataclass
class HubRepo:
    repo_id: str
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)
    gated: bool = False
    allowed_tokens: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Seen:
    """One request as the hub saw it; the token itself is deliberately not kept."""

    method: str
    path: str
    has_auth: bool
    range: str | None


class LocalHub:
    """Start with ``with LocalHub() as hub:``; point huggingface_hub at ``hub.url``."""

    def __init__(self) -> None:
        self.repos: dict[str, HubRepo] = {}
        self.requests: list[Seen] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> LocalHub:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    # -- building repositories -------------------------------------------------------------

    def add_repo(
        self,
        repo_id: str,
        files: dict[str, bytes],
        *,
        branch: str = "main",
        gated: bool = False,
        allowed_tokens: tuple[str, ...] = (),
    ) -> str:
        """Create ``repo_id`` with one commit on ``branch``; return the commit id."""
        self.repos[repo_id] = HubRepo(
            repo_id, gated=gated, allowed_tokens=frozenset(allowed_tokens)
        )
        return self.commit(repo_id, files, branch=branch)

    def commit(self, repo_id: str, files: dict[str, bytes], *, branch: str = "main") -> str:
        """Add a commit holding exactly ``files`` and move ``branch`` to it."""
        repo = self.repos[repo_id]
        digest = hashlib.sha1(f"{repo_id}:{len(repo.commits)}".encode())
        for name in sorted(files):
            digest.update(name.encode() + b"\0" + etag_of(name, files[name]).encode())
        sha = digest.hexdigest()
        repo.commits[sha] = dict(files)
        repo.refs[branch] = sha
        return sha

    def tag(self, repo_id: str, name: str, commit: str) -> None:
        self.repos[repo_id].refs[name] = commit

    # -- what tests look at ----------------------------------------------------------------

    def seen(self, method: str | None = None, contains: str = "") -> list[Seen]:
        with self._lock:
            return [
                r
                for r in self.requests
                if (method is None or r.method == method) and contains in r.path
            ]

    def record(self, seen: Seen) -> None:
        with self._lock:
            self.requests.append(seen)


class _HubError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _handler_for(hub: LocalHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as huggingface_hub's pooled client expects

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: requests are recorded in hub.requests instead."""

        def do_GET(self) -> None:
            self._serve(head=False)

        def do_HEAD(self) -> None:
            self._serve(head=True)

        def _serve(self, *, head: bool) -> None:
            auth = self.headers.get("Authorization")
            hub.record(Seen(self.command, self.path, auth is not None, self.headers.get("Range")))
            path = urlsplit(self.path).path
            token = auth.removeprefix("Bearer ").strip() if auth else None
            try:
                parts = path.strip("/").split("/")
                if parts[:2] == ["api", "models"] and len(parts) >= 6:
                    repo = self._repo(f"{parts[2]}/{parts[3]}", token)
                    commit, files = self._revision(repo, unquote(parts[5]))
                    if parts[4] == "revision":
                        self._json(_model_info(repo, commit, files), head)
                        return
                    if parts[4] == "tree":
                        under = unquote("/".join(parts[6:]))
                        self._json(_tree(files, under), head)
                        return
                elif len(parts) >= 5 and parts[2] == "resolve":
                    repo = self._repo(f"{parts[0]}/{parts[1]}", token)
                    commit, files = self._revision(repo, unquote(parts[3]))
                    name = unquote("/".join(parts[4:]))
                    if name not in files:
                        raise _HubError(404, "EntryNotFound", f"{name} not found")
                    self._file(commit, name, files[name], head)
                    return
                raise _HubError(404, "", "no such endpoint")
            except _HubError as error:
                self._error(error, head)

        def _repo(self, repo_id: str, token: str | None) -> HubRepo:
            repo = hub.repos.get(repo_id)
            if repo is None:
                raise _HubError(404, "RepoNotFound", "Repository not found")
            if repo.gated and token not in repo.allowed_tokens:
                status = 401 if token is None else 403
                raise _HubError(status, "GatedRepo", f"Access to model {repo_id} is restricted.")
            return repo

        def _revision(self, repo: HubRepo, revision: str) -> tuple[str, dict[str, bytes]]:
            commit = repo.refs.get(revision, revision)
            if commit not in repo.commits:
                raise _HubError(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            return commit, repo.commits[commit]

        def _json(self, data: Any, head: bool) -> None:
            body = json.dumps(data).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def _file(self, commit: str, name: str, content: bytes, head: bool) -> None:
            start, end = 0, len(content)
            wanted = self.headers.get("Range")
            if wanted and wanted.startswith("bytes=") and not head:
                first, _, last = wanted.removeprefix("bytes=").partition("-")
                start = int(first or 0)
                end = int(last) + 1 if last else len(content)
            partial = (start, end) != (0, len(content))
            self.send_response(206 if partial else 200)
            self.send_header("X-Repo-Commit", commit)
            self.send_header("ETag", f'"{etag_of(name, content)}"')
            self.send_header("Accept-Ranges", "bytes")
            if partial:
                self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(content)}")
            self.send_header("Content-Length", str(end - start))
            self.end_headers()
            if not head:
                self.wfile.write(content[start:end])

        def _error(self, error: _HubError, head: bool) -> None:
            body = json.dumps({"error": error.message}).encode()
            self.send_response(error.status)
            if error.code:
                self.send_header("X-Error-Code", error.code)
            self.send_header("X-Error-Message", error.message)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                self.wfile.write(body)

    return Handler


def _model_info(repo: HubRepo, commit: str, files: dict[str, bytes]) -> dict[str, Any]:
    return {
        "id": repo.repo_id,
        "sha": commit,
        "private": False,
        "gated": "manual" if repo.gated else False,
        "siblings": [{"rfilename": name} for name in sorted(files)],
    }


def _tree(files: dict[str, bytes], under: str) -> list[dict[str, Any]]:
    prefix = f"{under}/" if under else ""
    entries: list[dict[str, Any]] = []
    folders: set[str] = set()
    for name in sorted(files):
        if not name.startswith(prefix):
            continue
        content = files[name]
        parts = name.split("/")
        folders.update("/".join(parts[:i]) for i in range(1, len(parts)))
        entry: dict[str, Any] = {
            "type": "file",
            "path": name,
            "size": len(content),
            "oid": git_blob_id(content),
        }
        if is_lfs(name, content):
            entry["lfs"] = {
                "oid": hashlib.sha256(content).hexdigest(),
                "size": len(content),
                "pointerSize": 134,
            }
        entries.append(entry)
    for folder in sorted(folders):
        if folder.startswith(prefix):
            entries.append(
                {"type": "directory", "path": folder, "oid": git_blob_id(b""), "size": 0}
            )
    return entries


# -- tiny checkpoints ----------------------------------------------------------------------

TINY_LLAMA_CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 8,
    "intermediate_size": 16,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "num_hidden_layers": 1,
    "vocab_size": 16,
    "max_position_embeddings": 64,
    "rms_norm_eps": 1e-5,
    "rope_theta": 500000.0,
    "torch_dtype": "bfloat16",
}


def safetensors_bytes(tensors: dict[str, tuple[int, ...]], fill: int = 1) -> bytes:
    """A valid safetensors file of BF16 tensors with the given shapes (written by hand)."""
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape in tensors.items():
        count = 1
        for dim in shape:
            count *= dim
        header[name] = {
            "dtype": "BF16",
            "shape": list(shape),
            "data_offsets": [offset, offset + 2 * count],
        }
        offset += 2 * count
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the format pads the header to 8 bytes
    return len(raw).to_bytes(8, "little") + raw + bytes([fill]) * offset


def lfs_pointer(content: bytes) -> bytes:
    """The Git LFS pointer file that stands for ``content`` in a clone without LFS."""
    return (
        b"version https://git-lfs.github.com/spec/v1\n"
        + f"oid sha256:{hashlib.sha256(content).hexdigest()}\nsize {len(content)}\n".encode()
    )


def tiny_llama_files(*, extra: dict[str, bytes] | None = None) -> dict[str, bytes]:
    """A two-shard tiny Llama checkpoint, plus an ``original/`` folder that must not download."""
    shard1 = {"model.embed_tokens.weight": (16, 8), "model.layers.0.input_layernorm.weight": (8,)}
    shard2 = {"model.norm.weight": (8,), "lm_head.weight": (16, 8)}
    names = ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors")
    weight_map = {t: names[0] for t in shard1} | {t: names[1] for t in shard2}
    total = 2 * (16 * 8 + 8 + 8 + 16 * 8)
    files = {
        "config.json": json.dumps(TINY_LLAMA_CONFIG).encode(),
        "generation_config.json": b'{"eos_token_id": [1, 2]}',
        "model.safetensors.index.json": json.dumps(
            {"metadata": {"total_size": total}, "weight_map": weight_map}
        ).encode(),
        names[0]: safetensors_bytes(shard1, fill=1),
        names[1]: safetensors_bytes(shard2, fill=2),
        "tokenizer.json": b'{"version": "1.0", "model": {"type": "BPE", "vocab": {}}}',
        "tokenizer_config.json": b'{"model_max_length": 64}',
        "special_tokens_map.json": b"{}",
        "README.md": b"# tiny llama\n",
        "LICENSE": b"test licence\n",
        ".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n",
        "original/consolidated.00.pth": b"\0" * 4096,
        "original/params.json": b"{}",
        "original/tokenizer.model": b"\0" * 64,
    }
    files.update(extra or {})
    return files
