"""A private dockerd for integration tests, and the busybox stand-in image.

The daemon runs with its own data root, exec root, pidfile and socket under a temp folder
(vfs storage, no bridge, no iptables), so tests depend on no system daemon and leave nothing
behind. Images come from ``docker import`` of a tiny root filesystem: Debian's static busybox
plus links, and stand-in scripts named like the real tools.

The stand-ins never pretend to build anything real: they record their argv (one argument per
line) to ``<--output_dir>/argv.txt``, write files marked ``stand_in``, and fail on demand when
the model directory holds a file named ``STAND_IN_FAIL``.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.processes import start_group, stop_group

BUSYBOX = Path("/bin/busybox")
APPLETS = ("sh", "echo", "cat", "sleep", "printf", "mkdir", "ls", "env", "true", "false", "test")
STAND_IN_TAG = "expert-deploy/stand-in:test"

# A stand-in tool: records argv, writes what the real tool would leave, or fails on demand.
_RECORD = """
out=""
model=""
prev=""
for arg in "$@"; do
  case "$prev" in
    --output_dir) out="$arg" ;;
    --model_dir|--checkpoint_dir) model="$arg" ;;
  esac
  prev="$arg"
done
if [ -e "$model/STAND_IN_FAIL" ]; then
  echo "stand-in: loading $model"
  echo "stand-in: step 1 of 2"
  echo "RuntimeError: stand-in failure requested by $model/STAND_IN_FAIL" >&2
  exit 3
fi
mkdir -p "$out"
"""

_PYTHON3 = (
    "#!/bin/sh\n# stand-in for python3 running a TensorRT-LLM conversion script\n"
    + _RECORD
    + """printf '%s\\n' python3 "$@" > "$out/argv.txt"
echo "stand-in: converted checkpoint into $out"
echo '{"stand_in": true}' > "$out/config.json"
echo stand-in > "$out/rank0.safetensors"
"""
)

_TRTLLM_BUILD = (
    "#!/bin/sh\n# stand-in for trtllm-build; writes a marked config.json, builds no engine\n"
    + _RECORD
    + """printf '%s\\n' trtllm-build "$@" > "$out/argv.txt"
echo "stand-in: [TRT] building engine"
echo "stand-in: [TRT] done"
printf '{"version": "%s", "stand_in": true, "pretrained_config": {"mapping": {"world_size": 1, "tp_size": 1, "pp_size": 1}}}\\n' "$TRTLLM_VERSION" > "$out/config.json"
echo "stand-in engine, not a TensorRT plan" > "$out/rank0.engine"
"""
)


def stand_in_rootfs(trtllm_version: str) -> bytes:
    """A tar of the stand-in root filesystem (busybox, links, tool scripts)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:

        def add(name: str, data: bytes, mode: int = 0o755) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = mode
            tar.addfile(info, io.BytesIO(data))

        def directory(name: str) -> None:
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            info.mode = 0o1777 if name == "tmp" else 0o755
            tar.addfile(info)

        for name in ("bin", "usr", "usr/bin", "usr/local", "usr/local/bin", "tmp", "etc"):
            directory(name)
        add("bin/busybox", BUSYBOX.read_bytes())
        for applet in APPLETS:
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type = tarfile.SYMTYPE
            info.linkname = "busybox"
            tar.addfile(info)
        version = f'TRTLLM_VERSION="{trtllm_version}"\n'
        add("usr/bin/python3", _PYTHON3.replace("\nout=", f"\n{version}out=", 1).encode())
        add(
            "usr/local/bin/trtllm-build",
            _TRTLLM_BUILD.replace("\nout=", f"\n{version}out=", 1).encode(),
        )
    return buffer.getvalue()


@dataclass
class Dockerd:
    root: Path
    socket: Path
    process: subprocess.Popen[bytes]

    @property
    def base_url(self) -> str:
        return f"unix://{self.socket}"

    def client(self) -> Any:
        import docker

        return docker.DockerClient(base_url=self.base_url, timeout=60)

    def import_stand_in(self, tag: str = STAND_IN_TAG, *, trtllm_version: str = "0.11.0") -> str:
        """Import the stand-in image under ``tag`` (``docker import`` of the tiny rootfs)."""
        client = self.client()
        try:
            repository, _, version = tag.rpartition(":")
            client.api.import_image_from_data(
                stand_in_rootfs(trtllm_version), repository=repository, tag=version
            )
        finally:
            client.close()
        return tag


def dockerd_missing_reason() -> str | None:
    """Why a private dockerd cannot start here, or None when it can."""
    if shutil.which("dockerd") is None:
        return "dockerd is not installed (apt-get install docker.io)"
    if not BUSYBOX.is_file():
        return "/bin/busybox is missing (apt-get install busybox-static)"
    return None


@contextmanager
def private_dockerd(startup_timeout_s: float = 60.0) -> Iterator[Dockerd]:
    """Start a dockerd of our own; stop it and remove its folders afterwards.

    Raises:
        RuntimeError: the daemon did not answer on its socket in time (its log is included).
    """
    root = Path(tempfile.mkdtemp(prefix="ed-dockerd-"))
    socket = root / "docker.sock"
    argv = [
        "dockerd",
        "--storage-driver=vfs",
        "--bridge=none",
        "--iptables=false",
        "--ip6tables=false",
        f"--data-root={root / 'data'}",
        f"--exec-root={root / 'exec'}",
        f"--pidfile={root / 'dockerd.pid'}",
        f"--host=unix://{socket}",
    ]
    log = root / "dockerd.log"
    process = start_group(argv, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}, log_path=log)
    daemon = Dockerd(root, socket, process)
    try:
        _wait_ready(daemon, log, startup_timeout_s)
        yield daemon
    finally:
        stop_group(process, grace_s=15.0)
        _unmount_below(root)
        shutil.rmtree(root, ignore_errors=True)


def _unmount_below(root: Path) -> None:
    """Unmount what dockerd left mounted under ``root`` (its ``exec/netns/default``), deepest
    first; one such mount per test module had piled up on the host before."""
    mounts = Path("/proc/self/mounts").read_text().splitlines()
    points = [line.split()[1] for line in mounts if len(line.split()) > 1]
    for point in sorted((p for p in points if p.startswith(f"{root}/")), reverse=True):
        subprocess.run(["umount", point], capture_output=True, check=False)


def _wait_ready(daemon: Dockerd, log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if daemon.process.poll() is not None:
            break
        if daemon.socket.exists():
            try:
                client = daemon.client()
                try:
                    if client.ping():
                        return
                finally:
                    client.close()
            except Exception:  # not up yet: any error means retry
                pass
        time.sleep(0.2)
    tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
    raise RuntimeError(f"private dockerd did not start within {timeout_s:g} s:\n{tail}")
