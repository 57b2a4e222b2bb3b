"""Gateway config loading, secrets, the Triton codec and the service's import boundary."""

from __future__ import annotations

import ast
import struct
from pathlib import Path

import pytest
from tritonclient.grpc import service_pb2

from router_service.auth import require_admin_token, require_api_key
from router_service.config import AuthConfig, ConfigError, TensorNames, load_config
from router_service.errors import AuthenticationError
from router_service.settings import load_secrets
from router_service.triton_codec import (
    SamplingParams,
    build_infer_request,
    decode_stream_response,
    encode_infer_request,
)

CONFIG = """
http_port: 9100
router_dir: router
routing:
  generation: 4
  experts:
    - id: e0
      clusters: [0, 1]
      upstreams: [{host: 127.0.0.1, grpc_port: 8001}]
tensors: {seed: seed}
"""


def test_load_config_resolves_paths_and_defaults(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(CONFIG)
    config = load_config(path)
    assert config.router_dir == tmp_path / "router"
    assert config.routing.generation == 4 and config.fallback == "next_nearest"
    assert config.tensors.seed == "seed" and config.tensors.text_input == "text_input"
    assert config.admin_host == "127.0.0.1" and not config.log_prompts


def test_load_config_reports_every_problem_with_its_path(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(CONFIG.replace("http_port: 9100", "http_port: 9100\nfalback: reject")
                    .replace("grpc_port: 8001", "grpc_port: 0"))  # fmt: skip
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "problem(s)" in message
    assert "falback: Extra inputs are not permitted" in message
    assert "routing.experts.0.upstreams.0.grpc_port" in message


def test_secrets_come_from_env_and_file_and_never_show(tmp_path: Path) -> None:
    key_file = tmp_path / "keys"
    key_file.write_text("k3\n\nk1\n")
    auth = AuthConfig(api_keys_env="KEYS", api_keys_file=key_file, admin_token_env="ADMIN")
    secrets = load_secrets(auth, {"KEYS": "k1, k2", "ADMIN": "tok"})
    assert secrets.api_keys == (b"k1", b"k2", b"k3") and secrets.admin_token == b"tok"
    assert "k1" not in repr(secrets) and "tok" not in repr(secrets)
    require_api_key("Bearer k2", secrets.api_keys)
    with pytest.raises(AuthenticationError):
        require_api_key("Bearer k4", secrets.api_keys)
    with pytest.raises(AuthenticationError):
        require_api_key(None, secrets.api_keys)
    require_api_key(None, ())  # no keys configured: open
    with pytest.raises(AuthenticationError):
        require_admin_token("Basic tok", b"tok")
    require_admin_token("bearer tok", b"tok")
    with pytest.raises(ConfigError):
        load_secrets(AuthConfig(api_keys_file=tmp_path / "missing"), {})


def test_infer_request_uses_configured_tensor_names() -> None:
    names = TensorNames(seed="seed")
    request = build_infer_request(
        model="ensemble", request_id="r", prompt="héllo",
        params=SamplingParams(max_tokens=5, temperature=0.5, seed=7, stop=("a", "bc")), names=names,
    )  # fmt: skip
    inputs = {t.name: (t.datatype, list(t.shape), raw) for t, raw in
              zip(request.inputs, request.raw_input_contents, strict=True)}  # fmt: skip
    assert inputs["text_input"] == ("BYTES", [1, 1], struct.pack("<I", 6) + "héllo".encode())
    assert inputs["max_tokens"] == ("INT32", [1, 1], struct.pack("<i", 5))
    assert inputs["stream"] == ("BOOL", [1, 1], b"\x01")
    assert inputs["seed"] == ("UINT64", [1, 1], struct.pack("<Q", 7))
    assert inputs["stop_words"][1] == [1, 2]
    assert "top_p" not in inputs
    assert request.parameters["triton_enable_empty_final_response"].bool_param


def test_encoded_requests_share_their_fixed_part_and_keep_their_own_id_and_prompt() -> None:
    params = SamplingParams(max_tokens=3, top_k=2)
    prompts = {"r1": "first prompt", "r2": "a second, longer prompt"}
    encoded = {
        rid: encode_infer_request(
            model="ensemble", request_id=rid, prompt=prompt, params=params, names=TensorNames()
        )
        for rid, prompt in prompts.items()
    }

    for rid, prompt in prompts.items():
        request = service_pb2.ModelInferRequest.FromString(encoded[rid])
        names = [t.name for t in request.inputs]
        assert sorted(names) == ["max_tokens", "stream", "text_input", "top_k"]  # none twice
        raw = dict(zip(names, request.raw_input_contents, strict=True))
        assert raw["text_input"] == struct.pack("<I", len(prompt)) + prompt.encode()
        assert raw["top_k"] == struct.pack("<i", 2)
        assert (request.id, request.model_name) == (rid, "ensemble")
    fixed_parts = set()
    for rid, prompt in prompts.items():
        own = service_pb2.ModelInferRequest(
            id=rid, raw_input_contents=[struct.pack("<I", len(prompt)) + prompt.encode()]
        ).SerializeToString()
        assert encoded[rid].endswith(own)
        fixed_parts.add(encoded[rid][: -len(own)])
    assert len(fixed_parts) == 1


def test_decode_stream_response_text_final_and_error() -> None:
    message = service_pb2.ModelStreamInferResponse()
    output = message.infer_response.outputs.add()
    output.name = "text_output"
    message.infer_response.raw_output_contents.append(struct.pack("<I", 4) + b" tok")
    decoded = decode_stream_response(message, text_output="text_output")
    assert (decoded.text, decoded.is_final, decoded.error) == (" tok", False, None)
    message.infer_response.parameters["triton_final_response"].bool_param = True
    assert decode_stream_response(message, text_output="text_output").is_final
    failed = service_pb2.ModelStreamInferResponse(error_message="boom")
    assert decode_stream_response(failed, text_output="text_output").error == "boom"


def test_router_service_never_imports_expert_deploy() -> None:
    package = Path(__file__).resolve().parents[2] / "router_service"
    offenders = []
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] == "expert_deploy"]
    assert offenders == []


def test_cpus_must_be_distinct_and_not_negative(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(CONFIG + "cpus: [2, 3]\n")
    assert load_config(path).cpus == (2, 3)
    for bad, problem in (
        ("[1, 1]", "cpus: Value error, a CPU is listed twice"),
        ("[-1]", "cpus.0: Input should be greater than or equal to 0"),
    ):
        path.write_text(CONFIG + f"cpus: {bad}\n")
        with pytest.raises(ConfigError, match=problem):
            load_config(path)
