"""Run the ``tritonserver`` shipped in the nvidia-pytriton wheel with a synthetic model repository.

Launch recipe (the same one pytriton uses, without copying the whole server):

* a backend directory holding ``python/libtriton_python.so``, ``python/triton_python_backend_utils.py``
  and ``python/triton_python_backend_stub`` (the wheel's stub for *our* Python version, from
  ``python_backend_stubs/<major.minor>/``);
* ``LD_LIBRARY_PATH`` including the wheel's ``nvidia_pytriton.libs``;
* ``PATH`` starting with this interpreter's bin directory so the stub's embedded Python finds the
  virtualenv (numpy) it runs model.py with;
* explicit ports on 127.0.0.1 and a short ``--exit-timeout-secs``; the process gets its own group.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from expert_deploy.binaries import wheel_triton_library_path
from expert_deploy.runtime.process_launcher import remove_shared_memory
from tests.support.ports import free_ports
from tests.support.processes import kill_group, start_group, stop_group, wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
SYNTHETIC_MODEL_SOURCE = REPO_ROOT / "triton_models" / "synthetic" / "1" / "model.py"


def pytriton_root() -> Path:
    """Directory of the installed ``pytriton`` package (holds ``tritonserver/``)."""
    import pytriton

    return Path(pytriton.__file__).resolve().parent


def prepare_backend_dir(target: Path) -> Path:
    """Lay out a Triton backend directory with the Python backend and our Python's stub."""
    dist = pytriton_root() / "tritonserver"
    python_dir = target / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    for name in ("libtriton_python.so", "triton_python_backend_utils.py"):
        link = python_dir / name
        if not link.exists():
            link.symlink_to(dist / "backends" / "python" / name)
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = python_dir / "triton_python_backend_stub"
    if not stub.exists():
        shutil.copy2(dist / "python_backend_stubs" / version / "triton_python_backend_stub", stub)
    return target


def tritonserver_env() -> dict[str, str]:
    """Environment for tritonserver: wheel libraries on LD_LIBRARY_PATH, our venv first on PATH."""
    env = dict(os.environ)
    libs = wheel_triton_library_path(pytriton_root() / "tritonserver")
    env["LD_LIBRARY_PATH"] = ":".join(p for p in (libs, env.get("LD_LIBRARY_PATH", "")) if p)
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    return env


def synthetic_config_pbtxt(
    *, model_name: str, ttft_ms: float, tpot_ms: float, default_tokens: int, label: str
) -> str:
    """Render config.pbtxt for the synthetic model with the TensorRT-LLM ensemble tensor names."""
    params = {
        "ttft_ms": str(ttft_ms),
        "tpot_ms": str(tpot_ms),
        "default_tokens": str(default_tokens),
        "label": label,
    }
    optional_inputs = [
        ("temperature", "TYPE_FP32", "1"),
        ("top_p", "TYPE_FP32", "1"),
        ("top_k", "TYPE_INT32", "1"),
        ("end_id", "TYPE_INT32", "1"),
        ("random_seed", "TYPE_UINT64", "1"),
        ("stop_words", "TYPE_STRING", "-1"),
    ]
    inputs = [
        '  { name: "text_input" data_type: TYPE_STRING dims: [ 1 ] }',
        '  { name: "max_tokens" data_type: TYPE_INT32 dims: [ 1 ] }',
        '  { name: "stream" data_type: TYPE_BOOL dims: [ 1 ] optional: true }',
    ] + [
        f'  {{ name: "{name}" data_type: {dtype} dims: [ {dims} ] optional: true }}'
        for name, dtype, dims in optional_inputs
    ]
    parameters = "\n".join(
        f'parameters: {{ key: "{key}" value: {{ string_value: "{value}" }} }}'
        for key, value in params.items()
    )
    return (
        f'name: "{model_name}"\nbackend: "python"\nmax_batch_size: 64\n'
        "model_transaction_policy { decoupled: true }\n"
        "input [\n" + ",\n".join(inputs) + "\n]\n"
        'output [\n  { name: "text_output" data_type: TYPE_STRING dims: [ -1 ] }\n]\n'
        "instance_group [ { count: 1 kind: KIND_CPU } ]\n" + parameters + "\n"
    )


def write_synthetic_repository(
    repository: Path,
    *,
    model_name: str = "ensemble",
    ttft_ms: float = 0.0,
    tpot_ms: float = 0.0,
    default_tokens: int = 16,
    label: str = "tok",
) -> Path:
    """Create a model repository holding the synthetic model under ``model_name``."""
    model_dir = repository / model_name
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    shutil.copy2(SYNTHETIC_MODEL_SOURCE, model_dir / "1" / "model.py")
    (model_dir / "config.pbtxt").write_text(
        synthetic_config_pbtxt(
            model_name=model_name,
            ttft_ms=ttft_ms,
            tpot_ms=tpot_ms,
            default_tokens=default_tokens,
            label=label,
        )
    )
    return repository


@dataclass
class TritonServer:
    """A running tritonserver process (its own process group) and its loopback ports."""

    repository: Path
    workdir: Path
    http_port: int = 0
    grpc_port: int = 0
    metrics_port: int = 0
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def log_path(self) -> Path:
        """File that collects the server's stdout and stderr."""
        return self.workdir / "tritonserver.log"

    def argv(self) -> list[str]:
        """The tritonserver command line."""
        binary = pytriton_root() / "tritonserver" / "bin" / "tritonserver"
        return [
            str(binary),
            f"--model-repository={self.repository}",
            f"--backend-directory={prepare_backend_dir(self.workdir / 'backends')}",
            "--http-address=127.0.0.1",
            f"--http-port={self.http_port}",
            "--grpc-address=127.0.0.1",
            f"--grpc-port={self.grpc_port}",
            "--metrics-address=127.0.0.1",
            f"--metrics-port={self.metrics_port}",
            "--allow-metrics=false",
            "--exit-timeout-secs=2",
            "--log-info=true",
            # A unique shared-memory prefix per server avoids clashes between parallel servers.
            f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}",
        ]

    @property
    def shm_prefix(self) -> str:
        """Python-backend shared-memory prefix, unique per test process and server."""
        return f"edtest{os.getpid()}_{self.grpc_port}_"

    def start(self, *, ready_timeout_s: float = 60.0) -> TritonServer:
        """Start the server and wait until ``/v2/health/ready`` answers 200."""
        if not (self.http_port and self.grpc_port and self.metrics_port):
            self.http_port, self.grpc_port, self.metrics_port = free_ports(3)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.process = start_group(self.argv(), env=tritonserver_env(), log_path=self.log_path)
        if not wait_until(self.is_ready, timeout_s=ready_timeout_s, interval_s=0.2):
            self.stop()
            raise RuntimeError(f"tritonserver not ready; log:\n{self.log_path.read_text()[-4000:]}")
        return self

    def is_ready(self) -> bool:
        """True when the server's HTTP readiness endpoint answers 200."""
        if self.process is not None and self.process.poll() is not None:
            return False
        url = f"http://127.0.0.1:{self.http_port}/v2/health/ready"
        try:
            with urllib.request.urlopen(url, timeout=1.0) as response:
                return int(response.status) == 200
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL the server's whole process group (a crash)."""
        if self.process is not None:
            kill_group(self.process)

    def stop(self) -> None:
        """Stop the server: SIGTERM, short grace, SIGKILL of the group, then its /dev/shm.

        A SIGKILLed (or crashed) Python backend leaves its regions behind; hundreds of MB had
        piled up over test runs before this removed them.
        """
        if self.process is not None:
            stop_group(self.process, grace_s=3.0)
            remove_shared_memory(self.shm_prefix)

    def log_text(self) -> str:
        """Everything the server printed so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
