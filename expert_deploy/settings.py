"""Settings read once from the environment, and where the data folders live.

Nothing else in expert_deploy reads ``os.environ``: commands build a :class:`Settings` in
``main()`` and pass it down, so tests can hand in any environment they like.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

#: The work directory when neither ``--workdir`` nor ``EXPERT_DEPLOY_WORKDIR`` is given:
#: a hidden folder in the current directory, like ``.terraform``.
DEFAULT_WORKDIR = Path(".expert-deploy")

_REPO_ROOT = Path(__file__).resolve().parent.parent


def data_root() -> Path:
    """The folder holding engines/, templates/, inventories/, playbooks/ and triton_models/.

    From a checkout (or an editable install) that is the repository root; a wheel installs
    them under ``<prefix>/share/expert-deploy``.
    """
    if (_REPO_ROOT / "engines").is_dir():
        return _REPO_ROOT
    import sys

    return Path(sys.prefix) / "share" / "expert-deploy"


@dataclass(frozen=True)
class Settings:
    """Everything expert_deploy takes from the environment."""

    workdir: Path = DEFAULT_WORKDIR
    debug: bool = False
    data_dir: Path = field(default_factory=data_root)
    hf_home: Path | None = None
    hf_token_present: bool = False

    @property
    def engines_dir(self) -> Path:
        return self.data_dir / "engines"

    @property
    def inventories_dir(self) -> Path:
        return self.data_dir / "inventories"

    @property
    def templates_dir(self) -> Path:
        return self.data_dir / "templates"

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        hf_home = Path(env["HF_HOME"]) if env.get("HF_HOME") else None
        token_file = (hf_home or Path.home() / ".cache" / "huggingface") / "token"
        return cls(
            workdir=Path(env.get("EXPERT_DEPLOY_WORKDIR") or DEFAULT_WORKDIR),
            debug=env.get("EXPERT_DEPLOY_DEBUG", "") not in ("", "0", "false"),
            data_dir=Path(env["EXPERT_DEPLOY_DATA_DIR"])
            if env.get("EXPERT_DEPLOY_DATA_DIR")
            else data_root(),
            hf_home=hf_home,
            # Only whether a token exists is kept here: the value is read where it is used.
            hf_token_present=bool(env.get("HF_TOKEN")) or token_file.is_file(),
        )
