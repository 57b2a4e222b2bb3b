"""``expert-deploy bench …``: the user simulator (``run``), ``compare`` and ``selfcheck``.

Everything the bench needs (grpc, tritonclient, matplotlib, uvloop) is imported inside the
command bodies, so ``--help`` and the rest of the CLI start without the ``[bench]`` extra.
"""

from __future__ import annotations

import json
import math
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from expert_deploy.cli._options import WorkdirOpt
from expert_deploy.errors import UsageError

if TYPE_CHECKING:
    from expert_deploy.bench.driver import LoadSpec, RunResult, Target
    from expert_deploy.bench.workload import Workload

app = typer.Typer(
    help="Simulate concurrent streaming users against a deployment; report, plot, compare.",
    no_args_is_help=True,
)


class DistributionChoice(str, Enum):
    uniform = "uniform"
    normal = "normal"


class EndpointChoice(str, Enum):
    completions = "completions"
    chat = "chat"


class ViaChoice(str, Enum):
    nginx = "nginx"
    gateway = "gateway"
    gateway_grpc = "gateway-grpc"
    triton = "triton"


InventoryOpt = Annotated[
    str | None,
    typer.Option(
        "--inventory",
        "-i",
        help="Bench a running deployment: targets come from <workdir>/state.json.",
    ),
]
UrlOpt = Annotated[
    str | None, typer.Option("--url", help="OpenAI-compatible base URL (gateway or NGINX).")
]
GrpcOpt = Annotated[
    str | None,
    typer.Option("--grpc", help="KServe v2 gRPC HOST:PORT (a Triton server or a gateway)."),
]
UsersOpt = Annotated[
    str, typer.Option("--users", help="Concurrent users per load point, e.g. 1,100,1000.")
]
DurationOpt = Annotated[
    float | None,
    typer.Option("--duration", help="Seconds measured per load point (after the warm-up)."),
]
WarmupOpt = Annotated[
    float, typer.Option("--warmup", help="Seconds of load before measuring (excluded).")
]
ProcessesOpt = Annotated[
    int | None,
    typer.Option("--processes", help="Client worker processes [default: one per 250 users]."),
]
OutOpt = Annotated[Path, typer.Option("--out", help="Directory for everything the run writes.")]
ApiKeyEnvOpt = Annotated[
    str | None,
    typer.Option(
        "--api-key-env",
        help="Environment variable holding the API key (the key itself is never written).",
    ),
]


def _int_list(text: str, flag: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UsageError(f"{flag} {text!r}: expected integers separated by commas") from None
    if not values or any(v < 1 for v in values):
        raise UsageError(f"{flag} {text!r}: give at least one count, each ≥ 1")
    return values


def _float_list(text: str, flag: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UsageError(f"{flag} {text!r}: expected numbers separated by commas") from None
    if not values or any(not v > 0 for v in values):
        raise UsageError(f"{flag} {text!r}: give at least one rate, each > 0")
    return values


@app.command("run")
def run(
    *,
    prompts: Annotated[
        Path, typer.Option("--prompts", help="JSONL prompts, optionally with cluster labels.")
    ],
    out: OutOpt,
    inventory: InventoryOpt = None,
    workdir: WorkdirOpt = None,
    via: Annotated[
        ViaChoice | None,
        typer.Option("--via", help="With --inventory: the entry point [default: nginx]."),
    ] = None,
    url: UrlOpt = None,
    grpc: GrpcOpt = None,
    model: Annotated[
        str | None, typer.Option("--model", help="Model name [default: expert-router].")
    ] = None,
    endpoint: Annotated[
        EndpointChoice, typer.Option("--endpoint", help="OpenAI route for --url.")
    ] = EndpointChoice.completions,
    api_key_env: ApiKeyEnvOpt = None,
    text_field: Annotated[str, typer.Option("--text-field")] = "text",
    cluster_field: Annotated[
        str, typer.Option("--cluster-field", help="Integer cluster label of each prompt.")
    ] = "cluster",
    router: Annotated[
        Path | None,
        typer.Option("--router", help="Router directory to label prompts that have no cluster."),
    ] = None,
    distribution: Annotated[
        DistributionChoice, typer.Option("--distribution", help="Share of requests per cluster.")
    ] = DistributionChoice.uniform,
    users: UsersOpt = "1",
    rate: Annotated[
        str | None,
        typer.Option("--rate", help="Open loop: Poisson arrivals per second, e.g. 5,10,20."),
    ] = None,
    requests: Annotated[
        int | None,
        typer.Option("--requests", min=1, help="Measured requests per load point."),
    ] = None,
    duration: DurationOpt = None,
    warmup: WarmupOpt = 5.0,
    drain: Annotated[
        float, typer.Option("--drain", help="Seconds open requests get after the end.")
    ] = 30.0,
    max_tokens: Annotated[
        int, typer.Option("--max-tokens", min=1, help="Output cap per request (paper: 1000).")
    ] = 1000,
    input_len: Annotated[
        str | None,
        typer.Option("--input-len", help="Prompt length in words: fixed:N, normal:M:S or CSV."),
    ] = None,
    processes: ProcessesOpt = None,
    window: Annotated[
        float, typer.Option("--window", help="System-throughput window in seconds.")
    ] = 2.0,
    slo_ttft_ms: Annotated[float | None, typer.Option("--slo-ttft-ms")] = 2000.0,
    slo_tpot_ms: Annotated[float | None, typer.Option("--slo-tpot-ms")] = 200.0,
    slo_e2e_ms: Annotated[float | None, typer.Option("--slo-e2e-ms")] = None,
    baseline_grpc: Annotated[
        str | None,
        typer.Option(
            "--baseline-grpc",
            help="Also run every point straight to this Triton (model ensemble): the baseline.",
        ),
    ] = None,
    baseline: Annotated[
        bool,
        typer.Option("--baseline", help="With --inventory: baseline = the first Triton server."),
    ] = False,
    plot_points: Annotated[
        str | None,
        typer.Option("--plot-points", help="Points in the throughput plot, e.g. users-100."),
    ] = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
) -> None:
    """Run load points (closed loop over --users, or open loop over --rate) and report them."""
    from expert_deploy.bench.driver import LoadSpec
    from expert_deploy.bench.metrics import Slo

    if requests is not None and duration is not None:
        raise UsageError("give --requests or --duration, not both")
    if requests is None and duration is None:
        duration = 30.0
    if warmup < 0 or drain < 0 or window <= 0:
        raise UsageError("--warmup and --drain must be ≥ 0 and --window > 0")
    settings, api_key = _settings_and_key(workdir, api_key_env)
    target, baseline_target, deployment_router = _targets(
        inventory,
        settings.workdir,
        via=via,
        url=url,
        grpc=grpc,
        model=model,
        endpoint=endpoint.value,
        api_key=api_key,
        baseline_grpc=baseline_grpc,
        baseline=baseline,
    )
    workload, described = _workload(
        prompts,
        text_field=text_field,
        cluster_field=cluster_field,
        router=router or deployment_router,
        distribution=distribution.value,
        input_len=input_len,
    )
    base = {
        "warmup_s": warmup,
        "duration_s": duration,
        "requests": requests,
        "max_tokens": max_tokens,
        "processes": processes,
        "seed": seed,
        "drain_s": drain,
    }
    specs: list[LoadSpec] = (
        [LoadSpec(users=u, **base) for u in _int_list(users, "--users")]  # type: ignore[arg-type]
        if rate is None
        else [
            LoadSpec(users=0, mode="open", rate_rps=r, **base)  # type: ignore[arg-type]
            for r in _float_list(rate, "--rate")
        ]
    )
    slo = Slo(
        None if slo_ttft_ms is None else slo_ttft_ms / 1000,
        None if slo_tpot_ms is None else slo_tpot_ms / 1000,
        None if slo_e2e_ms is None else slo_e2e_ms / 1000,
    )
    points = plot_points.split(",") if plot_points else None
    sweep = _sweep(
        specs,
        target,
        workload,
        out,
        window=window,
        slo=slo,
        workload_info=described,
        plot_points=points,
    )
    if baseline_target is not None:
        base_sweep = _sweep(
            specs,
            baseline_target,
            workload,
            out / "baseline",
            window=window,
            slo=slo,
            workload_info=described,
            plot_points=points,
        )
        from expert_deploy.bench.compare import comparison_rows, load_run, print_comparison

        a, b = load_run(base_sweep), load_run(sweep)
        print_comparison(a, b, comparison_rows(a, b))
    typer.echo(f"wrote {out}")


def _settings_and_key(workdir: Path | None, api_key_env: str | None) -> tuple[Any, str | None]:
    from expert_deploy.cli._context import settings_for

    settings = settings_for(workdir)
    if api_key_env is None:
        return settings, None
    secret = settings.secret(api_key_env)
    if secret is None:
        raise UsageError(f"--api-key-env {api_key_env}: that variable is not set or empty")
    return settings, secret.reveal()


def _targets(
    inventory: str | None,
    workdir: Path,
    *,
    via: ViaChoice | None,
    url: str | None,
    grpc: str | None,
    model: str | None,
    endpoint: str,
    api_key: str | None,
    baseline_grpc: str | None,
    baseline: bool,
) -> tuple[Target, Target | None, Path | None]:
    """Main target, optional baseline target, and the deployment's router directory."""
    from expert_deploy.bench.clients_grpc import GrpcTarget
    from expert_deploy.bench.driver import Target
    from expert_deploy.bench.targets import (
        TRITON_MODEL,
        deployment_target,
        load_deployment,
        triton_target,
        url_target,
    )

    base_target = (
        Target(grpc=GrpcTarget.parse(baseline_grpc, model=TRITON_MODEL)) if baseline_grpc else None
    )
    if inventory is None:
        if via is not None or baseline:
            raise UsageError("--via and --baseline need --inventory; use --url/--grpc instead")
        target = url_target(url, grpc, model=model, endpoint=endpoint, api_key=api_key)  # type: ignore[arg-type]
        return target, base_target, None
    if url is not None or grpc is not None:
        raise UsageError("give --inventory or --url/--grpc, not both")
    deployment = load_deployment(workdir, inventory)
    if api_key is None:
        from expert_deploy.cli._context import settings_for
        from expert_deploy.runtime.gateway_auth import gateway_config_path, read_gateway_auth

        secret = read_gateway_auth(gateway_config_path(workdir, 0)).api_key(settings_for(workdir))
        api_key = secret.reveal() if secret is not None else None
    target = deployment_target(
        deployment,
        via.value if via is not None else None,
        endpoint=endpoint,  # type: ignore[arg-type]
        api_key=api_key,
    )
    if baseline and base_target is None:
        tritons = deployment.components("triton")
        if not tritons:
            raise UsageError("--baseline: this deployment records no Triton server")
        base_target = Target(grpc=triton_target(tritons[0]))
    return target, base_target, deployment.router_dir


def _workload(
    prompts: Path,
    *,
    text_field: str,
    cluster_field: str,
    router: Path | None,
    distribution: str,
    input_len: str | None,
) -> tuple[Workload, dict[str, Any]]:
    from expert_deploy.bench.workload import Workload, label_with, parse_lengths, read_prompts

    items = read_prompts(prompts, text_field=text_field, cluster_field=cluster_field)
    unlabelled = sum(1 for p in items if p.cluster is None)
    source = "file"
    if unlabelled:
        if router is None:
            raise UsageError(
                f"{prompts}: {unlabelled} prompt(s) have no {cluster_field!r}; pass --router "
                "DIR (or --inventory) to classify them, or --cluster-field"
            )
        from router_service.classifier import Classifier, ClassifierError

        try:
            classifier = Classifier.load(router)
        except ClassifierError as error:
            raise UsageError(f"--router {router}: {error}") from None
        items = label_with(items, lambda text: classifier.predict(text).cluster)
        source = f"router {router}"
    lengths = parse_lengths(input_len) if input_len else None
    workload = Workload(items, distribution, lengths=lengths)  # type: ignore[arg-type]
    described = {
        "prompts": str(prompts),
        "prompt_count": len(items),
        "cluster_source": source,
        "distribution": distribution,
        "cluster_shares": {str(c): round(s, 6) for c, s in workload.shares.items()},
        "input_len": input_len or "as written",
        "length_unit": "whitespace words",
    }
    return workload, described


def _sweep(
    specs: list[LoadSpec],
    target: Target,
    workload: Workload,
    out: Path,
    *,
    window: float,
    slo: Any,
    workload_info: dict[str, Any],
    plot_points: list[str] | None,
) -> Path:
    """Run every load point against ``target``; write files, plots and the table."""
    from expert_deploy.bench.driver import run_load
    from expert_deploy.bench.metrics import Phase, latency_series
    from expert_deploy.bench.plots import sweep_plots
    from expert_deploy.bench.report import (
        build_summary,
        point_name,
        print_table,
        write_point,
        write_sweep,
    )

    out.mkdir(parents=True, exist_ok=True)
    summaries: list[dict[str, Any]] = []
    samples = []
    for spec in specs:
        typer.echo(f"{target.label}: {_describe(spec)}", err=True)
        result: RunResult = run_load(spec, target, workload, out)
        summary = build_summary(result, window_s=window, slo=slo, workload=workload_info)
        write_point(out / point_name(result), result, summary)
        summaries.append(summary)
        samples.append(latency_series(result.records, Phase(result.t0_ns, result.t1_ns)))
    path = write_sweep(out, summaries)
    sweep_plots(out, summaries, samples, throughput_points=plot_points)
    print_table(summaries)
    return path


def _describe(spec: LoadSpec) -> str:
    load = f"{spec.users} users" if spec.mode == "closed" else f"{spec.rate_rps:g} req/s"
    amount = f"{spec.duration_s:g} s" if spec.duration_s is not None else f"{spec.requests} req"
    return f"{load}, warm-up {spec.warmup_s:g} s, {amount}, {spec.worker_count()} process(es)"


@app.command("compare")
def compare(
    a: Annotated[Path, typer.Argument(help="sweep.json or summary.json of run A.")],
    b: Annotated[Path, typer.Argument(help="sweep.json or summary.json of run B.")],
    out: Annotated[
        Path | None, typer.Option("--out", help="Also write p99_compare.png here.")
    ] = None,
) -> None:
    """Put two runs side by side: every shared load point, A, B and B / A."""
    from expert_deploy.bench.compare import comparison_rows, load_run, print_comparison

    run_a, run_b = load_run(a), load_run(b)
    print_comparison(run_a, run_b, comparison_rows(run_a, run_b))
    if out is not None:
        from expert_deploy.bench.plots import p99_plot

        path = p99_plot(
            out / "p99_compare.png", {run_a.label: run_a.points, run_b.label: run_b.points}
        )
        typer.echo(f"wrote {path}")


@app.command("selfcheck")
def selfcheck(
    *,
    out: OutOpt,
    grpc: Annotated[
        str | None,
        typer.Option("--grpc", help="Triton HOST:PORT serving a synthetic model (direct path)."),
    ] = None,
    url: Annotated[
        str | None,
        typer.Option("--url", help="Gateway or NGINX URL in front of synthetic experts."),
    ] = None,
    inventory: InventoryOpt = None,
    workdir: WorkdirOpt = None,
    ttft_ms: Annotated[float | None, typer.Option("--ttft-ms")] = None,
    tpot_ms: Annotated[float | None, typer.Option("--tpot-ms")] = None,
    tokens: Annotated[int | None, typer.Option("--tokens", min=2)] = None,
    users: UsersOpt = "1,100,1000",
    duration: DurationOpt = 10.0,
    warmup: WarmupOpt = 3.0,
    processes: ProcessesOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the rows as JSON.")] = False,
) -> None:
    """Measure the simulator's own timing error against synthetic experts (known TTFT/TPOT)."""
    from expert_deploy.bench.clients_grpc import GrpcTarget
    from expert_deploy.bench.clients_http import HttpTarget
    from expert_deploy.bench.driver import LoadSpec, Target, run_load
    from expert_deploy.bench.selfcheck import (
        Synthetic,
        print_selfcheck,
        timing_errors,
        with_gateway_added,
    )
    from expert_deploy.bench.targets import ROUTED_MODEL, TRITON_MODEL
    from expert_deploy.bench.workload import Prompt, Workload

    paths: list[tuple[str, Target]] = []
    synthetic_defaults: tuple[float, float, int] | None = None
    if inventory is not None:
        synthetic_defaults, deployed = _synthetic_deployment(inventory, workdir)
        paths.extend(deployed)
    if grpc is not None:
        paths.append(("direct", Target(grpc=GrpcTarget.parse(grpc, model=TRITON_MODEL))))
    if url is not None:
        paths.append(("gateway", Target(http=HttpTarget.from_url(url, model=ROUTED_MODEL))))
    if not paths:
        raise UsageError("give --grpc (a synthetic Triton), --url, or --inventory")
    if synthetic_defaults is None and (ttft_ms is None or tpot_ms is None or tokens is None):
        raise UsageError("without --inventory give --ttft-ms, --tpot-ms and --tokens")
    d_ttft, d_tpot, d_tokens = synthetic_defaults or (0.0, 0.0, 0)
    synthetic = Synthetic(
        ttft_ms if ttft_ms is not None else d_ttft,
        tpot_ms if tpot_ms is not None else d_tpot,
        tokens if tokens is not None else d_tokens,
    )
    workload = Workload([Prompt("selfcheck", "self check prompt", 0)], "uniform")
    rows = []
    for count in _int_list(users, "--users"):
        for name, target in paths:
            spec = LoadSpec(
                users=count,
                warmup_s=warmup,
                duration_s=duration,
                max_tokens=synthetic.tokens,
                processes=processes,
            )
            typer.echo(f"{name} {target.label}: {_describe(spec)}", err=True)
            result = run_load(spec, target, workload, out)
            rows.append({"users": count, "path": name, **timing_errors(result, synthetic)})
    rows = with_gateway_added(rows)
    out.mkdir(parents=True, exist_ok=True)
    report = {"synthetic": synthetic.__dict__, "rows": rows}
    (out / "selfcheck.json").write_text(json.dumps(report, indent=2, default=_nan_none) + "\n")
    if as_json:
        typer.echo(json.dumps(report, indent=2, default=_nan_none))
    else:
        print_selfcheck(rows, synthetic)


def _nan_none(value: Any) -> Any:
    return None if isinstance(value, float) and math.isnan(value) else str(value)


def _synthetic_deployment(
    inventory: str, workdir: Path | None
) -> tuple[tuple[float, float, int], list[tuple[str, Target]]]:
    """Synthetic timings of the inventory's first expert, and its direct and routed paths."""
    from expert_deploy.bench.driver import Target
    from expert_deploy.bench.targets import deployment_target, load_deployment, triton_target
    from expert_deploy.cli._context import load

    settings, loaded = load(inventory, workdir)
    expert = loaded.inventory.experts[0]
    if expert.engine != "synthetic":
        raise UsageError(
            f"expert {expert.id} of {inventory} is {expert.engine}; the self-check needs "
            "synthetic experts (their TTFT and TPOT are known)"
        )
    deployment = load_deployment(settings.workdir, inventory)
    tritons = [t for t in deployment.components("triton") if t.expert_id == expert.id]
    paths: list[tuple[str, Target]] = []
    if tritons:
        paths.append(("direct", Target(grpc=triton_target(tritons[0]))))
    paths.append(("gateway", deployment_target(deployment, None)))
    spec = expert.synthetic
    return (spec.ttft_ms, spec.tpot_ms, spec.tokens), paths
