"""KServe v2 gRPC streaming (``ModelStreamInfer``), straight to Triton or to the gateway.

``grpc.aio`` with one bidirectional call per request: each call is its own HTTP/2 stream, so
no client object is shared by two streams (tritonclient's sync client allows one stream per
client). Calls are spread over several channels, ``STREAMS_PER_CHANNEL`` users each, because a
single HTTP/2 connection became the bottleneck for peers at high concurrency.

The request encoding is the gateway's own (``router_service.triton_codec``), the one place that
speaks Triton's tensor layout. Arrival time is taken right after the message is handed to the
coroutine, before decoding. A response with text is one token (``n = 1``; one decoding step per
Triton response with beam width 1); empty responses, such as the final one flagged
``triton_final_response``, are counted and never timed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from expert_deploy.bench.errors import BenchError
from expert_deploy.bench.records import RequestRecord

if TYPE_CHECKING:
    import grpc.aio

STREAMS_PER_CHANNEL = 100


@dataclass(frozen=True)
class GrpcTarget:
    """``host:port`` of a Triton server or a gateway's gRPC front end, and the model name."""

    address: str
    model: str
    api_key: str | None = None

    @classmethod
    def parse(cls, address: str, *, model: str, api_key: str | None = None) -> GrpcTarget:
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise BenchError(f"--grpc {address!r}: expected HOST:PORT")
        return cls(address, model, api_key)


class GrpcClients:
    """The channels of one worker process and the stubs on them."""

    def __init__(self, target: GrpcTarget, streams: int) -> None:
        import grpc.aio
        from tritonclient.grpc import service_pb2_grpc

        from router_service.config import TensorNames

        self.target = target
        count = max(1, -(-streams // STREAMS_PER_CHANNEL))
        options = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]
        self.channels = [
            grpc.aio.insecure_channel(target.address, options=options) for _ in range(count)
        ]
        self.stubs = [service_pb2_grpc.GRPCInferenceServiceStub(c) for c in self.channels]
        self.names = TensorNames()
        self.metadata: tuple[tuple[str, str], ...] = (
            (("authorization", f"Bearer {target.api_key}"),) if target.api_key else ()
        )

    def request(self, request_id: str, prompt: str, max_tokens: int | None) -> Any:
        """A ModelInferRequest, built before the send time is taken."""
        from router_service.triton_codec import SamplingParams, build_infer_request

        return build_infer_request(
            model=self.target.model,
            request_id=request_id,
            prompt=prompt,
            params=SamplingParams(max_tokens=max_tokens if max_tokens is not None else 1000),
            names=self.names,
        )

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close()


async def stream_grpc(clients: GrpcClients, user: int, record: RequestRecord, request: Any) -> None:
    """Run one streamed request on the user's channel; never raises (errors go in ``record``)."""
    import grpc

    from router_service.triton_codec import decode_stream_response

    stub = clients.stubs[user % len(clients.stubs)]
    call: grpc.aio.StreamStreamCall[Any, Any] = stub.ModelStreamInfer(metadata=clients.metadata)
    try:
        record.s_ns = time.perf_counter_ns()
        await call.write(request)
        async for message in call:
            now = time.perf_counter_ns()  # first: the arrival time of this response
            decoded = decode_stream_response(message, text_output=clients.names.text_output)
            if decoded.error:
                record.end_ns = now
                record.fail("stream_error", decoded.error)
                return
            if decoded.text:
                record.r_ns.append(now)
                record.n.append(1)
                if len(record.r_ns) == 1:
                    _read_routing(message, record)
            else:
                record.empty_responses += 1
            if decoded.is_final:
                record.end_ns = now
                record.status = "ok"
                return
        record.end_ns = time.perf_counter_ns()
        record.fail("truncated", "the stream closed before the final response")
    except grpc.aio.AioRpcError as error:
        record.end_ns = time.perf_counter_ns()
        record.fail(f"grpc_{error.code().name.lower()}", error.details() or str(error.code()))
    finally:
        call.cancel()


def _read_routing(message: Any, record: RequestRecord) -> None:
    """The expert, cluster and overhead the gateway's gRPC front end reports on a first
    response (response parameters ``expert_router_*``); absent when talking to Triton directly."""
    parameters = message.infer_response.parameters
    if "expert_router_expert" in parameters:
        record.expert = parameters["expert_router_expert"].string_param
    if "expert_router_cluster" in parameters:
        record.routed_cluster = int(parameters["expert_router_cluster"].int64_param)
    if "expert_router_overhead_ms" in parameters:
        record.gateway_overhead_ms = parameters["expert_router_overhead_ms"].double_param
