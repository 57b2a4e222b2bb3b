"""Synthetic decoupled LLM for Triton's Python backend: streams tokens with a set TTFT and TPOT.

It speaks the TensorRT-LLM ensemble's tensor names (``text_input`` STRING, ``max_tokens`` INT32,
``stream`` BOOL, optional sampling inputs, output ``text_output`` STRING) so the gateway cannot
tell it from a real expert. Model parameters (config.pbtxt ``parameters``):

* ``ttft_ms`` / ``tpot_ms``: delay before the first token / between tokens (default 0).
* ``default_tokens``: tokens to send when the request has no ``max_tokens`` (default 16).
* ``label``: token text prefix; token ``i`` is ``" {label}{i}"`` (default ``tok``), so tests can
  check order, completeness and which server answered.

Directives inside the prompt (for tests of failure paths): ``[[fail_after=N]]`` sends N tokens
then an error response; ``[[ttft_ms=N]]`` and ``[[tpot_ms=N]]`` override the delays for that
request. A cancelled request stops at the next token and logs ``synthetic: cancelled``.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

_DIRECTIVE = re.compile(r"\[\[(fail_after|ttft_ms|tpot_ms)=(\d+)\]\]")


def _param(config: dict[str, Any], name: str, default: str) -> str:
    value = config.get("parameters", {}).get(name, {}).get("string_value", "")
    return str(value) if value != "" else default


def _optional_scalar(request: Any, name: str) -> Any:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return None
    return tensor.as_numpy().reshape(-1)[0]


class TritonPythonModel:
    """Triton entry point; ``execute`` is a coroutine so one instance streams many requests."""

    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        self.ttft_s = float(_param(config, "ttft_ms", "0")) / 1000.0
        self.tpot_s = float(_param(config, "tpot_ms", "0")) / 1000.0
        self.default_tokens = int(_param(config, "default_tokens", "16"))
        self.label = _param(config, "label", "tok")
        self.logger = pb_utils.Logger

    async def execute(self, requests: list[Any]) -> None:
        # Decoupled: every request gets its own task, responses go through its sender.
        await asyncio.gather(*(self._stream(request) for request in requests))

    async def _stream(self, request: Any) -> None:
        sender = request.get_response_sender()
        try:
            await self._stream_tokens(request, sender)
        except Exception as exc:  # an error must still close the request for Triton
            self._send_error(sender, f"synthetic model failed: {exc}")

    async def _stream_tokens(self, request: Any, sender: Any) -> None:
        prompt_tensor = pb_utils.get_input_tensor_by_name(request, "text_input")
        raw = prompt_tensor.as_numpy().reshape(-1)[0]
        prompt = raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
        directives = {key: int(value) for key, value in _DIRECTIVE.findall(prompt)}
        max_tokens = _optional_scalar(request, "max_tokens")
        n_tokens = self.default_tokens if max_tokens is None else int(max_tokens)
        is_stream = bool(_optional_scalar(request, "stream") or False)
        ttft_s = directives.get("ttft_ms", self.ttft_s * 1000.0) / 1000.0
        tpot_s = directives.get("tpot_ms", self.tpot_s * 1000.0) / 1000.0
        fail_after = directives.get("fail_after")

        texts: list[str] = []
        for index in range(n_tokens):
            await asyncio.sleep(ttft_s if index == 0 else tpot_s)
            if sender.is_cancelled():
                self.logger.log_info(f"synthetic: cancelled after {index} tokens")
                return
            if fail_after is not None and index == fail_after:
                self._send_error(sender, f"synthetic failure after {index} tokens")
                return
            token = f" {self.label}{index}"
            if is_stream:
                sender.send(self._response(token))
            else:
                texts.append(token)
        if fail_after is not None and fail_after >= n_tokens:
            self._send_error(sender, f"synthetic failure after {n_tokens} tokens")
            return
        if is_stream:
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        else:
            sender.send(
                self._response("".join(texts)),
                flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL,
            )

    @staticmethod
    def _response(text: str) -> Any:
        array = np.array([[text.encode("utf-8")]], dtype=np.object_)
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("text_output", array)])

    @staticmethod
    def _send_error(sender: Any, message: str) -> None:
        sender.send(
            pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message)),
            flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL,
        )
