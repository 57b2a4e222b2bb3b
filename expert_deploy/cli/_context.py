"""What every command needs from its environment, resolved once per invocation."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from expert_deploy.settings import Settings


def settings_for(workdir: Path | None) -> Settings:
    """Settings from the environment, with ``--workdir`` taking precedence when given."""
    settings = Settings.from_environ()
    return settings if workdir is None else replace(settings, workdir=workdir)
