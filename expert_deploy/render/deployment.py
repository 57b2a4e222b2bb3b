"""``render_deployment``: every file of a deployment, rendered, checked and written at once.

Layout of ``<workdir>/rendered/``::

    triton/<expert>-<replica>/...   one Triton model repository per server
    nginx/nginx.conf                when nginx is enabled
    gateway/gateway-<r>.yaml        one per gateway replica
    ansible/vars.yaml               hosts, servers, ports, image (no secrets)

Byte-deterministic: the same inputs give the same bytes (sorted keys, no timestamps).
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from expert_deploy.errors import RenderError
from expert_deploy.inventory.loader import LoadedInventory
from expert_deploy.plan.planner import Plan
from expert_deploy.render.environment import make_environment
from expert_deploy.render.gateway import (
    ansible_vars,
    check_gateway_file,
    dump_yaml,
    gateway_config,
)
from expert_deploy.render.nginx import NginxTls, grpc_listen_port, nginx_context, render_nginx
from expert_deploy.render.python_models import render_python_repository
from expert_deploy.render.staging import Staging
from expert_deploy.render.trtllm import render_trtllm_repository
from expert_deploy.render.trtllm_values import ModelValues
from expert_deploy.settings import Settings

_HEADER = "Rendered by expert-deploy; do not edit (re-run `expert-deploy render`)."


@dataclass(frozen=True)
class RenderedFile:
    """One written file: path relative to ``rendered/``, its component and its sha256."""

    path: PurePosixPath
    component: str
    sha256: str
    symlink_to: str | None = None


@dataclass(frozen=True)
class RenderResult:
    """What a render wrote, and what it had to assume."""

    root: Path
    files: tuple[RenderedFile, ...]
    #: Per tensorrt_llm server: model → placeholder decisions (filled / left to the backend).
    placeholders: Mapping[str, Mapping[str, ModelValues]]
    #: Things a person should know, e.g. engine paths assumed because nothing was built yet.
    notes: tuple[str, ...]

    def by_component(self) -> dict[str, int]:
        """File count per component (``triton/expert-0-0``, ``nginx``, ``gateway``, ...)."""
        counts: dict[str, int] = {}
        for f in self.files:
            counts[f.component] = counts.get(f.component, 0) + 1
        return counts


def default_engine_dir(workdir: Path, expert_id: str) -> Path:
    """Where the engine cache is expected when ``build`` has not reported a path."""
    return workdir.resolve() / "engines" / expert_id


def default_tokenizer_dir(workdir: Path, expert_id: str) -> Path:
    """Where the checkpoint snapshot is expected when ``fetch`` has not reported a path."""
    return workdir.resolve() / "checkpoints" / expert_id


def render_deployment(
    loaded: LoadedInventory,
    plan: Plan,
    settings: Settings,
    *,
    router_dir: Path,
    engine_dirs: Mapping[str, Path] | None = None,
    tokenizer_dirs: Mapping[str, Path] | None = None,
    nginx_tls: NginxTls | None = None,
) -> RenderResult:
    """Render every file of ``plan`` into ``<settings.workdir>/rendered/`` (replaced whole).

    ``engine_dirs`` / ``tokenizer_dirs`` map expert id → path; an expert missing from them
    gets the path the workdir implies, and the result's ``notes`` say so.

    Raises:
        RenderError: a template, check or placeholder fails, or the workdir is not writable;
            in every case nothing under ``rendered/`` has changed.
    """
    if plan.errors:
        raise RenderError(f"the plan has {len(plan.errors)} error(s); run `expert-deploy plan`")
    env = make_environment(settings.templates_dir)
    staging = Staging()
    workdir = settings.workdir
    notes: list[str] = []
    placeholders: dict[str, dict[str, ModelValues]] = {}
    repositories: dict[str, str] = {}
    inventory = loaded.inventory
    destination = workdir.resolve() / "rendered"
    for server in plan.servers:
        expert = inventory.expert(server.expert_id)
        assert expert is not None
        root = f"triton/{server.name}"
        repositories[server.name] = str(destination / "triton" / server.name)
        engine_dir, engine_assumed = _path_for(engine_dirs, expert.id, default_engine_dir, workdir)
        tokenizer_dir, tok_assumed = _path_for(
            tokenizer_dirs, expert.id, default_tokenizer_dir, workdir
        )
        if expert.engine == "tensorrt_llm":
            if engine_assumed or tok_assumed:
                notes.append(
                    f"{server.name}: engine/tokenizer paths assumed ({engine_dir}, "
                    f"{tokenizer_dir}); re-render after fetch and build"
                )
            placeholders[server.name] = render_trtllm_repository(
                env,
                staging,
                root,
                expert=expert,
                server=server,
                toolchain=loaded.toolchain,
                engine_dir=engine_dir,
                tokenizer_dir=tokenizer_dir,
                assumed=engine_assumed or tok_assumed,
            )
        else:
            if expert.engine == "transformers" and tok_assumed:
                notes.append(f"{server.name}: checkpoint path assumed ({tokenizer_dir})")
            render_python_repository(
                env,
                staging,
                root,
                expert=expert,
                server=server,
                toolchain=loaded.toolchain,
                models_dir=settings.data_dir / "triton_models",
                checkpoint_dir=tokenizer_dir,
            )
    nginx_grpc = None
    if plan.nginx is not None:
        limits_body = gateway_config(loaded, plan, plan.gateways[0], router_dir).limits
        runtime_dir = workdir.resolve() / "run" / "nginx"
        context = nginx_context(inventory, plan, runtime_dir, nginx_tls, limits_body.max_body_bytes)
        staging.add_text("nginx/nginx.conf", render_nginx(env, context))
        nginx_grpc = grpc_listen_port(inventory)
        notes.append(
            f"nginx: gRPC on port {nginx_grpc}; the runtime creates "
            f"{runtime_dir}/logs and temp/ before starting it"
        )
    configs = {}
    for placement in plan.gateways:
        config = gateway_config(loaded, plan, placement, router_dir.resolve())
        configs[placement.replica] = config
        staging.add_text(
            f"gateway/gateway-{placement.replica}.yaml",
            dump_yaml(config.model_dump(mode="json"), _HEADER),
        )
    staging.add_text(
        "ansible/vars.yaml",
        dump_yaml(ansible_vars(loaded, plan, repositories, nginx_grpc), _HEADER),
    )
    _check_gateway_files(staging, configs)
    staging.commit(destination)
    return RenderResult(destination, _files(staging), placeholders, tuple(notes))


def _path_for(
    given: Mapping[str, Path] | None,
    expert_id: str,
    default: object,
    workdir: Path,
) -> tuple[Path, bool]:
    if given is not None and expert_id in given:
        return given[expert_id].resolve(), False
    assert callable(default)
    path: Path = default(workdir, expert_id)
    return path, True


def _check_gateway_files(staging: Staging, configs: Mapping[int, object]) -> None:
    """Load each staged gateway YAML with router_service's loader before anything is written."""
    with tempfile.TemporaryDirectory(prefix="expert-deploy-check-") as temp:
        for replica, config in configs.items():
            staged = staging.files[PurePosixPath(f"gateway/gateway-{replica}.yaml")]
            path = Path(temp) / f"gateway-{replica}.yaml"
            path.write_bytes(staged.data)
            check_gateway_file(path, config)  # type: ignore[arg-type]


def _component(path: PurePosixPath) -> str:
    parts = path.parts
    return "/".join(parts[:2]) if parts[0] == "triton" else parts[0]


def _files(staging: Staging) -> tuple[RenderedFile, ...]:
    return tuple(
        RenderedFile(f.path, _component(f.path), f.sha256, f.link_target)
        for f in sorted(staging.files.values(), key=lambda f: f.path)
    )
