"""Where the outside programs expert_deploy starts are installed on this machine."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

_SYSTEM_TRITON = Path("/opt/tritonserver/bin/tritonserver")


def pytriton_root() -> Path | None:
    """The Triton distribution inside the ``nvidia-pytriton`` wheel, when installed."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(next(iter(spec.submodule_search_locations))) / "tritonserver"
    return root if (root / "bin" / "tritonserver").is_file() else None


def find_tritonserver() -> Path | None:
    """A system Triton first (NGC image, /opt/tritonserver), else the pytriton wheel's."""
    on_path = shutil.which("tritonserver")
    if on_path:
        return Path(on_path)
    if _SYSTEM_TRITON.is_file():
        return _SYSTEM_TRITON
    root = pytriton_root()
    return root / "bin" / "tritonserver" if root else None


def find_nginx() -> Path | None:
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    return Path(found) if found else None
