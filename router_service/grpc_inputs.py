"""Decode the input tensors of a KServe v2 ``ModelInferRequest`` into a prompt and sampling.

A client may send each tensor's data either in ``raw_input_contents`` (one little-endian
buffer per input, in input order; what ``tritonclient`` does) or in the typed ``contents``
field that matches the datatype (``int_contents`` for INT32, ``bytes_contents`` for BYTES,
...). Both are checked against the declared shape: the gateway serves one prompt per request,
so every tensor except ``stop_words`` must hold exactly one element, and a buffer whose size
does not match ``shape × element size`` is refused rather than read past or truncated.

Parameters are checked by kind, not by exact dtype (the gateway re-encodes them for Triton):
integer inputs accept any integer type, float inputs any integer or float type, with the same
ranges as the OpenAI front end. Every problem is a :class:`BadRequestError` naming the tensor,
which the gRPC front end turns into ``INVALID_ARGUMENT``.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

from router_service.config import LimitsConfig, TensorNames
from router_service.errors import BadRequestError
from router_service.triton_codec import SamplingParams

if TYPE_CHECKING:
    from tritonclient.grpc import service_pb2

__all__ = ["DecodedInputs", "InferInputs", "decode_inputs"]

_LENGTH = struct.Struct("<I")
# datatype -> (struct format of one element, typed contents field)
_FIXED: dict[str, tuple[str, str]] = {
    "BOOL": ("?", "bool_contents"),
    "INT8": ("b", "int_contents"),
    "INT16": ("h", "int_contents"),
    "INT32": ("i", "int_contents"),
    "INT64": ("q", "int64_contents"),
    "UINT8": ("B", "uint_contents"),
    "UINT16": ("H", "uint_contents"),
    "UINT32": ("I", "uint_contents"),
    "UINT64": ("Q", "uint64_contents"),
    "FP32": ("f", "fp32_contents"),
    "FP64": ("d", "fp64_contents"),
}
_INTEGER_TYPES = ("INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64")
_FLOAT_TYPES = (*_INTEGER_TYPES, "FP32", "FP64")
_INT32_MAX = 2**31 - 1
Number = int | float | bool


@dataclass(frozen=True, slots=True)
class _Tensor:
    datatype: str
    shape: tuple[int, ...]
    raw: bytes | None
    contents: service_pb2.InferTensorContents


@dataclass(frozen=True, slots=True)
class DecodedInputs:
    """The prompt and sampling settings of one request."""

    prompt: str
    params: SamplingParams


def _split_bytes(raw: bytes, name: str) -> list[bytes]:
    """Split a BYTES tensor buffer (4-byte little-endian length, then the bytes, repeated)."""
    parts: list[bytes] = []
    offset = 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise BadRequestError(f"input '{name}': truncated BYTES length prefix", param=name)
        (length,) = _LENGTH.unpack_from(raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise BadRequestError(
                f"input '{name}': a BYTES element claims {length} bytes but only "
                f"{len(raw) - offset} remain",
                param=name,
            )
        parts.append(raw[offset : offset + length])
        offset += length
    return parts


class InferInputs:
    """The input tensors of one ModelInferRequest by name, read with shape checks."""

    def __init__(self, request: service_pb2.ModelInferRequest) -> None:
        raw_count = len(request.raw_input_contents)
        if raw_count and raw_count != len(request.inputs):
            raise BadRequestError(
                f"raw_input_contents has {raw_count} entries for {len(request.inputs)} inputs; "
                "send one buffer per input, in input order"
            )
        self._tensors: dict[str, _Tensor] = {}
        for index, tensor in enumerate(request.inputs):
            if tensor.name in self._tensors:
                raise BadRequestError(f"input '{tensor.name}' is given twice", param=tensor.name)
            shape = tuple(int(d) for d in tensor.shape)
            if any(d < 0 for d in shape):
                raise BadRequestError(
                    f"input '{tensor.name}' has shape {list(shape)}; dimensions must be >= 0",
                    param=tensor.name,
                )
            raw = bytes(request.raw_input_contents[index]) if raw_count else None
            self._tensors[tensor.name] = _Tensor(tensor.datatype, shape, raw, tensor.contents)

    @staticmethod
    def _check_count(name: str, tensor: _Tensor, found: int) -> None:
        count = math.prod(tensor.shape)
        if found != count:
            raise BadRequestError(
                f"input '{name}' has shape {list(tensor.shape)} ({count} elements) but "
                f"{found} values",
                param=name,
            )

    def _bytes_values(self, name: str, tensor: _Tensor) -> list[bytes]:
        if tensor.raw is not None:
            values = _split_bytes(tensor.raw, name)
        else:
            values = list(tensor.contents.bytes_contents)
        self._check_count(name, tensor, len(values))
        return values

    def _fixed_values(self, name: str, tensor: _Tensor) -> list[Number]:
        fmt, field = _FIXED[tensor.datatype]  # callers admit only datatypes listed there
        if tensor.raw is None:
            values: list[Number] = list(getattr(tensor.contents, field))
        else:
            count = math.prod(tensor.shape)
            size = struct.calcsize(fmt)
            if len(tensor.raw) != count * size:
                raise BadRequestError(
                    f"input '{name}' ({tensor.datatype}, shape {list(tensor.shape)}) needs "
                    f"{count * size} bytes of raw contents, got {len(tensor.raw)}",
                    param=name,
                )
            values = list(struct.unpack(f"<{count}{fmt}", tensor.raw))
        self._check_count(name, tensor, len(values))
        return values

    def strings(self, name: str) -> list[str] | None:
        """All elements of a BYTES input as UTF-8 text (``None`` when the input is absent)."""
        tensor = self._tensors.get(name)
        if tensor is None:
            return None
        if tensor.datatype != "BYTES":
            raise BadRequestError(
                f"input '{name}' must be BYTES, got {tensor.datatype}", param=name
            )
        try:
            return [v.decode("utf-8") for v in self._bytes_values(name, tensor)]
        except UnicodeDecodeError as exc:
            raise BadRequestError(f"input '{name}' is not UTF-8", param=name) from exc

    def string(self, name: str) -> str | None:
        """The single element of a BYTES input."""
        values = self.strings(name)
        if values is None:
            return None
        if len(values) != 1:
            raise BadRequestError(
                f"input '{name}' must hold one element (batch size 1), got {len(values)}",
                param=name,
            )
        return values[0]

    def _scalar(self, name: str, allowed: tuple[str, ...]) -> Number | None:
        tensor = self._tensors.get(name)
        if tensor is None:
            return None
        if tensor.datatype not in allowed:
            raise BadRequestError(
                f"input '{name}' must be one of {', '.join(allowed)}, got {tensor.datatype}",
                param=name,
            )
        values = self._fixed_values(name, tensor)
        if len(values) != 1:
            raise BadRequestError(
                f"input '{name}' must hold one element (batch size 1), got {len(values)}",
                param=name,
            )
        return values[0]

    def integer(self, name: str, *, low: int, high: int) -> int | None:
        """An integer scalar in ``low..high`` (any integer datatype)."""
        value = self._scalar(name, _INTEGER_TYPES)
        if value is None:
            return None
        number = int(value)
        if not low <= number <= high:
            raise BadRequestError(f"input '{name}' is {number}; allowed {low}..{high}", param=name)
        return number

    def real(self, name: str, *, low: float, high: float, low_open: bool = False) -> float | None:
        """A finite number in ``[low, high]`` (``(low, high]`` with ``low_open``)."""
        value = self._scalar(name, _FLOAT_TYPES)
        if value is None:
            return None
        number = float(value)
        is_low_ok = number > low if low_open else number >= low
        if not (math.isfinite(number) and is_low_ok and number <= high):
            bracket = "(" if low_open else "["
            raise BadRequestError(
                f"input '{name}' is {number}; allowed {bracket}{low}, {high}]", param=name
            )
        return number


def decode_inputs(
    request: service_pb2.ModelInferRequest, *, names: TensorNames, limits: LimitsConfig
) -> DecodedInputs:
    """The prompt and sampling settings a KServe v2 request carries.

    Raises:
        BadRequestError: a missing prompt, a wrong datatype or shape, a buffer that does not
            match its shape, or a value out of range (same ranges as the OpenAI front end).
    """
    inputs = InferInputs(request)
    prompt = inputs.string(names.text_input)
    if prompt is None:
        raise BadRequestError(f"input '{names.text_input}' is required", param=names.text_input)
    if len(prompt) > limits.max_prompt_chars:
        raise BadRequestError(
            f"the prompt has {len(prompt)} characters; at most {limits.max_prompt_chars}",
            param=names.text_input,
        )
    max_tokens = inputs.integer(names.max_tokens, low=1, high=limits.max_tokens_cap)
    if max_tokens is None:
        max_tokens = min(limits.default_max_tokens, limits.max_tokens_cap)
    params = SamplingParams(
        max_tokens=max_tokens,
        temperature=inputs.real(names.temperature, low=0.0, high=2.0),
        top_p=inputs.real(names.top_p, low=0.0, high=1.0, low_open=True),
        top_k=inputs.integer(names.top_k, low=0, high=_INT32_MAX),
        seed=inputs.integer(names.seed, low=0, high=2**64 - 1),
        end_id=inputs.integer(names.end_id, low=0, high=_INT32_MAX),
        stop=tuple(inputs.strings(names.stop_words) or ()),
    )
    return DecodedInputs(prompt, params)
