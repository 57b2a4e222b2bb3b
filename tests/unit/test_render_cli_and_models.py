"""``expert-deploy render`` end to end, and the transformers model's structure (no torch)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from expert_deploy.cli import main
from tests.unit.render_support import REPO, render


def test_render_command_prints_files_per_component(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["render", "--inventory", "local", "--workdir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"into {tmp_path.resolve() / 'rendered'}" in out
    assert "triton/programming-0: 2 files" in out
    assert "gateway: 2 files" in out
    assert (tmp_path / "rendered" / "nginx" / "nginx.conf").is_file()


def test_render_command_unwritable_workdir_exits_1_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["render", "-i", "local", "-w", str(blocker / "w")]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert len(errors) == 1
    assert "cannot write" in errors[0]


def test_transformers_model_structure() -> None:
    source = (REPO / "triton_models" / "transformers" / "1" / "model.py").read_text()
    tree = ast.parse(source)
    top_imports = {
        alias.name.split(".")[0]
        for node in tree.body
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    } | {node.module for node in tree.body if isinstance(node, ast.ImportFrom) and node.module}
    # torch/transformers load lazily in initialize, so the file imports where they are absent.
    assert not top_imports & {"torch", "transformers"}
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    model = classes["TritonPythonModel"]
    methods = {n.name for n in model.body if isinstance(n, ast.FunctionDef)}
    assert {"initialize", "execute"} <= methods
    names = ("checkpoint_dir", "device", "default_max_tokens", "max_input_len", "dtype")
    for name in (*names, "cpu_threads"):
        assert f'"{name}"' in source


def test_transformers_expert_renders_its_parameters(tmp_path: Path) -> None:
    text = (REPO / "inventories" / "local-synthetic.yaml").read_text()
    text = text.replace(
        "data/local-prompts.jsonl", str(REPO / "inventories" / "data" / "local-prompts.jsonl")
    )
    model = f"{{repo: org/tiny, config: {tmp_path / 'config.json'}}}"
    text = text.replace(
        "- {id: expert-0, cluster: 0}",
        f"- {{id: expert-0, cluster: 0, engine: transformers, model: {model}}}",
    )
    (tmp_path / "config.json").write_text(
        '{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64,'
        ' "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 4,'
        ' "num_hidden_layers": 2, "vocab_size": 1000, "max_position_embeddings": 4096}'
    )
    path = tmp_path / "inv.yaml"
    path.write_text(text)
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    result = render(
        path,
        tmp_path / "work",
    )
    config_path = result.root / "triton" / "expert-0-0" / "ensemble" / "config.pbtxt"
    config = text_format.Parse(config_path.read_text(), model_config_pb2.ModelConfig())
    params = {k: v.string_value for k, v in config.parameters.items()}
    assert params["device"] == "cpu"
    assert params["cpu_threads"] == "1"  # CPU experts share the cores: one torch thread each
    assert params["checkpoint_dir"] == str(
        (tmp_path / "work").resolve() / "checkpoints" / "expert-0"
    )
    assert config.model_transaction_policy.decoupled is True
    assert (config_path.parent / "1" / "model.py").read_bytes() == (
        REPO / "triton_models" / "transformers" / "1" / "model.py"
    ).read_bytes()
    assert not (config_path.parent / "README.md").exists()
