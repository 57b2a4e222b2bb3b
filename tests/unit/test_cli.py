"""The command line: exit codes, one-line errors, JSON output, and a light import."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from expert_deploy.cli import main
from tests.unit.inventory_factory import gpu_inventory, write


def test_validate_ok_and_invalid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "--inventory", "local"]) == 0
    assert "valid — 8 experts" in capsys.readouterr().out
    data = gpu_inventory()
    data["experts"][0]["quantization"] = "int4"
    assert main(["validate", "-i", str(write(tmp_path, data))]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: 1 problem found\n")
    assert "experts[0].quantization: 'int4' is not one of" in err and "Traceback" not in err


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "--inventory", "nosuch"]) == 2
    assert "no inventory named 'nosuch'" in capsys.readouterr().err
    assert main(["plan"]) == 2  # --inventory missing
    assert main(["frobnicate"]) == 2


def test_plan_json_and_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "-i", "dgx-baseline-tp4x2", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert [s["gpus"] for s in plan["servers"]] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert plan["memory"][0]["status"] == "fits"
    assert main(["plan", "-i", "dgx"]) == 0
    captured = capsys.readouterr()
    assert "expert-7" in captured.out and "28/125" in captured.out
    assert "warning:" in captured.err and "experts[0].max_batch_size" in captured.err


def test_debug_shows_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXPERT_DEPLOY_DEBUG", "1")
    from expert_deploy.errors import UsageError

    with pytest.raises(UsageError):
        main(["validate", "--inventory", "nosuch"])


def test_doctor_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["doctor", "--json", "--workdir", str(tmp_path)])
    checks = {c["name"]: c for c in json.loads(capsys.readouterr().out)}
    assert {
        "python",
        "extras",
        "docker",
        "gpus",
        "disk",
        "hf token",
        "nginx",
        "tritonserver",
    } <= set(checks)
    assert checks["hf token"]["status"] == "warn"  # the test environment blanks HF_TOKEN
    assert code == (1 if any(c["status"] == "fail" for c in checks.values()) else 0)


def test_cli_import_pulls_no_heavy_dependency() -> None:
    code = (
        "import sys, expert_deploy.cli; "
        "heavy = [m for m in ('numpy', 'sklearn', 'docker', 'ansible_runner', 'tritonclient', 'grpc', "
        "'uvicorn', 'starlette', 'torch', 'huggingface_hub', 'tensorrt_llm') if m in sys.modules]; "
        "print(heavy)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
