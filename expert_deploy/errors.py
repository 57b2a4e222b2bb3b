"""Exceptions raised by expert_deploy, and the exit codes the CLI maps them to.

    ExpertDeployError                 base; the CLI prints ``str(error)`` as one line, exit 1
    ├── UsageError                    the command line itself is wrong (exit 2)
    ├── InventoryError (ValueError)   an inventory or toolchain file has problems; carries them all
    ├── PlanError                     the inventory is valid but cannot be placed on the hosts
    ├── CheckpointError               a checkpoint cannot be downloaded or verified
    ├── EngineBuildError              a TensorRT-LLM build failed; names the expert, command and log
    ├── RenderError                   a template could not be rendered or its output is invalid
    ├── LaunchError                   a component could not be started or stopped
    ├── CommandError                  an outside command exited non-zero; carries argv, rc, log
    └── ReadinessTimeoutError         a component did not answer a real request in its budget

Messages say what to do next: they are read by people at a terminal, not by code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_USAGE = 2


class ExpertDeployError(Exception):
    """Base of every error expert_deploy raises on purpose."""

    exit_code = EXIT_INVALID


class UsageError(ExpertDeployError):
    """The command line is wrong: an unknown name, a missing option, a bad combination."""

    exit_code = EXIT_USAGE


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a file, located as precisely as the file allows."""

    file: str
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        field = f" {self.path}:" if self.path else ""
        return f"{where}:{field} {self.message}"


class InventoryError(ExpertDeployError, ValueError):
    """An inventory (or a toolchain file it names) has one or more problems."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = tuple(problems)
        count = len(problems)
        head = f"{count} problem{'s' if count != 1 else ''} found"
        super().__init__("\n".join([head, *(str(p) for p in problems)]))


class PlanError(ExpertDeployError):
    """The inventory is valid but cannot be placed on its hosts."""


class CheckpointError(ExpertDeployError):
    """A checkpoint could not be downloaded or failed verification."""


class RenderError(ExpertDeployError):
    """A template could not be rendered, or the rendered file failed its check."""


class LaunchError(ExpertDeployError):
    """A component could not be started, stopped or inspected."""


class CommandError(ExpertDeployError):
    """An outside command exited non-zero; carries the evidence a person needs."""

    def __init__(
        self, argv: list[str], returncode: int, output_tail: str, log_path: Path | None
    ) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.output_tail = output_tail
        self.log_path = log_path
        where = f"; full log: {log_path}" if log_path else ""
        super().__init__(
            f"{argv[0]} exited with {returncode}{where}\n"
            f"command: {' '.join(argv)}\n{output_tail}".rstrip()
        )


class EngineBuildError(ExpertDeployError):
    """A TensorRT-LLM engine build failed for one expert."""

    def __init__(self, expert: str, cause: CommandError | str) -> None:
        self.expert = expert
        self.cause = cause
        super().__init__(f"engine build for expert {expert!r} failed: {cause}")


class ReadinessTimeoutError(ExpertDeployError, TimeoutError):
    """A component did not answer a real request within its start-up budget."""
