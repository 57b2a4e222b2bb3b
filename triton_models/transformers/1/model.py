"""Decoupled Triton Python-backend model that runs a Hugging Face checkpoint with PyTorch.

Speaks the TensorRT-LLM ensemble's tensor names (``text_input`` STRING, ``max_tokens`` INT32,
``stream`` BOOL, optional ``temperature``/``top_p``/``top_k``/``end_id``/seed/``stop_words``,
output ``text_output`` STRING), so the gateway cannot tell it from a TensorRT-LLM expert.
Streaming sends one response per generated token, as TensorRT-LLM does (a token whose bytes
end inside a UTF-8 character waits for the next one).

Parameters (config.pbtxt, rendered by expert-deploy): ``checkpoint_dir``, ``device``
(``cpu``/``cuda``), ``default_max_tokens``, ``max_input_len``, ``dtype``
(``float16``/``bfloat16``/``float32``/``auto``) and ``cpu_threads`` (PyTorch intra-op threads;
0 = PyTorch's default of one per core, which oversubscribes a machine shared by many experts).

Needs ``torch`` and ``transformers`` in the Python the Triton stub runs; they are imported
in ``initialize`` so that importing this file (tests, syntax checks) needs neither.
"""

from __future__ import annotations

import json
import queue
import threading
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

_SEED_NAMES = ("random_seed", "seed")
#: Marks the end of a generation in the queue between the generate thread and the sender.
_DONE = object()


def _param(config: dict[str, Any], name: str, default: str) -> str:
    value = config.get("parameters", {}).get(name, {}).get("string_value", "")
    return str(value) if value != "" else default


def _scalar(request: Any, name: str) -> Any:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy().reshape(-1)[0]


def _strings(request: Any, name: str) -> list[str]:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return []
    values = tensor.as_numpy().reshape(-1)
    words = [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values]
    return [w for w in words if w]


class _TokenText:
    """Incremental detokenizer: the text each new token adds to the ones before it.

    Decoding the whole generation each time (not token by token) keeps the spaces and the
    multi-byte characters a byte-level tokenizer splits across tokens right.
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.sent = 0

    def add(self, token_id: int) -> str:
        self.ids.append(token_id)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):  # the token ends inside a UTF-8 character
            return ""
        piece, self.sent = text[self.sent :], len(text)
        return piece


class _StopText:
    """Applies ``stop_words`` to streamed text: cut before the first one, hold back prefixes."""

    def __init__(self, words: list[str]) -> None:
        self.words = words
        self.hold = max((len(w) for w in words), default=1) - 1
        self.text = ""
        self.sent = 0
        self.stopped = False

    def feed(self, piece: str) -> str:
        """The text that may be sent now (empty while it could still start a stop word)."""
        self.text += piece
        cut = min((i for i in (self.text.find(w) for w in self.words) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            return self._take(cut)
        return self._take(max(self.sent, len(self.text) - self.hold))

    def flush(self) -> str:
        return "" if self.stopped else self._take(len(self.text))

    def _take(self, end: int) -> str:
        out, self.sent = self.text[self.sent : end], max(self.sent, end)
        return out


class TritonPythonModel:
    """One instance holds the model; each request streams from its own thread."""

    def initialize(self, args: dict[str, str]) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging

        # Progress bars and info lines would land in the server log on every start.
        logging.disable_progress_bar()
        logging.set_verbosity_error()
        config = json.loads(args["model_config"])
        checkpoint = _param(config, "checkpoint_dir", "")
        self.device = _param(config, "device", "cpu")
        self.default_max_tokens = int(_param(config, "default_max_tokens", "128"))
        self.max_input_len = int(_param(config, "max_input_len", "2048"))
        threads = int(_param(config, "cpu_threads", "0"))
        if threads > 0:
            torch.set_num_threads(threads)
        dtype_name = _param(config, "dtype", "auto")
        dtype = "auto" if dtype_name == "auto" else getattr(torch, dtype_name)
        self.tokenizer = AutoTokenizer.from_pretrained(checkpoint)
        # Keep the end of an over-long prompt: that is what the answer continues.
        self.tokenizer.truncation_side = "left"
        self.model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=dtype)
        self.model.to(self.device).eval()
        pad = self.tokenizer.pad_token_id
        self.pad_token_id = self.tokenizer.eos_token_id if pad is None else pad
        self.torch = torch
        # One generate() at a time: a single model copy; requests queue on this lock.
        self.lock = threading.Lock()
        self.logger = pb_utils.Logger
        self.logger.log_info(
            f"transformers: {checkpoint} on {self.device} ({dtype_name}, "
            f"{torch.get_num_threads()} threads)"
        )

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
                pb_utils.InferenceResponse(
                    output_tensors=[], error=pb_utils.TritonError(f"transformers: {exc}")
                ),
                flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL,
            )

    def _generate(self, request: Any, sender: Any) -> None:
        raw = _scalar(request, "text_input")
        prompt = raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
        max_tokens = _scalar(request, "max_tokens")
        limit = self.default_max_tokens if max_tokens is None else int(max_tokens)
        if limit < 1:
            raise ValueError(f"max_tokens must be at least 1, got {limit}")
        stream = bool(_scalar(request, "stream") or False)
        stop = _StopText(_strings(request, "stop_words"))
        kwargs = self._sampling(request)
        inputs = self.tokenizer(
            prompt, return_tensors="pt", truncation=True, max_length=self.max_input_len
        ).to(self.device)
        pieces: queue.Queue[Any] = queue.Queue()
        cancel = threading.Event()
        with self.lock:
            seeds = [_scalar(request, name) for name in _SEED_NAMES]
            seed = next((s for s in seeds if s is not None), None)
            if seed is not None:
                self.torch.manual_seed(int(seed))  # under the lock: no other request draws
            worker = threading.Thread(
                target=self._run,
                args=(inputs, pieces, cancel, limit, kwargs),
                daemon=True,
            )
            worker.start()
            text: list[str] = []
            while (piece := pieces.get()) is not _DONE:
                if isinstance(piece, Exception):
                    raise piece
                if sender.is_cancelled():
                    cancel.set()  # generate() stops at its next token
                    continue
                out = stop.feed(piece)
                if stream and out:
                    sender.send(self._response(out))
                text.append(out)
                if stop.stopped:
                    cancel.set()
            worker.join()
        if sender.is_cancelled():
            # As the synthetic model: Triton closes a cancelled request itself.
            self.logger.log_info(f"transformers: cancelled after {len(text)} pieces")
            return
        rest = stop.flush()
        final = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
        if stream:
            # A generation that ends before any text (an immediate end token, say) still
            # answers with a text_output, as readiness probes and clients expect one.
            if rest or not any(text):
                sender.send(self._response(rest), flags=final)
            else:
                sender.send(flags=final)
        else:
            sender.send(self._response("".join(text) + rest), flags=final)

    def _run(
        self,
        inputs: Any,
        pieces: queue.Queue[Any],
        cancel: threading.Event,
        limit: int,
        kwargs: dict[str, Any],
    ) -> None:
        """Generate in this thread, putting each token's text on ``pieces``, then ``_DONE``."""
        from transformers import StoppingCriteria, StoppingCriteriaList
        from transformers.generation.streamers import BaseStreamer

        detokenizer = _TokenText(self.tokenizer)

        class Streamer(BaseStreamer):  # type: ignore[misc]
            def __init__(self) -> None:
                self.prompt_seen = False

            def put(self, value: Any) -> None:
                if not self.prompt_seen:  # generate() first hands over the prompt itself
                    self.prompt_seen = True
                    return
                for token_id in value.reshape(-1).tolist():
                    piece = detokenizer.add(int(token_id))
                    if piece:
                        pieces.put(piece)

            def end(self) -> None:
                pass

        torch = self.torch

        class Cancelled(StoppingCriteria):  # type: ignore[misc]
            def __call__(self, input_ids: Any, scores: Any, **_: Any) -> Any:
                done = cancel.is_set()
                return torch.full((input_ids.shape[0],), done, device=input_ids.device)

        try:
            with self.torch.no_grad():
                self.model.generate(
                    **inputs,
                    max_new_tokens=limit,
                    streamer=Streamer(),
                    stopping_criteria=StoppingCriteriaList([Cancelled()]),
                    pad_token_id=self.pad_token_id,
                    **kwargs,
                )
        except Exception as exc:  # handed to the sending thread, which reports it
            pieces.put(exc)
        finally:
            pieces.put(_DONE)

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
            if top_p is not None and 0 < float(top_p) <= 1:
                kwargs["top_p"] = float(top_p)
            # generate() defaults top_k to 50; an explicit 0 means "no top-k" as in TRT-LLM.
            kwargs["top_k"] = int(top_k) if top_k is not None else 0
        if end_id is not None:
            kwargs["eos_token_id"] = int(end_id)
        return kwargs

    @staticmethod
    def _response(text: str) -> Any:
        array = np.array([[text.encode("utf-8")]], dtype=np.object_)
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("text_output", array)])
