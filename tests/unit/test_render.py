"""render_deployment: every config.pbtxt parses, placeholders are exactly the toolchain's,
outputs are byte-deterministic, failures are one line and leave nothing behind."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from expert_deploy.errors import RenderError
from expert_deploy.render.trtllm_values import RENDERED_MODELS, STRUCTURAL
from router_service.config import load_config
from tests.unit.render_support import REPO, load, render, with_toolchain


def _parse(path: Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): (str(p.readlink()).encode() if p.is_symlink() else p.read_bytes())
        for p in sorted(root.rglob("*"))
        if p.is_symlink() or p.is_file()
    }


@pytest.mark.parametrize("inventory", ["local", "local-synthetic", "dgx"])
def test_every_config_pbtxt_parses_and_no_placeholder_remains(
    tmp_path: Path, inventory: str
) -> None:
    result = render(inventory, tmp_path)
    configs = sorted(result.root.glob("triton/*/*/config.pbtxt"))
    assert configs
    for path in configs:
        config = _parse(path)
        assert config.name == path.parent.name
        code = "\n".join(line.split("#", 1)[0] for line in path.read_text().splitlines())
        assert "${" not in code


def test_trtllm_repository_layout_and_values(tmp_path: Path) -> None:
    result = render("dgx", tmp_path)
    repo = result.root / "triton" / "expert-3-0"
    llm = _parse(repo / "tensorrt_llm" / "config.pbtxt")
    assert llm.backend == "tensorrtllm"
    assert llm.max_batch_size == 125
    assert llm.model_transaction_policy.decoupled is True
    params = {k: v.string_value for k, v in llm.parameters.items()}
    assert params["gpt_model_type"] == "inflight_fused_batching"
    assert params["gpt_model_path"] == str(tmp_path.resolve() / "engines" / "expert-3")
    assert params["kv_cache_free_gpu_mem_fraction"] == "0.9"
    assert params["gpu_device_ids"] == "0"
    pre = _parse(repo / "preprocessing" / "config.pbtxt")
    assert pre.parameters["tokenizer_dir"].string_value == str(
        tmp_path.resolve() / "checkpoints" / "expert-3"
    )
    ensemble = _parse(repo / "ensemble" / "config.pbtxt")
    assert ensemble.platform == "ensemble"
    assert [s.model_name for s in ensemble.ensemble_scheduling.step] == [
        "preprocessing",
        "tensorrt_llm",
        "postprocessing",
    ]
    link = repo / "preprocessing" / "1" / "model.py"
    assert link.is_symlink()
    assert str(link.readlink()).startswith("/opt/tensorrtllm_backend/all_models/")
    assert any("assumed" in note for note in result.notes)


def test_ensemble_wiring_is_consistent(tmp_path: Path) -> None:
    """Every tensor a step reads is an ensemble input or another step's output."""
    repo = render("dgx", tmp_path).root / "triton" / "expert-0-0"
    ensemble = _parse(repo / "ensemble" / "config.pbtxt")
    available = {t.name for t in ensemble.input}
    for step in ensemble.ensemble_scheduling.step:
        model = _parse(repo / step.model_name / "config.pbtxt")
        inputs = {t.name for t in model.input}
        outputs = {t.name for t in model.output}
        for model_input, tensor in step.input_map.items():
            assert model_input in inputs, (step.model_name, model_input)
            assert tensor in available, (step.model_name, tensor)
        for model_output, tensor in step.output_map.items():
            assert model_output in outputs, (step.model_name, model_output)
            available.add(tensor)
    assert {t.name for t in ensemble.output} <= available


@pytest.mark.parametrize("toolchain", ["trtllm-0.11", "trtllm-1.2"])
def test_placeholders_accounted_for_are_exactly_the_toolchains(
    tmp_path: Path, toolchain: str
) -> None:
    path = with_toolchain(tmp_path, "dgx", toolchain)
    loaded, _ = load(path)
    result = render(path, tmp_path / "work")
    required = {"triton_max_batch_size", "decoupled_mode", "engine_dir", "tokenizer_dir"}
    for decisions in result.placeholders.values():
        for model in RENDERED_MODELS:
            values = decisions[model]
            expected = set(loaded.toolchain.triton_placeholders.get(model, frozenset()))
            assert set(values.filled) | set(values.left_to_backend) == expected
            assert not set(values.filled) & set(values.left_to_backend)
            assert (required & expected) <= set(values.filled)
            params = {k for k, _ in values.parameters()}
            assert not params & STRUCTURAL
    # Tensor renames of the newer backend reach the ensemble and the gateway.
    repo = result.root / "triton" / "expert-0-0"
    names = {t.name for t in _parse(repo / "ensemble" / "config.pbtxt").input}
    gateway = load_config(result.root / "gateway" / "gateway-0.yaml")
    assert loaded.toolchain.ensemble_inputs["random_seed"] in names
    assert gateway.tensors.seed == loaded.toolchain.ensemble_inputs["random_seed"]


def test_synthetic_repository_carries_expert_timing(tmp_path: Path) -> None:
    result = render("local-synthetic", tmp_path)
    model_dir = result.root / "triton" / "expert-1-0" / "ensemble"
    config = _parse(model_dir / "config.pbtxt")
    assert config.name == "ensemble"
    assert config.backend == "python"
    assert config.model_transaction_policy.decoupled is True
    params = {k: v.string_value for k, v in config.parameters.items()}
    assert params == {
        "ttft_ms": "20",
        "tpot_ms": "5",
        "default_tokens": "64",
        "label": "expert-1-0:",
    }
    source = REPO / "triton_models" / "synthetic" / "1" / "model.py"
    assert (model_dir / "1" / "model.py").read_bytes() == source.read_bytes()


def test_gateway_configs_load_with_router_service(tmp_path: Path) -> None:
    result = render("dgx", tmp_path)
    configs = sorted((result.root / "gateway").glob("gateway-*.yaml"))
    assert len(configs) == 16
    config = load_config(result.root / "gateway" / "gateway-3.yaml")
    assert (config.http_port, config.grpc_port, config.admin_port) == (9003, 9103, 9203)
    assert config.router_dir == (tmp_path / "router").resolve()
    experts = {e.id: e for e in config.routing.experts}
    assert experts["expert-5"].clusters == (5,)
    assert experts["expert-5"].upstreams[0].grpc_port == 8051
    assert experts["expert-5"].upstreams[0].model == "ensemble"
    assert config.auth.api_keys_env == "EXPERT_DEPLOY_API_KEYS"


def test_no_secret_value_in_any_rendered_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EXPERT_DEPLOY_API_KEYS", "sk-secret-value-123")
    monkeypatch.setenv("EXPERT_DEPLOY_ADMIN_TOKEN", "admin-secret-456")
    monkeypatch.setenv("HF_TOKEN", "hf_secret_789")
    result = render("local", tmp_path)
    for data in _tree(result.root).values():
        for secret in (b"sk-secret-value-123", b"admin-secret-456", b"hf_secret_789"):
            assert secret not in data
    variables = yaml.safe_load((result.root / "ansible" / "vars.yaml").read_text())
    assert variables["secret_env_names"] == ["EXPERT_DEPLOY_API_KEYS", "EXPERT_DEPLOY_ADMIN_TOKEN"]
    assert [s["name"] for s in variables["servers"]] == [
        f"{topic}-0"
        for topic in (
            "astronomy",
            "music",
            "finance",
            "gardening",
            "fitness",
            "travel",
            "cooking",
            "programming",
        )
    ]


@pytest.mark.parametrize("inventory", ["local", "local-synthetic", "dgx"])
def test_rendering_twice_gives_identical_bytes(tmp_path: Path, inventory: str) -> None:
    first = render(inventory, tmp_path)
    before = _tree(first.root)
    second = render(inventory, tmp_path)
    assert _tree(second.root) == before
    assert first.files == second.files
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".rendered")]
    assert leftovers == []


def test_missing_template_value_is_one_line_render_error(tmp_path: Path) -> None:
    templates = tmp_path / "data" / "templates"
    for sub in ("triton", "nginx"):
        src = REPO / "templates" / sub
        for path in src.rglob("*.j2"):
            target = templates / sub / path.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(path.read_text())
    broken = templates / "nginx" / "nginx.conf.j2"
    broken.write_text(broken.read_text() + "# {{ no_such_value }}\n")
    data = tmp_path / "data"
    for name in ("engines", "inventories", "triton_models"):
        (data / name).symlink_to(REPO / name)
    with pytest.raises(RenderError) as caught:
        render("local", tmp_path / "work", data_dir=data)
    message = str(caught.value)
    assert "\n" not in message
    assert "no_such_value" in message
    assert not (tmp_path / "work" / "rendered").exists()


def test_unwritable_workdir_is_one_line_error_and_nothing_partial(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    with pytest.raises(RenderError) as caught:
        render("local", blocker / "work")
    assert "\n" not in str(caught.value)
    assert "cannot write" in str(caught.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["not-a-dir"]


def test_failed_render_keeps_the_previous_one(tmp_path: Path) -> None:
    first = render("local", tmp_path)
    before = _tree(first.root)
    read_only = tmp_path
    read_only.chmod(0o500)
    try:
        if os.access(read_only, os.W_OK):
            pytest.skip("running as root: permissions do not stop writes")
        with pytest.raises(RenderError):
            render("dgx", tmp_path)
    finally:
        read_only.chmod(0o700)
    assert _tree(first.root) == before
