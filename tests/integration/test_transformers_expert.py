"""A transformers expert on the real tritonserver: the rendered repository, a generated checkpoint.

The repository is rendered by expert-deploy for one expert of the shipped ``local`` inventory,
the checkpoint is generated offline (a 5 MB random-weight Llama with a trained tokenizer: the
stand-in for a Hub checkpoint, which cannot be downloaded here), and the server is the
wheel's tritonserver whose Python-backend stub imports torch from this virtualenv.
"""

from __future__ import annotations

import json
import queue
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from expert_deploy.checkpoints.checkpoint import Checkpoint
from expert_deploy.checkpoints.generated import generate_checkpoint
from expert_deploy.inventory import load_inventory
from expert_deploy.plan.planner import make_plan
from expert_deploy.render import render_deployment
from expert_deploy.runtime.readiness import probe_triton
from expert_deploy.settings import Settings
from tests.support.inventories import REPO_ROOT, materialize
from tests.support.triton import TritonServer

pytestmark = pytest.mark.integration

EXPERT = "programming"
PROMPT = "How do I fix this recursion bug in my python code?"


@dataclass(frozen=True)
class Expert:
    server: TritonServer
    checkpoint: Checkpoint
    config: str


@pytest.fixture(scope="module")
def expert(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Expert]:
    root = tmp_path_factory.mktemp("transformers")
    path = materialize("local", root)
    loaded = load_inventory(path, REPO_ROOT / "engines")
    model = loaded.inventory.expert(EXPERT).model  # type: ignore[union-attr]
    assert model is not None
    checkpoint = generate_checkpoint(
        model, corpus=REPO_ROOT / "inventories" / "data" / "local-prompts.jsonl", root=root / "gen"
    )
    settings = Settings(workdir=root / "work", data_dir=REPO_ROOT)
    rendered = render_deployment(
        loaded,
        make_plan(loaded),
        settings,
        router_dir=root / "router",
        tokenizer_dirs={EXPERT: checkpoint.path},
    )
    repository = rendered.root / "triton" / f"{EXPERT}-0"
    server = TritonServer(repository=repository, workdir=root / "server")
    # Importing torch in the stub takes seconds, longer on a loaded machine.
    server.start(ready_timeout_s=240)
    try:
        config = (repository / "ensemble" / "config.pbtxt").read_text()
        yield Expert(server, checkpoint, config)
    finally:
        server.stop()


def _grpc_inputs(prompt: str, max_tokens: int, **optional: Any) -> list[grpcclient.InferInput]:
    values: dict[str, tuple[str, np.ndarray]] = {
        "text_input": ("BYTES", np.array([[prompt.encode()]], dtype=object)),
        "max_tokens": ("INT32", np.array([[max_tokens]], dtype=np.int32)),
        "stream": ("BOOL", np.array([[optional.pop("stream", True)]], dtype=bool)),
    }
    kinds = {"temperature": ("FP32", np.float32), "top_k": ("INT32", np.int32)}
    for name, value in optional.items():
        if name == "random_seed":
            values[name] = ("UINT64", np.array([[value]], dtype=np.uint64))
        elif name == "stop_words":
            values[name] = ("BYTES", np.array([[w.encode() for w in value]], dtype=object))
        else:
            kind, dtype = kinds[name]
            values[name] = (kind, np.array([[value]], dtype=dtype))
    inputs = []
    for name, (kind, array) in values.items():
        tensor = grpcclient.InferInput(name, list(array.shape), kind)
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


def _stream(server: TritonServer, prompt: str, max_tokens: int, **optional: Any) -> list[str]:
    """One request over gRPC streaming; the text of every response, in order."""
    results: queue.Queue[Any] = queue.Queue()
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    client.start_stream(callback=lambda result, error: results.put(error or result))
    try:
        client.async_stream_infer(
            "ensemble",
            _grpc_inputs(prompt, max_tokens, **optional),
            enable_empty_final_response=True,
        )
        texts: list[str] = []
        while True:
            item = results.get(timeout=120)
            if isinstance(item, Exception):
                raise item
            output = item.as_numpy("text_output")
            if output is not None:
                texts.append(output.reshape(-1)[0].decode())
            if item.get_response().parameters["triton_final_response"].bool_param:
                return texts
    finally:
        client.stop_stream()
        client.close()


def _in_process(checkpoint: Checkpoint, prompt: str, max_tokens: int) -> tuple[str, int]:
    """Greedy text and token count from the same checkpoint loaded here, as the model loads it."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(checkpoint.path)
    model = AutoModelForCausalLM.from_pretrained(checkpoint.path, dtype=torch.bfloat16)
    inputs = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=max_tokens, do_sample=False)
    new = out[0][inputs["input_ids"].shape[1] :]
    return tokenizer.decode(new, skip_special_tokens=True), len(new)


def test_the_rendered_config_runs_the_checkpoint_on_one_cpu_thread(expert: Expert) -> None:
    assert 'backend: "python"' in expert.config
    assert str(expert.checkpoint.path) in expert.config
    log = expert.server.log_text()
    assert f"transformers: {expert.checkpoint.path} on cpu (bfloat16, 1 threads)" in log


def test_tokens_stream_as_separate_responses(expert: Expert) -> None:
    pieces = _stream(expert.server, PROMPT, 12)
    text = [p for p in pieces if p]
    assert len(text) >= 4, pieces  # one response per token (bytes of one character wait)
    assert len(text) <= 12
    assert "".join(pieces) == _in_process(expert.checkpoint, PROMPT, 12)[0]


def test_max_tokens_bounds_the_generation(expert: Expert) -> None:
    for limit in (1, 3):
        pieces = _stream(expert.server, PROMPT, limit)
        assert 1 <= len(pieces) <= limit
        assert "".join(pieces) == _in_process(expert.checkpoint, PROMPT, limit)[0]


def test_not_streamed_is_one_response_with_the_same_text(expert: Expert) -> None:
    streamed = "".join(_stream(expert.server, PROMPT, 10))
    single = _stream(expert.server, PROMPT, 10, stream=False)
    assert single == [streamed]


def test_a_seed_makes_sampling_repeatable(expert: Expert) -> None:
    def sample(seed: int) -> str:
        return "".join(
            _stream(expert.server, PROMPT, 16, temperature=1.0, top_k=0, random_seed=seed)
        )

    first = sample(7)
    assert sample(7) == first
    others = {sample(seed) for seed in (8, 9, 10)}
    assert others != {first}  # different seeds draw different tokens


def test_a_stop_word_ends_the_text_before_it(expert: Expert) -> None:
    full = "".join(_stream(expert.server, PROMPT, 16))
    word = full[len(full) // 2 : len(full) // 2 + 3]
    assert word.strip(), full
    stopped = "".join(_stream(expert.server, PROMPT, 16, stop_words=[word]))
    assert stopped == full[: full.index(word)]


def test_http_generate_stream_and_the_readiness_probe(expert: Expert) -> None:
    result = probe_triton("127.0.0.1", expert.server.http_port)
    assert result.ok, result.detail
    body = json.dumps({"text_input": PROMPT, "max_tokens": 5, "stream": True}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{expert.server.http_port}/v2/models/ensemble/generate_stream",
        data=body,
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    events = []
    with urllib.request.urlopen(request, timeout=120) as response:
        for raw in response:
            line = raw.decode().strip()
            if line.startswith("data:"):
                events.append(json.loads(line[5:]))
    assert all("error" not in e for e in events)
    assert 1 <= len(events) <= 5
    assert "".join(e.get("text_output", "") for e in events) == "".join(
        _stream(expert.server, PROMPT, 5)
    )


def test_a_bad_max_tokens_is_an_error_response_and_the_server_keeps_serving(
    expert: Expert,
) -> None:
    with pytest.raises(Exception, match="max_tokens must be at least 1"):
        _stream(expert.server, PROMPT, 0)
    assert _stream(expert.server, PROMPT, 2)


def test_a_prompt_longer_than_max_input_len_keeps_its_end(expert: Expert) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    long_prompt = "garden " * 3000 + PROMPT
    served = "".join(_stream(expert.server, long_prompt, 4))
    tokenizer = AutoTokenizer.from_pretrained(expert.checkpoint.path, truncation_side="left")
    model = AutoModelForCausalLM.from_pretrained(expert.checkpoint.path, dtype=torch.bfloat16)
    inputs = tokenizer(long_prompt, return_tensors="pt", truncation=True, max_length=1024)
    assert inputs["input_ids"].shape[1] == 1024  # local.yaml's max_input_len
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert served == tokenizer.decode(out[0][1024:], skip_special_tokens=True)
