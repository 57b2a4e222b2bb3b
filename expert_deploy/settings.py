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


def _read_token_file(path: Path) -> str:
    """The token `huggingface-cli login` saved, or "" when there is none or it is unreadable."""
    try:
        return path.read_text().strip() if path.is_file() else ""
    except OSError:
        return ""


class Secret:
    """A credential whose value only :meth:`reveal` gives out; repr and str hide it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class Settings:
    """Everything expert_deploy takes from the environment."""

    workdir: Path = DEFAULT_WORKDIR
    debug: bool = False
    data_dir: Path = field(default_factory=data_root)
    hf_home: Path | None = None
    hf_token_present: bool = False
    #: ``HF_ENDPOINT``: a Hub mirror; ``None`` means huggingface.co.
    hf_endpoint: str | None = None
    #: ``HF_HUB_OFFLINE``: use only what is already in the Hugging Face cache.
    hf_hub_offline: bool = False
    #: ``HF_TOKEN`` or the token file; kept out of repr so no log or traceback shows it.
    hf_token: Secret | None = field(default=None, repr=False)
    #: ``DOCKER_HOST``: where dockerd listens; ``None`` means the default unix socket.
    docker_host: str | None = None
    #: The whole environment, kept for the secrets an inventory names by variable (gateway API
    #: keys, admin token) and for children's environments; out of repr like the token.
    environ: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    def secret(self, name: str | None) -> Secret | None:
        """The value of the environment variable ``name`` as a Secret, or None when unset."""
        value = self.environ.get(name, "").strip() if name else ""
        return Secret(value) if value else None

    @property
    def hf_cache_dir(self) -> Path:
        """The Hugging Face hub cache: ``$HF_HOME/hub`` (as huggingface_hub itself lays it out)."""
        return (self.hf_home or Path.home() / ".cache" / "huggingface") / "hub"

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
        token = env.get("HF_TOKEN") or _read_token_file(token_file)
        return cls(
            workdir=Path(env.get("EXPERT_DEPLOY_WORKDIR") or DEFAULT_WORKDIR),
            debug=env.get("EXPERT_DEPLOY_DEBUG", "") not in ("", "0", "false"),
            data_dir=Path(env["EXPERT_DEPLOY_DATA_DIR"])
            if env.get("EXPERT_DEPLOY_DATA_DIR")
            else data_root(),
            hf_home=hf_home,
            # doctor reports only whether a token exists; the value travels as a Secret.
            hf_token_present=bool(env.get("HF_TOKEN")) or token_file.is_file(),
            hf_endpoint=env.get("HF_ENDPOINT") or None,
            hf_hub_offline=env.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"),
            hf_token=Secret(token) if token else None,
            docker_host=env.get("DOCKER_HOST") or None,
            environ=dict(env),
        )
