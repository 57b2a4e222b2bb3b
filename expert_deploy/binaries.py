"""Where the outside programs expert_deploy starts are installed on this machine."""

from __future__ import annotations

import importlib.util
import shutil
import sysconfig
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


def pytriton_libs_dir(root: Path) -> Path:
    """Shared libraries the wheel's ``tritonserver`` links against (``nvidia_pytriton.libs``)."""
    return root.parent.parent / "nvidia_pytriton.libs"


def wheel_triton_library_path(root: Path) -> str:
    """``LD_LIBRARY_PATH`` for the wheel's tritonserver and its Python-backend stub.

    The stub links ``libpython3.X.so``; it must be this interpreter's own build, found before
    any other 3.X on the machine (e.g. a distro one beside a pyenv one), or stdlib extension
    modules such as ``_ssl`` (imported by transformers) fail on missing symbols.
    """
    own = sysconfig.get_config_var("LIBDIR") or ""
    return ":".join(p for p in (own, str(pytriton_libs_dir(root))) if p)


def python_backend_files(root: Path, python_version: str) -> dict[str, Path]:
    """Files of a Python-backend directory for ``python_version`` (``"3.11"``) from the wheel.

    The wheel ships one backend stub per Python version; the stub must match the interpreter
    whose packages model.py imports, so it is copied from ``python_backend_stubs/<version>``.
    """
    backend = root / "backends" / "python"
    return {
        "libtriton_python.so": backend / "libtriton_python.so",
        "triton_python_backend_utils.py": backend / "triton_python_backend_utils.py",
        "triton_python_backend_stub": root
        / "python_backend_stubs"
        / python_version
        / "triton_python_backend_stub",
    }


def is_wheel_triton(binary: Path) -> bool:
    """True when ``binary`` is the ``tritonserver`` of the nvidia-pytriton wheel."""
    root = pytriton_root()
    return root is not None and binary.resolve() == (root / "bin" / "tritonserver").resolve()
