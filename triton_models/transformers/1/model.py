"""Decoupled Triton Python-backend model that runs a Hugging Face checkpoint with PyTorch.

Speaks the TensorRT-LLM ensemble's tensor names (``text_input`` STRING, ``max_tokens`` INT32,
``stream`` BOOL, optional ``temperature``/``top_p``/``top_k``/``end_id``/seed, output
``text_output`` STRING), so the gateway cannot tell it from a TensorRT-LLM expert. Parameters
(config.pbtxt, rendered by expert-deploy): ``checkpoint_dir``, ``device`` (``cpu``/``cuda``),
``default_max_tokens``, ``max_input_len``, ``dtype`` (``float16``/``bfloat16``/``auto``).

Needs ``torch`` and ``transformers`` in the Python the Triton stub runs; they are imported
in ``initialize`` so that importing this file (tests, syntax checks) needs neither.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

_SEED_NAMES = ("random_seed", "seed")


def _param(config: dict[str, Any], name: str, default: str) -> str:
    value = config.get("parameters", {}).get(name, {}).get("string_value", "")
    return str(value) if value != "" else default


def _scalar(request: Any, name: str) -> Any:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy().reshape(-1)[0]


class TritonPythonModel:
    """One instance holds the model; each request streams from its own generation thread."""

    def initialize(self, args: dict[str, str]) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        config = json.loads(args["model_config"])
        checkpoint = _param(config, "checkpoint_dir", "")
        self.device = _param(config, "device", "cpu")
        self.default_max_tokens = int(_param(config, "default_max_tokens", "128"))
        self.max_input_len = int(_param(config, "max_input_len", "2048"))
        dtype_name = _param(config, "dtype", "auto")
        dtype = "auto" if dtype_name == "auto" else getattr(torch, dtype_name)
        self.tokenizer = AutoTokenizer.from_pretrained(checkpoint)
        self.model = AutoModelForCausalLM.from_pretrained(checkpoint, torch_dtype=dtype)
        self.model.to(self.device).eval()
        self.torch = torch
        # One generate() at a time: a single model copy; requests queue on this lock.
        self.lock = threading.Lock()

    def execute(self, requests: list[Any]) -> None:
        for request in requests:
            thread = threading.Thread(target=self._serve, args=(request,), daemon=True)
            thread.start()

    def _serve(self, request: Any) -> None:
        sender = request.get_response_sender()
        try:
            self._generate(request, sender)
        except Exception as exc:  # the request must be closed for Triton whatever happens
            sender.send(
                pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(str(exc))),
                flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL,
            )

    def _generate(self, request: Any, sender: Any) -> None:
        from transformers import TextIteratorStreamer

        raw = _scalar(request, "text_input")
        prompt = raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
        max_tokens = _scalar(request, "max_tokens")
        stream = bool(_scalar(request, "stream") or False)
        kwargs = self._sampling(request)
        limit = self.default_max_tokens if max_tokens is None else int(max_tokens)
        kwargs["max_new_tokens"] = limit
        inputs = self.tokenizer(
            prompt, return_tensors="pt", truncation=True, max_length=self.max_input_len
        ).to(self.device)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        with self.lock:
            worker = threading.Thread(
                target=self._run, kwargs={"inputs": inputs, "streamer": streamer, **kwargs}
            )
            worker.start()
            pieces = []
            for text in streamer:
                if sender.is_cancelled():
                    break  # generation finishes in the background; nothing more is sent
                if stream and text:
                    sender.send(self._response(text))
                pieces.append(text)
            worker.join()
        if stream:
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        else:
            sender.send(
                self._response("".join(pieces)), flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
            )

    def _run(self, inputs: Any, streamer: Any, **kwargs: Any) -> None:
        with self.torch.no_grad():
            self.model.generate(**inputs, streamer=streamer, **kwargs)

    def _sampling(self, request: Any) -> dict[str, Any]:
        kwargs: dict[str, Any] = {}
        temperature = _scalar(request, "temperature")
        top_p = _scalar(request, "top_p")
        top_k = _scalar(request, "top_k")
        end_id = _scalar(request, "end_id")
        sampling = temperature is not None and float(temperature) > 0
        kwargs["do_sample"] = sampling
        if sampling:
            kwargs["temperature"] = float(temperature)
            if top_p is not None:
                kwargs["top_p"] = float(top_p)
            if top_k is not None and int(top_k) > 0:
                kwargs["top_k"] = int(top_k)
        if end_id is not None:
            kwargs["eos_token_id"] = int(end_id)
        for name in _SEED_NAMES:
            seed = _scalar(request, name)
            if seed is not None:
                self.torch.manual_seed(int(seed))
        return kwargs

    @staticmethod
    def _response(text: str) -> Any:
        array = np.array([[text.encode("utf-8")]], dtype=np.object_)
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("text_output", array)])
