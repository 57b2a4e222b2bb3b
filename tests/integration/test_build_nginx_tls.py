"""``build`` of an inventory with ``nginx.tls`` and ``nginx.grpc_listen_port``: the real
``nginx -t`` accepts the rendered config with a real certificate and key."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from expert_deploy.cli import main

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
OPENSSL = shutil.which("openssl")


@pytest.mark.skipif(NGINX is None, reason="nginx binary not installed (apt nginx-light)")
@pytest.mark.skipif(OPENSSL is None, reason="openssl binary not installed")
def test_nginx_t_accepts_tls_and_grpc_port_from_the_inventory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert NGINX is not None and OPENSSL is not None
    folder = tmp_path / "inv"
    (folder / "tls").mkdir(parents=True)
    subprocess.run(
        [OPENSSL, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-keyout", str(folder / "tls" / "key.pem"),
         "-out", str(folder / "tls" / "cert.pem")],
        capture_output=True, check=True, timeout=60,
    )  # fmt: skip
    data = {
        "name": "tls",
        "hosts": [{"name": "localhost", "address": "127.0.0.1"}],
        "defaults": {"engine": "synthetic"},
        "experts": [{"id": "a", "cluster": 0}, {"id": "b", "cluster": 1}],
        "router": {
            "source": {"kind": "fit", "corpus": str(REPO / "inventories/data/local-prompts.jsonl")},
            "k": 2,
        },
        "gateway": {"replicas": 2},
        "nginx": {
            "listen_port": 18443,
            "grpc_listen_port": 18500,
            "tls": {"certificate": "tls/cert.pem", "certificate_key": "tls/key.pem"},
        },
    }
    path = folder / "tls.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    workdir = tmp_path / "work"
    assert main(["build", "-i", str(path), "-w", str(workdir)]) == 0, capsys.readouterr().err
    conf = workdir / "rendered" / "nginx" / "nginx.conf"
    text = conf.read_text()
    assert "listen 127.0.0.1:18443 ssl;" in text and "listen 127.0.0.1:18500 ssl http2;" in text
    assert "PRIVATE KEY" not in text
    prefix = workdir.resolve() / "run" / "nginx"
    (prefix / "logs").mkdir(parents=True)
    (prefix / "temp").mkdir()
    checked = subprocess.run(
        [NGINX, "-t", "-c", str(conf), "-p", f"{prefix}/"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr
    vars_text = (workdir / "rendered" / "ansible" / "vars.yaml").read_text()
    assert "18500" in vars_text  # the runtime learns the same gRPC port
