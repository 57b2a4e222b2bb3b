"""The rendered nginx.conf passes the real ``nginx -t`` with every path under the workdir."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from expert_deploy.render.nginx import NginxTls
from tests.unit.render_support import load, render

pytestmark = pytest.mark.integration

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
needs_nginx = pytest.mark.skipif(
    NGINX is None, reason="nginx binary not installed (apt nginx-light)"
)


def _nginx_test(conf: Path, workdir: Path) -> subprocess.CompletedProcess[str]:
    prefix = workdir.resolve() / "run" / "nginx"
    (prefix / "logs").mkdir(parents=True, exist_ok=True)
    (prefix / "temp").mkdir(parents=True, exist_ok=True)
    assert NGINX is not None
    return subprocess.run(
        [NGINX, "-t", "-c", str(conf), "-p", f"{prefix}/"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@needs_nginx
@pytest.mark.parametrize("inventory", ["local", "dgx"])
def test_nginx_t_accepts_rendered_conf(tmp_path: Path, inventory: str) -> None:
    result = render(inventory, tmp_path)
    conf = result.root / "nginx" / "nginx.conf"
    checked = _nginx_test(conf, tmp_path)
    assert checked.returncode == 0, checked.stderr
    text = conf.read_text()
    for directive in (
        "proxy_buffering off;",
        "proxy_http_version 1.1;",
        'proxy_set_header Connection "";',
        "proxy_read_timeout 3600s;",
        "grpc_pass grpc://gateway_grpc;",
        "keepalive 64;",
    ):
        assert directive in text


@needs_nginx
def test_nginx_t_accepts_tls_and_least_conn(tmp_path: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl binary not installed; cannot make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
        capture_output=True, check=True, timeout=60,
    )  # fmt: skip
    inventory = (Path(__file__).resolve().parents[2] / "inventories" / "local.yaml").read_text()
    path = tmp_path / "inv" / "local-lc.yaml"
    path.parent.mkdir()
    (path.parent / "data").symlink_to(Path(__file__).resolve().parents[2] / "inventories" / "data")
    path.write_text(
        inventory.replace("listen_port: 8080", "listen_port: 8080\n  strategy: least_conn")
    )
    from dataclasses import replace

    from expert_deploy.render import render_deployment
    from expert_deploy.settings import Settings
    from tests.unit.render_support import REPO

    loaded, plan = load(path)
    settings = replace(Settings(data_dir=REPO), workdir=tmp_path / "work")
    result = render_deployment(
        loaded, plan, settings, router_dir=tmp_path / "router", nginx_tls=NginxTls(cert, key)
    )
    conf = result.root / "nginx" / "nginx.conf"
    text = conf.read_text()
    assert "least_conn;" in text
    assert f"ssl_certificate {cert};" in text
    assert "BEGIN" not in text  # paths only, never key material
    checked = _nginx_test(conf, tmp_path / "work")
    assert checked.returncode == 0, checked.stderr
