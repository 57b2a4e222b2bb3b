"""``expert-deploy build`` without Docker: the fetch-first error and a no-op on a warm cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from expert_deploy.cli import main

REPO = Path(__file__).resolve().parents[2]


def test_build_without_checkpoints_json_says_run_fetch_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["build", "--inventory", "dgx", "--workdir", str(tmp_path)])
    assert code == 1
    assert "run expert-deploy fetch first" in capsys.readouterr().err


def test_build_reports_missing_checkpoint_per_expert(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "checkpoints.json").write_text('{"version": 1, "checkpoints": {}}')
    code = main(["build", "--inventory", "dgx", "--workdir", str(tmp_path), "-e", "expert-3"])
    captured = capsys.readouterr()
    assert code == 1
    assert "expert-3" in captured.out and "failed" in captured.out
    assert "expert-0" not in captured.out
    assert "no checkpoint for meta-llama/Meta-Llama-3-70B-Instruct@main" in captured.err
