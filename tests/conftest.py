"""Shared fixtures: the repository's data folders and a clean environment for every test."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _no_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees a real token or the user's Hugging Face setup."""
    for name in (
        "HF_TOKEN",
        "HUGGING_FACE_HUB_TOKEN",
        "EXPERT_DEPLOY_API_KEYS",
        "EXPERT_DEPLOY_ADMIN_TOKEN",
        "EXPERT_DEPLOY_WORKDIR",
        "EXPERT_DEPLOY_DEBUG",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def engines_dir() -> Path:
    return REPO / "engines"


@pytest.fixture
def inventories_dir() -> Path:
    return REPO / "inventories"
