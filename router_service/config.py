"""Gateway configuration: typed, frozen models loaded from one YAML file.

The routing table (``routing``) is the part the admin API can replace at run time; everything
else is fixed for the life of the process. Validation that needs the classifier (every cluster
``0..k-1`` mapped exactly once) happens in :func:`validate_against_k`, called at start-up and on
every table or classifier swap. No heavy imports here: ``expert_deploy`` imports this module to
validate the gateway config it renders.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

__all__ = [
    "AuthConfig",
    "ChatPromptConfig",
    "ClassifierConfig",
    "ConfigError",
    "CpuNumber",
    "CpuNumbers",
    "ExpertSpec",
    "GatewayConfig",
    "HealthConfig",
    "KeepWarmConfig",
    "LimitsConfig",
    "RoutingTableSpec",
    "TensorNames",
    "TimeoutsConfig",
    "UpstreamSpec",
    "distinct_cpus",
    "load_config",
    "parse_routing_table",
    "validate_against_k",
]


class ConfigError(ValueError):
    """The gateway config (file or admin payload) is invalid; the message lists every problem."""


#: A CPU number as the kernel counts them (sched_setaffinity, taskset).
CpuNumber = Annotated[int, Field(ge=0)]


def distinct_cpus(cpus: tuple[int, ...]) -> tuple[int, ...]:
    """Validator: no CPU listed twice (the gateway's ``cpus``, the inventory's ``gateway.cpus``)."""
    if len(set(cpus)) != len(cpus):
        raise ValueError("a CPU is listed twice")
    return cpus


#: CPU numbers, each at most once.
CpuNumbers = Annotated[tuple[CpuNumber, ...], AfterValidator(distinct_cpus)]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class UpstreamSpec(_Frozen):
    """One Triton server hosting an expert."""

    host: str = "127.0.0.1"
    grpc_port: int = Field(ge=1, le=65535)
    model: str = Field(default="ensemble", min_length=1, description="Triton model name")

    @property
    def address(self) -> str:
        """``host:port`` as gRPC expects it."""
        return f"{self.host}:{self.grpc_port}"


class ExpertSpec(_Frozen):
    """An expert: the clusters it serves and the Triton servers that host it."""

    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    clusters: tuple[int, ...] = Field(min_length=1)
    upstreams: tuple[UpstreamSpec, ...] = Field(min_length=1)


class RoutingTableSpec(_Frozen):
    """The versioned cluster → expert map; replaced whole through the admin API."""

    generation: int = Field(ge=0)
    experts: tuple[ExpertSpec, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _check_unique(self) -> RoutingTableSpec:
        ids = [expert.id for expert in self.experts]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"expert ids must be unique; repeated: {duplicates}")
        clusters = [c for expert in self.experts for c in expert.clusters]
        repeated = sorted({c for c in clusters if clusters.count(c) > 1})
        if repeated:
            raise ValueError(f"each cluster must map to exactly one expert; repeated: {repeated}")
        if any(c < 0 for c in clusters):
            raise ValueError("cluster ids must be >= 0")
        return self


class TensorNames(_Frozen):
    """Triton tensor names; they changed between TensorRT-LLM versions (defaults: v0.11/v0.12)."""

    text_input: str = "text_input"
    max_tokens: str = "max_tokens"
    stream: str = "stream"
    temperature: str = "temperature"
    top_p: str = "top_p"
    top_k: str = "top_k"
    stop_words: str = "stop_words"
    end_id: str = "end_id"
    # Older ensembles call it random_seed; some newer ones renamed it to seed.
    seed: str = "random_seed"
    text_output: str = "text_output"


class LimitsConfig(_Frozen):
    """Request-size limits and per-upstream concurrency."""

    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    max_prompt_chars: int = Field(default=100_000, ge=1)
    max_tokens_cap: int = Field(default=4096, ge=1)
    default_max_tokens: int = Field(default=256, ge=1)
    max_inflight_per_upstream: int = Field(default=256, ge=1)
    max_queue_per_upstream: int = Field(default=1024, ge=0)
    channels_per_upstream: int = Field(default=1, ge=1, le=64)
    # ModelStreamInfer calls kept open between requests, per server (0: a new call each time).
    idle_streams_per_upstream: int = Field(default=64, ge=0)


class TimeoutsConfig(_Frozen):
    """Timeouts, all in seconds."""

    connect_s: float = Field(default=2.0, gt=0)
    first_token_s: float = Field(default=120.0, gt=0)
    idle_stream_s: float = Field(default=60.0, gt=0)
    queue_wait_s: float = Field(default=30.0, gt=0)
    drain_deadline_s: float = Field(default=30.0, ge=0)
    shutdown_grace_s: float = Field(default=5.0, ge=0)


class HealthConfig(_Frozen):
    """Active readiness probes and passive ejection (circuit breaker)."""

    interval_s: float = Field(default=2.0, gt=0)
    probe_timeout_s: float = Field(default=1.0, gt=0)
    failure_threshold: int = Field(default=3, ge=1)
    cooldown_s: float = Field(default=5.0, gt=0)


class KeepWarmConfig(_Frozen):
    """Rehearse the request path while the replica waits, so its code stays in the CPU caches.

    Every ``interval_ms`` in which no request started, the replica runs a canned request through
    its pure steps (HTTP and gRPC parsing, validation, classification, the upstream request's
    encoding, decoding and the first event's encoding; no I/O, metrics or logs). It stops
    ``idle_after_s`` after the last request, so an unused replica costs nothing; the first request
    after that starts it again. ``interval_ms: 0`` turns it off. See ``router_service.keep_warm``
    for what it saves and costs.
    """

    interval_ms: float = Field(default=2.0, ge=0)
    idle_after_s: float = Field(default=60.0, gt=0)


class AuthConfig(_Frozen):
    """Where secrets come from; the secrets themselves never appear in the config."""

    api_keys_env: str | None = "EXPERT_ROUTER_API_KEYS"
    api_keys_file: Path | None = None
    admin_token_env: str = "EXPERT_ROUTER_ADMIN_TOKEN"  # noqa: S105 (a variable name)


class ChatPromptConfig(_Frozen):
    """How a chat request becomes the text that is classified and sent to the expert.

    ``classify``: ``last_user`` classifies the last user message (as RouteLLM and the NVIDIA
    blueprint do); ``all_messages`` classifies the concatenation of every message's content.
    The expert always receives the rendered conversation: each message as ``"{role}: {content}"``
    joined by ``separator``, followed by ``assistant_prefix``.
    """

    classify: Literal["last_user", "all_messages"] = "last_user"
    separator: str = "\n"
    assistant_prefix: str = "\nassistant:"


class ClassifierConfig(_Frozen):
    """How the replica holds the classifier artifact in memory.

    ``mmap`` maps the arrays read-only instead of copying them into the process: replicas on
    one host share the page cache, which matters for a c-BTM vocabulary near 1M terms (see
    ``router_service.classifier.arrays``). Off by default: a private copy cannot change under
    the replica if someone rewrites the artifact files in place.
    """

    mmap: bool = False


class GatewayConfig(_Frozen):
    """Everything a gateway replica needs; see the module docstring."""

    host: str = "127.0.0.1"
    http_port: int = Field(default=8000, ge=0, le=65535)
    grpc_port: int | None = Field(default=None, ge=0, le=65535)
    admin_host: str = "127.0.0.1"
    admin_port: int = Field(default=8001, ge=0, le=65535)
    router_dir: Path
    classifier: ClassifierConfig = ClassifierConfig()
    routed_model_name: str = "expert-router"
    routing: RoutingTableSpec
    fallback: Literal["next_nearest", "reject"] = "next_nearest"
    retry_after_s: int = Field(default=1, ge=0)
    chat: ChatPromptConfig = ChatPromptConfig()
    tensors: TensorNames = TensorNames()
    limits: LimitsConfig = LimitsConfig()
    timeouts: TimeoutsConfig = TimeoutsConfig()
    health: HealthConfig = HealthConfig()
    keep_warm: KeepWarmConfig = KeepWarmConfig()
    auth: AuthConfig = AuthConfig()
    log_prompts: bool = False
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    #: CPUs the replica runs on (every thread; set before the first one starts). Empty: where
    #: the OS puts it. A gateway sharing cores with Triton and the clients waits for them.
    cpus: CpuNumbers = ()


def _format_validation_error(error: ValidationError, source: str) -> str:
    lines = [f"{source}: {error.error_count()} problem(s)"]
    for item in error.errors():
        path = ".".join(str(part) for part in item["loc"]) or "<root>"
        lines.append(f"  {path}: {item['msg']}")
    return "\n".join(lines)


def load_config(path: Path) -> GatewayConfig:
    """Read and validate a gateway config YAML file.

    Relative ``router_dir`` and ``auth.api_keys_file`` are resolved against the file's folder.

    Raises:
        ConfigError: the file is missing, is not YAML, or does not validate.
    """
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read gateway config: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    try:
        config = GatewayConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, str(path))) from exc
    base = path.resolve().parent
    updates: dict[str, object] = {"router_dir": base / config.router_dir}
    if config.auth.api_keys_file is not None:
        updates["auth"] = config.auth.model_copy(
            update={"api_keys_file": base / config.auth.api_keys_file}
        )
    return config.model_copy(update=updates)


def parse_routing_table(payload: object) -> RoutingTableSpec:
    """Validate an admin-API routing table payload.

    Raises:
        ConfigError: one line per problem.
    """
    try:
        return RoutingTableSpec.model_validate(payload)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, "routing table")) from exc


def validate_against_k(table: RoutingTableSpec, k: int) -> None:
    """Check that the table maps every cluster ``0..k-1`` exactly once and nothing else.

    Raises:
        ConfigError: clusters missing from the table or beyond the classifier's k.
    """
    mapped = {c for expert in table.experts for c in expert.clusters}
    missing = sorted(set(range(k)) - mapped)
    extra = sorted(mapped - set(range(k)))
    problems = []
    if missing:
        problems.append(f"clusters not mapped to any expert: {missing}")
    if extra:
        problems.append(f"clusters outside 0..{k - 1} of the loaded classifier: {extra}")
    if problems:
        raise ConfigError(f"routing table generation {table.generation}: " + "; ".join(problems))
