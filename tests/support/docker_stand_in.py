"""The stand-in container setup for the docker launcher (tests and scripts/bench_docker_launch.py).

The NGC Triton image, the gateway image and the NGINX image cannot exist here, so every
container runs the busybox stand-in image (tests/dockerd.py) with read-only bind mounts of this
machine's /usr, /lib, the Python installation, the virtualenv that holds the nvidia-pytriton
wheel and the checkout. What runs inside is real: the wheel's ``tritonserver``, ``python -m
router_service`` and Debian's ``nginx``.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path

from expert_deploy.binaries import wheel_triton_library_path
from expert_deploy.runtime.components import ComponentKind
from expert_deploy.runtime.container_spec import ContainerProfile, DockerOptions, Mount
from tests.dockerd import STAND_IN_TAG
from tests.support.triton import prepare_backend_dir, pytriton_root

REPO = Path(__file__).resolve().parents[2]
# This sandbox's dockerd lacks CAP_SYS_RESOURCE, so runc refuses memlock=-1 ("error setting
# rlimit type 8"); the stand-in keeps the host's hard limit. Production keeps -1
# (tests/unit/test_docker_launcher.py checks it).
MEMLOCK = resource.getrlimit(resource.RLIMIT_MEMLOCK)[1]
# busybox's wget is the stand-in image's HTTP check (the NGC image has curl).
WGET = ("/bin/busybox", "wget", "-q", "-O", "/dev/null")


def stand_in_mounts(backend: Path) -> list[Mount]:
    """What the stand-in image lacks: this machine's libraries, Python, virtualenv, checkout."""
    paths = [Path("/usr"), Path("/lib"), Path("/lib64"), Path(sys.base_prefix), Path(sys.prefix)]
    paths += [REPO, backend]  # the editable install's sources; Triton's backend directory
    mounts = [Mount(p.resolve(), str(p)) for p in paths if p.exists()]
    # NGINX, started as root, runs its workers as "nobody".
    mounts += [Mount(Path(f), f) for f in ("/etc/passwd", "/etc/group")]
    return mounts


def stand_in_profiles(backend: Path) -> dict[ComponentKind, ContainerProfile]:
    """Every kind on the stand-in image, running this machine's binaries."""
    libs = wheel_triton_library_path(pytriton_root() / "tritonserver")
    path = f"{Path(sys.executable).parent}:/usr/sbin:/usr/bin:/bin"
    tritonserver = pytriton_root() / "tritonserver" / "bin" / "tritonserver"
    return {
        "triton": ContainerProfile(
            STAND_IN_TAG,
            (str(tritonserver), f"--backend-directory={backend}"),
            WGET,
            {"LD_LIBRARY_PATH": libs, "PATH": path},
        ),
        "gateway": ContainerProfile(STAND_IN_TAG, (sys.executable,), WGET, {"PATH": path}),
        "nginx": ContainerProfile(STAND_IN_TAG, ("/usr/sbin/nginx",), WGET),
    }


def stand_in_setup(
    scratch: Path,
) -> tuple[dict[ComponentKind, ContainerProfile], DockerOptions, list[Mount]]:
    """Profiles, options (host memlock, 1 s health interval) and mounts for the stand-in."""
    backend = prepare_backend_dir(scratch / "backends")
    options = DockerOptions(memlock_bytes=MEMLOCK, health_interval_s=1.0)
    return stand_in_profiles(backend), options, stand_in_mounts(backend)
