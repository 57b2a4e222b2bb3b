"""The deployment state: what runs where, as ``<workdir>/state.json``, and the lock around it.

Written atomically (a temporary file in the same folder, fsync, ``os.replace``) after every
change, so a killed ``up`` leaves a state that names everything it had started. Commands that
change the deployment (``up``, ``swap``, ``down``) hold ``<workdir>/state.lock`` (``flock``)
for their whole run; a second one refuses at once instead of waiting.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from expert_deploy.atomic_file import write_text_atomically
from expert_deploy.errors import ExpertDeployError
from expert_deploy.runtime.launcher import Handle

STATE_VERSION = 1


class StateError(ExpertDeployError):
    """The state file is unreadable, or another command holds the deployment lock."""


class ComponentRecord(BaseModel):
    """One started component as the state remembers it."""

    model_config = ConfigDict(extra="forbid")

    name: str
    kind: Literal["triton", "gateway", "nginx"]
    host: str
    #: Where its ports listen (the host's address). State files from before this field
    #: default to loopback, the only address status probed then.
    address: str = "127.0.0.1"
    launcher: str
    ref: str
    log_path: str | None = None
    #: The rendered file or folder it was started from (gateway YAML, model repository, conf).
    config_path: str | None = None
    ports: dict[str, int] = Field(default_factory=dict)
    expert_id: str | None = None
    gpus: list[int] = Field(default_factory=list)
    config_hash: str
    #: Digest of the inventory values behind this component (runtime/diff.py): what `plan`
    #: compares without rendering anything.
    spec_hash: str = ""
    #: Engine or checkpoint identity of a triton component (also folded into config_hash).
    artifact_hash: str | None = None
    #: "starting" until a real inference succeeded, then "ready"; "swapping" during a swap.
    phase: Literal["starting", "ready", "draining", "swapping"] = "starting"
    started_at: float

    @property
    def handle(self) -> Handle:
        return Handle(self.launcher, self.ref, Path(self.log_path) if self.log_path else None)


class DeploymentState(BaseModel):
    """Everything ``status``, ``down``, ``swap`` and ``plan`` need to know about a deployment."""

    model_config = ConfigDict(extra="forbid")

    version: int = STATE_VERSION
    deployment: str
    inventory: str
    runtime: str
    #: Routing-table generation every gateway replica should serve; ``swap`` bumps it.
    generation: int = 1
    router_hash: str | None = None
    started_at: float
    updated_at: float
    components: dict[str, ComponentRecord] = Field(default_factory=dict)


class StateStore:
    """Reads and writes ``state.json`` under a work directory."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.path = workdir / "state.json"
        self.lock_path = workdir / "state.lock"

    def load(self) -> DeploymentState | None:
        """The recorded state, or ``None`` when nothing is deployed from this work dir.

        Raises:
            StateError: the file exists but is not a state this version understands.
        """
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        try:
            state = DeploymentState.model_validate_json(text)
        except ValidationError as error:
            raise StateError(
                f"{self.path} is not a deployment state ({error.error_count()} problem(s)); "
                "move it aside and stop leftover servers by hand"
            ) from None
        if state.version != STATE_VERSION:
            raise StateError(f"{self.path} has version {state.version}; expected {STATE_VERSION}")
        return state

    def save(self, state: DeploymentState) -> None:
        """Replace the state file atomically (readers see the old or the new one, whole)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        data = json.dumps(state.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"
        write_text_atomically(self.path, data)

    def remove(self) -> None:
        """Forget the deployment (after ``down`` stopped everything)."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    @contextlib.contextmanager
    def locked(self, command: str) -> Iterator[None]:
        """Hold the deployment lock for ``command``; refuse at once when someone else has it.

        Raises:
            StateError: another ``up``/``swap``/``down`` holds the lock (names it and its PID).
        """
        self.workdir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another command"
                raise StateError(
                    f"{holder} is changing this deployment ({self.lock_path}); "
                    "wait for it to finish, then run the command again"
                ) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"`expert-deploy {command}` (pid {os.getpid()})".encode(), 0)
            try:
                yield
            finally:
                os.ftruncate(fd, 0)
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
