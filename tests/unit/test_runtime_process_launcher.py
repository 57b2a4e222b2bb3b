"""The process launcher's commands and environments, process identity, and launcher choice.

No process is started here (unit tier); starting and stopping real servers is in
tests/integration/test_runtime_process.py.
"""

from __future__ import annotations

import io
import os
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from expert_deploy import binaries, proc
from expert_deploy.errors import LaunchError, UsageError
from expert_deploy.runtime.gateway_auth import GatewayAuth, read_gateway_auth
from expert_deploy.runtime.launcher import Handle
from expert_deploy.runtime.launchers import launcher_for
from expert_deploy.runtime.process_launcher import MARKER_ENV, ProcessLauncher, child_environment
from expert_deploy.settings import Settings
from tests.unit.runtime_support import component

ENV = {
    "PATH": "/usr/bin",
    "HOME": "/root",
    "HF_TOKEN": "hf_secret",
    "EXPERT_DEPLOY_API_KEYS": "k1,k2",
    "EXPERT_DEPLOY_ADMIN_TOKEN": "adm",
    "MY_GATEWAY_KEYS": "k3",
    "AWS_SECRET": "s",
}


def _settings(tmp_path: Path, environ: dict[str, str] | None = None) -> Settings:
    return replace(Settings(), workdir=tmp_path / "work", environ=environ or dict(ENV))


def test_children_get_no_credentials_unless_their_config_names_them(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    plain = child_environment(settings)
    assert plain == {"PATH": "/usr/bin", "HOME": "/root"}
    kept = child_environment(settings, keep=("MY_GATEWAY_KEYS", "EXPERT_DEPLOY_ADMIN_TOKEN", None))
    assert kept["MY_GATEWAY_KEYS"] == "k3" and kept["EXPERT_DEPLOY_ADMIN_TOKEN"] == "adm"
    assert "HF_TOKEN" not in kept and "EXPERT_DEPLOY_API_KEYS" not in kept


@pytest.mark.skipif(binaries.pytriton_root() is None, reason="needs the nvidia-pytriton wheel")
def test_triton_command_uses_the_wheel_recipe(tmp_path: Path) -> None:
    launcher = ProcessLauncher(_settings(tmp_path))
    server = replace(
        component("triton/e0-0", "triton"),
        ports={"http": 18000, "grpc": 18001, "metrics": 18002},
        device="gpu",
        gpus=(2, 3),
    )
    argv, env = launcher.command(server)
    assert argv[0].endswith("tritonserver")
    assert f"--model-repository={server.config_path}" in argv
    assert {"--http-port=18000", "--grpc-port=18001", "--metrics-port=18002"} <= set(argv)
    backend = [a for a in argv if a.startswith("--backend-directory=")]
    assert len(backend) == 1
    python_dir = Path(backend[0].split("=", 1)[1]) / "python"
    assert (python_dir / "triton_python_backend_stub").is_file()
    assert (python_dir / "libtriton_python.so").is_symlink()
    assert "nvidia_pytriton.libs" in env["LD_LIBRARY_PATH"]
    assert env["PATH"].split(":")[0] == str(Path(sys.executable).parent)
    assert env["CUDA_VISIBLE_DEVICES"] == "2,3"
    assert "HF_TOKEN" not in env and "EXPERT_DEPLOY_API_KEYS" not in env
    prefix = next(a for a in argv if "shm-region-prefix-name=" in a)
    other = ProcessLauncher(_settings(tmp_path / "elsewhere")).command(server)[0]
    assert prefix not in other, "two work dirs must not share shared-memory names"


def test_gateway_command_passes_only_the_variables_its_config_names(tmp_path: Path) -> None:
    config = tmp_path / "gateway-0.yaml"
    config.write_text("auth:\n  api_keys_env: MY_GATEWAY_KEYS\n  admin_token_env: null\n")
    launcher = ProcessLauncher(_settings(tmp_path))
    argv, env = launcher.command(replace(component("gateway/0", "gateway"), config_path=config))
    assert argv[:5] == [sys.executable, "-m", "router_service", "--config", str(config)]
    assert env["MY_GATEWAY_KEYS"] == "k3"
    assert "EXPERT_DEPLOY_ADMIN_TOKEN" not in env and "HF_TOKEN" not in env


@pytest.mark.skipif(binaries.find_nginx() is None, reason="needs nginx")
def test_nginx_runs_in_the_foreground_under_the_workdir(tmp_path: Path) -> None:
    conf = tmp_path / "nginx.conf"
    conf.write_text("events {}\n")
    launcher = ProcessLauncher(_settings(tmp_path))
    argv, _ = launcher.command(replace(component("nginx", "nginx"), config_path=conf))
    prefix = (tmp_path / "work" / "run" / "nginx").resolve()
    assert argv[1:5] == ["-c", str(conf), "-p", f"{prefix}/"]
    assert argv[-2:] == ["-g", "daemon off;"]
    assert (prefix / "logs").is_dir() and (prefix / "temp").is_dir()
    conf.write_text("daemon off;\nevents {}\n")
    assert "-g" not in launcher.command(replace(component("nginx", "nginx"), config_path=conf))[0]


def test_a_ref_names_a_process_by_pid_and_start_time(tmp_path: Path) -> None:
    me = proc.ProcessIdentity(os.getpid(), proc.start_ticks(os.getpid()) or -1)
    assert proc.is_alive(me)
    assert proc.ProcessIdentity.parse(me.ref) == me
    # Same PID, another start time: a recycled PID is someone else, never "alive" for us.
    assert not proc.is_alive(replace(me, start_ticks=me.start_ticks + 1))
    launcher = ProcessLauncher(_settings(tmp_path))
    assert launcher.status(Handle("process", me.ref)).liveness == "running"
    assert launcher.status(Handle("process", f"{os.getpid()}:1")).liveness == "exited"
    with pytest.raises(LaunchError, match="not <pid>:<start ticks>"):
        launcher.status(Handle("process", "container-abc"))


def test_stopping_a_recycled_pid_signals_nothing() -> None:
    # Our own PID with a wrong start time: stop_group must not SIGTERM this test process.
    me = proc.ProcessIdentity(os.getpid(), (proc.start_ticks(os.getpid()) or 0) + 1)
    assert proc.stop_group(me, grace_s=0.1)
    assert proc.is_alive(replace(me, start_ticks=me.start_ticks - 1))


def test_tail_lines(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text("".join(f"line {i}\n" for i in range(5000)))
    assert proc.tail_lines(log, 3) == "line 4997\nline 4998\nline 4999"
    assert proc.tail_lines(tmp_path / "missing.log", 3) == ""


def test_no_unrecorded_server_is_found_for_a_fresh_workdir(tmp_path: Path) -> None:
    assert proc.leaders_with_env(MARKER_ENV, f"{tmp_path}::", prefix=True) == []


def test_down_removes_this_workdirs_leftover_shared_memory_only(tmp_path: Path) -> None:
    """Regions a SIGKILLed Python backend left behind go; another work dir's stay."""
    server = replace(component("triton/e0-0", "triton"), ports={"http": 1, "grpc": 2, "metrics": 3})

    def region_prefix(workdir: Path) -> str:
        argv = ProcessLauncher(_settings(workdir)).command(server)[0]
        flag = next(a for a in argv if "shm-region-prefix-name=" in a)
        return flag.rsplit("=", 1)[1]

    ours = Path("/dev/shm") / (region_prefix(tmp_path / "ours") + "leftover")
    theirs = Path("/dev/shm") / (region_prefix(tmp_path / "theirs") + "live")
    try:
        ours.write_bytes(b"x")
        theirs.write_bytes(b"x")
        assert ProcessLauncher(_settings(tmp_path / "ours")).stop_unrecorded() == 0
        assert not ours.exists()
        assert theirs.exists()
    finally:
        ours.unlink(missing_ok=True)
        theirs.unlink(missing_ok=True)


def test_gateway_auth_reads_names_and_finds_the_first_key(tmp_path: Path) -> None:
    keys = tmp_path / "keys.txt"
    keys.write_text("\nfile-key-1\nfile-key-2\n")
    config = tmp_path / "g.yaml"
    config.write_text(f"auth:\n  api_keys_env: NOPE\n  api_keys_file: {keys}\n")
    auth = read_gateway_auth(config)
    assert auth == GatewayAuth("NOPE", keys, None)
    key = auth.api_key(_settings(tmp_path))
    assert key is not None and key.reveal() == "file-key-1"
    env_auth = GatewayAuth("EXPERT_DEPLOY_API_KEYS")
    env_key = env_auth.api_key(_settings(tmp_path))
    assert env_key is not None and env_key.reveal() == "k1"
    assert read_gateway_auth(tmp_path / "missing.yaml") == GatewayAuth()


def test_launcher_for_names_the_available_runtimes(tmp_path: Path) -> None:
    assert isinstance(launcher_for("process", _settings(tmp_path)), ProcessLauncher)
    with pytest.raises(UsageError, match="runtime 'kubernetes' has no launcher here; available: "):
        launcher_for("kubernetes", _settings(tmp_path))


def test_up_skips_nginx_with_a_warning_when_it_is_not_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rich.console import Console

    from expert_deploy.cli.runtime import _without_missing_nginx
    from tests.unit.runtime_support import deployment

    monkeypatch.setattr(binaries, "find_nginx", lambda: None)
    launcher = ProcessLauncher(_settings(tmp_path))
    out = io.StringIO()
    console = Console(file=out, width=200)
    kept = _without_missing_nginx(launcher, deployment(), console)
    assert [c.name for c in kept] == [c.name for c in deployment()][:-1]
    assert "warning: nginx: nginx not found; install NGINX" in out.getvalue()
    assert "clients use a gateway replica directly" in out.getvalue()
    with pytest.raises(LaunchError, match="nginx: nginx not found"):
        launcher.command(deployment()[-1])
