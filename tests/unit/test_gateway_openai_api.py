"""OpenAI request validation, chat prompt rendering and stream-chunk shapes."""

from __future__ import annotations

import json

import pytest

from router_service.config import ChatPromptConfig, LimitsConfig
from router_service.errors import BadRequestError
from router_service.openai_api import (
    ChunkEncoder,
    chunk_event,
    estimate_tokens,
    parse_chat,
    parse_completion,
)

LIMITS = LimitsConfig(max_prompt_chars=100, max_tokens_cap=50, default_max_tokens=16)


def _body(**fields: object) -> bytes:
    return json.dumps(fields).encode()


def test_completion_fields_become_sampling_params() -> None:
    parsed = parse_completion(
        _body(model="m", prompt=["hello"], max_tokens=7, temperature=0, top_p=0.5, top_k=3,
              stop="END", seed=11, stream=True, stream_options={"include_usage": True}),
        LIMITS,
    )  # fmt: skip
    assert (parsed.prompt, parsed.classify_text, parsed.is_stream) == ("hello", "hello", True)
    assert parsed.include_usage
    params = parsed.params
    assert (params.max_tokens, params.temperature, params.top_p, params.top_k) == (7, 0, 0.5, 3)
    assert (params.stop, params.seed) == (("END",), 11)
    assert parse_completion(_body(model="m", prompt="x"), LIMITS).params.max_tokens == 16


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (_body(model="m", prompt="x", max_tokens=51), "max_tokens"),
        (_body(model="m", prompt="x" * 101), "prompt"),
        (_body(model="m", prompt=["a", "b"]), "prompt"),
        (_body(model="m", prompt="x", temperature="hot"), "temperature"),
        (_body(model="m", prompt="x", max_tokens=True), "max_tokens"),
        (_body(model="m", prompt="x", best_of=2), "best_of"),
        (_body(model="m", prompt="x", n=3), "n"),
        (_body(model="m"), "prompt"),
        (b"{", None),
    ],
)
def test_bad_completion_bodies(body: bytes, param: str | None) -> None:
    with pytest.raises(BadRequestError) as info:
        parse_completion(body, LIMITS)
    assert info.value.param == param
    assert info.value.to_body()["error"]["type"] == "invalid_request_error"  # type: ignore[index]


def test_chat_classifies_last_user_message_and_renders_conversation() -> None:
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        {
            "role": "user",
            "content": [{"type": "text", "text": "sec"}, {"type": "text", "text": "ond"}],
        },
    ]
    parsed = parse_chat(_body(model="m", messages=messages), LIMITS, ChatPromptConfig())
    assert parsed.classify_text == "second"
    assert parsed.prompt == "system: be brief\nuser: first\nassistant: ok\nuser: second\nassistant:"
    everything = parse_chat(
        _body(model="m", messages=messages), LIMITS, ChatPromptConfig(classify="all_messages")
    )
    assert everything.classify_text == "be brief\nfirst\nok\nsecond"
    capped = parse_chat(
        _body(model="m", messages=messages, max_tokens=9, max_completion_tokens=4),
        LIMITS,
        ChatPromptConfig(),
    )
    assert capped.params.max_tokens == 4


def test_stream_chunks_have_openai_shapes() -> None:
    raw = chunk_event(kind="chat", response_id="c1", created=5, model="m", text="hi", is_first=True)
    assert raw.startswith(b"data: ") and raw.endswith(b"\n\n")
    chunk = json.loads(raw[6:])
    assert chunk["object"] == "chat.completion.chunk"
    assert chunk["choices"][0]["delta"] == {"role": "assistant", "content": "hi"}
    usage = json.loads(
        chunk_event(kind="completion", response_id="c1", created=5, model="m", text=None,
                    usage={"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3})[6:]
    )  # fmt: skip
    assert usage["choices"] == [] and usage["usage"]["total_tokens"] == 3
    assert estimate_tokens("") == 1 and estimate_tokens("x" * 9) == 3


@pytest.mark.parametrize("kind", ["completion", "chat"])
@pytest.mark.parametrize("text", ["", " tok", '"quoted"\n\\', "東京 👋", "\x00\x1f\u2028"])
@pytest.mark.parametrize("is_first", [True, False])
def test_chunk_encoder_writes_the_same_bytes_as_chunk_event(
    kind: str, text: str, is_first: bool
) -> None:
    fixed = {"kind": kind, "response_id": 'cmpl-"x"', "created": 17, "model": "modèle"}
    encoder = ChunkEncoder(**fixed)  # type: ignore[arg-type]

    encoded = encoder.token(text, is_first=is_first)

    assert encoded == chunk_event(**fixed, text=text, is_first=is_first)  # type: ignore[arg-type]
    body = json.loads(encoded[len(b"data: ") :])
    choice = body["choices"][0]
    assert (choice["text"] if kind == "completion" else choice["delta"]["content"]) == text
