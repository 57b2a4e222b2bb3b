"""The inventory: a typed, frozen description of one Expert Router deployment.

Every model forbids unknown keys, so a misspelt key is an error with a suggestion (see
``loader.py``), never silently ignored. Paths in an inventory are relative to the inventory
file; the loader passes that folder in the validation context.

Fields that usually repeat across experts live in ``ExpertSettings``; an inventory's
``defaults`` block has that shape and fills every key an expert does not set itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    model_validator,
)

from expert_deploy.inventory.toolchain import Quantization
from router_service.config import CpuNumber, distinct_cpus

EngineKind = Literal["tensorrt_llm", "transformers", "synthetic"]
KvCacheDtype = Literal["auto", "fp16", "bf16", "fp8", "int8"]
RuntimeKind = Literal["process", "docker", "ansible"]
Device = Literal["gpu", "cpu"]
Scaler = Literal["l2_normalizer", "standard"]
Fallback = Literal["next_nearest", "reject"]
Balancing = Literal["round_robin", "least_conn", "random"]

#: Names that end up in file names, container names and Prometheus labels.
Name = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]
Port = Annotated[int, Field(ge=1, le=65535)]


def _relative_to_inventory(value: Path, info: ValidationInfo) -> Path:
    """Resolve a relative path against the inventory file's folder (passed as context)."""
    base = (info.context or {}).get("base_dir")
    if base is None or value.is_absolute():
        return value
    return (Path(base) / value).resolve()


InventoryPath = Annotated[Path, AfterValidator(_relative_to_inventory)]


def parse_cpu_list(text: str) -> tuple[int, ...]:
    """``"12-15"`` or ``"0,2-3"`` (taskset's and cpuset's syntax) → CPU numbers.

    Raises:
        ValueError: not that syntax, or a range that runs backwards.
    """
    cpus: list[int] = []
    for part in text.replace(" ", "").split(","):
        first, dash, last = part.partition("-")
        if not first.isdigit() or (dash and not last.isdigit()) or int(last or first) < int(first):
            raise ValueError("expected a CPU list like 12-15 or 0,2-3")
        cpus.extend(range(int(first), int(last or first) + 1))
    return tuple(cpus)


def _cpu_list(value: Any) -> Any:
    return parse_cpu_list(value) if isinstance(value, str) else value


#: The gateway's CPU numbers, written as a list or as ``"12-15"`` / ``"0,2-3"``. Not
#: ``Annotated[CpuNumbers, ...]``: the duplicate check must wrap the parsing, so that its error
#: shows the value as the inventory wrote it.
CpuList = Annotated[
    tuple[CpuNumber, ...], BeforeValidator(_cpu_list), AfterValidator(distinct_cpus)
]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class GpuSpec(_Frozen):
    """The GPUs of one host; memory and compute capability default from the catalogue."""

    count: int = Field(ge=0, le=64)
    model: str | None = Field(default=None, description="a name from the GPU catalogue")
    memory_gib: float | None = Field(default=None, gt=0)
    compute_capability: str | None = Field(default=None, pattern=r"^\d+\.\d+$")


class Host(_Frozen):
    name: Name
    address: str = Field(min_length=1)
    gpus: GpuSpec = GpuSpec(count=0)
    ssh_user: str | None = None


class GeneratedModel(_Frozen):
    """A small Llama checkpoint made offline: random weights from ``seed``, a real tokenizer.

    The tokenizer is a byte-level BPE trained on ``corpus`` (the shipped prompt corpus when
    unset), so text round-trips; the weights are random, so generations are not prose. It
    lets the whole system run where no Hub is reachable (expert_deploy/checkpoints/generated.py).
    """

    hidden_size: int = Field(default=128, ge=8, le=4096)
    num_layers: int = Field(default=4, ge=1, le=64)
    num_heads: int = Field(default=4, ge=1, le=128)
    num_kv_heads: int = Field(default=2, ge=1, le=128)
    intermediate_size: int = Field(default=352, ge=8, le=65536)
    #: An upper bound: the tokenizer stops merging when the corpus has no pair left.
    vocab_size: int = Field(default=4096, ge=300, le=65536)
    max_position_embeddings: int = Field(default=4096, ge=16, le=131072)
    seed: int = Field(default=0, ge=0)
    corpus: InventoryPath | None = None

    @model_validator(mode="after")
    def _heads_divide(self) -> GeneratedModel:
        if self.hidden_size % self.num_heads or self.num_heads % self.num_kv_heads:
            raise ValueError(
                "num_heads must divide hidden_size and num_kv_heads must divide num_heads "
                f"(got {self.hidden_size}, {self.num_heads}, {self.num_kv_heads})"
            )
        return self

    @property
    def label(self) -> str:
        """A stable repository-like name for logs and checkpoints.json (not a Hub repo)."""
        sizes = (self.hidden_size, self.num_layers, self.num_heads, self.num_kv_heads)
        return f"generated/llama-{'x'.join(map(str, sizes))}-seed{self.seed}"


class ModelSource(_Frozen):
    """Where an expert's weights come from: a Hugging Face repository at a revision, or
    ``generate:`` for a small random-weight Llama made offline (``repo`` is then its label).
    """

    repo: str = Field(pattern=r"^[\w.-]+/[\w.-]+$")
    revision: str = Field(default="main", min_length=1)
    #: A local config.json for architectures the planner does not know.
    config: InventoryPath | None = None
    generate: GeneratedModel | None = None

    @model_validator(mode="before")
    @classmethod
    def _label_generated(cls, data: Any) -> Any:
        # A generated model has no Hub repository; its label fills `repo` so that every
        # consumer of `repo@revision` (fetch table, checkpoints.json, plan) keeps working.
        if not isinstance(data, dict) or data.get("generate") is None:
            return data
        if "repo" in data or "config" in data:
            raise ValueError(
                "give either repo (a Hugging Face checkpoint) or generate (a small checkpoint "
                "made offline), not both; remove one"
            )
        try:
            label = GeneratedModel.model_validate(data["generate"]).label
        except ValidationError:
            label = "generated/invalid"  # the `generate` field reports the actual problem
        return {**data, "repo": label}


class Placement(_Frozen):
    """Where an expert runs: a host and, on GPUs, replicas × TP × PP GPU indices."""

    host: str
    gpus: tuple[Annotated[int, Field(ge=0)], ...] = ()


class ExpertPorts(_Frozen):
    http: Port | None = None
    grpc: Port | None = None
    metrics: Port | None = None


class SyntheticSpec(_Frozen):
    """A weightless expert that streams ``tokens`` tokens with a known TTFT and TPOT."""

    ttft_ms: float = Field(default=50.0, ge=0)
    tpot_ms: float = Field(default=10.0, ge=0)
    tokens: int = Field(default=128, ge=1)


class ExpertSettings(_Frozen):
    """Serving settings of an expert; also the shape of the inventory's ``defaults``."""

    engine: EngineKind = "tensorrt_llm"
    quantization: Quantization = "bf16"
    kv_cache_dtype: KvCacheDtype = "auto"
    tp_size: int = Field(default=1, ge=1, le=64)
    pp_size: int = Field(default=1, ge=1, le=64)
    max_batch_size: int = Field(default=64, ge=1)
    max_input_len: int = Field(default=2048, ge=1)
    max_seq_len: int = Field(default=4096, ge=2)
    max_num_tokens: int | None = Field(default=None, ge=1)
    kv_cache_free_gpu_mem_fraction: float = Field(default=0.9, gt=0, le=1)
    #: CUDA context, activations and workspace the planner reserves besides weights and KV.
    runtime_overhead_gib: float = Field(default=3.0, ge=0)
    #: ``None`` means: GPU for tensorrt_llm, CPU for synthetic and transformers.
    device: Device | None = None
    startup_budget_s: float = Field(default=1800.0, gt=0)
    #: Identical servers of this expert (the gateway picks the least busy one).
    replicas: int = Field(default=1, ge=1, le=64)
    synthetic: SyntheticSpec = SyntheticSpec()
    #: Local dataset folder for the FP8/INT4-AWQ calibration (quantize.py ``--calib_dataset``);
    #: the default (cnn_dailymail) would be downloaded inside the build container.
    calib_dataset: InventoryPath | None = None


class Expert(ExpertSettings):
    id: Name
    cluster: int = Field(ge=0)
    model: ModelSource | None = None
    placement: Placement | None = None
    ports: ExpertPorts = ExpertPorts()

    @property
    def resolved_device(self) -> Device:
        if self.device is not None:
            return self.device
        return "gpu" if self.engine == "tensorrt_llm" else "cpu"

    @property
    def gpus_needed(self) -> int:
        """GPUs this expert's server takes: TP × PP ranks, or none on the CPU."""
        return self.tp_size * self.pp_size if self.resolved_device == "gpu" else 0


class DockerRuntime(_Frozen):
    """Options of ``runtime: {kind: docker, docker: {...}}`` (runtime/docker_launcher.py)."""

    #: The gateway image: Python with expert-deploy[router] installed (router_service).
    gateway_image: str = "expert-deploy/gateway:latest"
    nginx_image: str = "nginx:1.27"
    shm_size: str = Field(default="2g", pattern=r"^[0-9]+[bkmg]?$")
    #: -1 = unlimited, as NVIDIA documents; a daemon without CAP_SYS_RESOURCE refuses it.
    memlock_bytes: int = Field(default=-1, ge=-1)
    stack_bytes: int = Field(default=67_108_864, ge=1)
    restart_policy: Literal["no", "on-failure", "unless-stopped", "always"] = "unless-stopped"
    #: tensorrtllm_backend checkout of the toolchain's tag, mounted at /opt/tensorrtllm_backend.
    tensorrtllm_backend_dir: InventoryPath | None = None


class Runtime(_Frozen):
    kind: RuntimeKind = "process"
    docker: DockerRuntime = DockerRuntime()

    @model_validator(mode="before")
    @classmethod
    def _accept_bare_name(cls, data: Any) -> Any:
        # `runtime: docker` is how people write it; the mapping form leaves room for options.
        return {"kind": data} if isinstance(data, str) else data


class FitSource(_Frozen):
    """Fit the c-BTM router on a JSONL corpus (one ``{"text": ...}`` per line)."""

    kind: Literal["fit"]
    corpus: InventoryPath
    text_field: str = "text"
    seed: int = 0


class ArtifactSource(_Frozen):
    """Use a router already saved as arrays (``expert-deploy router fit --out``)."""

    kind: Literal["artifact"]
    path: InventoryPath


class CbtmSource(_Frozen):
    """Convert the published c-BTM pickles (trusted files only) into arrays."""

    kind: Literal["cbtm"]
    tfidf: InventoryPath
    kmeans: InventoryPath


RouterSource = Annotated[FitSource | ArtifactSource | CbtmSource, Field(discriminator="kind")]


class RouterSpec(_Frozen):
    source: RouterSource
    k: int = Field(ge=1, le=1024)
    scaler: Scaler = "l2_normalizer"
    fallback: Fallback = "next_nearest"


class AuthSpec(_Frozen):
    """Where the gateway finds its secrets: names of variables and files, never values."""

    api_keys_env: str | None = "EXPERT_DEPLOY_API_KEYS"
    api_keys_file: InventoryPath | None = None
    admin_token_env: str = "EXPERT_DEPLOY_ADMIN_TOKEN"  # noqa: S105 (a variable name)


class GatewaySpec(_Frozen):
    replicas: int = Field(default=2, ge=1, le=256)
    #: Host the replicas run on; the first host when unset.
    host: str | None = None
    http_base_port: Port = 9000
    grpc_base_port: Port = 9100
    admin_base_port: Port = 9200
    auth: AuthSpec = AuthSpec()
    #: CPUs the replicas run on (all of them share the set), e.g. ``"12-15"``; unset: where
    #: the OS puts them. Cores of their own keep a replica from queueing behind Triton; fewer
    #: CPUs than replicas is a plan warning (replicas on one core slow each other).
    cpus: CpuList = ()
    #: How often an idle replica rehearses its request path to keep it in the CPU caches
    #: (router_service.keep_warm: 0.2-0.3 ms less time to first token when requests are sparse,
    #: one rehearsal's CPU per interval); 0 turns it off.
    keep_warm_ms: float = Field(default=2.0, ge=0)


class NginxTlsSpec(_Frozen):
    """Paths of the PEM certificate (chain) and its key; only the paths reach nginx.conf."""

    certificate: InventoryPath
    certificate_key: InventoryPath


class NginxSpec(_Frozen):
    enabled: bool = True
    listen_port: Port = 8080
    #: KServe v2 gRPC listener; ``None`` means listen_port + 1.
    grpc_listen_port: Port | None = None
    strategy: Balancing = "round_robin"
    tls: NginxTlsSpec | None = None


class TritonSpec(_Frozen):
    """Port blocks of the per-expert Triton servers: expert j on a host gets base + j × stride."""

    http_base_port: Port = 8000
    grpc_base_port: Port = 8001
    metrics_base_port: Port = 8002
    port_stride: int = Field(default=10, ge=3)


class Inventory(_Frozen):
    """A whole deployment: hosts, experts, router, gateway, NGINX."""

    name: Name
    toolchain: str = "trtllm-0.11"
    runtime: Runtime = Runtime()
    hosts: tuple[Host, ...] = Field(min_length=1)
    defaults: ExpertSettings | None = None
    experts: tuple[Expert, ...] = Field(min_length=1)
    router: RouterSpec
    gateway: GatewaySpec = GatewaySpec()
    nginx: NginxSpec = NginxSpec()
    triton: TritonSpec = TritonSpec()

    @model_validator(mode="before")
    @classmethod
    def _apply_defaults(cls, data: Any) -> Any:
        """Fill each expert's missing keys from ``defaults`` before the experts validate."""
        if not isinstance(data, dict):
            return data
        defaults = data.get("defaults")
        experts = data.get("experts")
        if not isinstance(defaults, dict) or not isinstance(experts, list):
            return data
        merged = [{**defaults, **e} if isinstance(e, dict) else e for e in experts]
        return {**data, "experts": merged}

    def host(self, name: str) -> Host | None:
        return next((h for h in self.hosts if h.name == name), None)

    def expert(self, expert_id: str) -> Expert | None:
        return next((e for e in self.experts if e.id == expert_id), None)
