"""``up``, ``down``, ``status``, ``logs`` and ``chat``: run a deployment and look at it.

``up`` and ``down`` hold the work dir's deployment lock; ``status``, ``logs`` and ``chat`` only
read the state (written atomically), so they work while an ``up`` runs. ``--inventory`` is
needed by ``up``; the others find the deployment through ``--workdir`` and, when given an
inventory, check that it is the one deployed there.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from expert_deploy.cli._context import load_and_plan, settings_for
from expert_deploy.cli._options import InventoryOpt, JsonOpt, WorkdirOpt
from expert_deploy.errors import UsageError
from expert_deploy.runtime.state import ComponentRecord, DeploymentState, StateError, StateStore

if TYPE_CHECKING:
    from rich.console import Console

    from expert_deploy.runtime.components import Component
    from expert_deploy.runtime.docker_launcher import DockerLauncher
    from expert_deploy.runtime.launcher import Launcher
    from expert_deploy.runtime.process_launcher import ProcessLauncher
    from expert_deploy.runtime.status import StatusReport
    from expert_deploy.settings import Settings

OptionalInventoryOpt = Annotated[
    str | None,
    typer.Option(
        "--inventory",
        "-i",
        help="Inventory the deployment was started with (checked against the work dir's state).",
    ),
]


def up(inventory: InventoryOpt, workdir: WorkdirOpt = None) -> None:
    """Start (or converge) the deployment: Triton per expert, gateway replicas, NGINX.

    Idempotent: what runs with the same configuration is kept, what died or changed is
    restarted, what the inventory dropped is stopped.
    """
    from rich.console import Console

    from expert_deploy.artifacts.prepare import prepare
    from expert_deploy.runtime.apply import apply
    from expert_deploy.runtime.components import components_for
    from expert_deploy.runtime.diff import spec_hashes
    from expert_deploy.runtime.launchers import launcher_for
    from expert_deploy.runtime.swap import sync_generation

    planned = load_and_plan(inventory, workdir)
    settings, loaded, plan = planned.settings, planned.loaded, planned.plan
    console = Console(stderr=True, highlight=False)
    store = StateStore(settings.workdir)
    with store.locked("up"):
        prepared = prepare(settings, loaded, plan)
        desired = components_for(
            plan,
            prepared.rendered,
            budgets={e.id: e.startup_budget_s for e in loaded.inventory.experts},
            artifact_hashes=prepared.artifact_hashes,
            spec_hashes=spec_hashes(loaded, plan, settings.data_dir),
        )
        launcher = launcher_for(loaded.inventory.runtime.kind, settings, loaded)
        desired = _without_missing_nginx(launcher, desired, console)
        now = time.time()
        state = store.load() or DeploymentState(
            deployment=plan.name,
            inventory=str(loaded.path.resolve()),
            runtime=launcher.kind,
            started_at=now,
            updated_at=now,
        )
        _check_same_deployment(state, plan.name, launcher.kind)
        state.router_hash = prepared.router.content_hash
        state.inventory = str(loaded.path.resolve())
        fresh: set[str] = set()
        with console.status("starting", spinner="dots") as spinner:

            def on_event(name: str, message: str) -> None:
                spinner.update(f"{name}: {message}")
                if message.startswith("started"):
                    fresh.add(name)
                # Kept components are probed too; only changes are worth a line.
                if message != "waiting for a real inference" and (
                    message != "ready" or name in fresh
                ):
                    console.print(f"  {name}: {message}")

            try:
                result = apply(launcher, desired, state, store, on_event=on_event)
            except BaseException:
                if not state.components:
                    store.remove()  # nothing runs: leave no deployment behind
                raise
            for name in sync_generation(state, loaded, settings):
                console.print(f"  {name}: routing table set to generation {state.generation}")
    count = len(state.components)
    if not result.changed:
        print(f"nothing to do: {count} components running and ready")
    else:
        _print_records(state)
    _print_endpoint(state, settings)


def down(inventory: OptionalInventoryOpt = None, workdir: WorkdirOpt = None) -> None:
    """Stop every component this work dir's deployment started, then forget it."""
    from expert_deploy.runtime.apply import stop_components
    from expert_deploy.runtime.launchers import launcher_for

    settings = settings_for(workdir)
    store = StateStore(settings.workdir)
    with store.locked("down"):
        state = store.load()
        if state is None:
            swept = _stop_unrecorded(settings, _rendered_runtime(settings))
            extra = (
                f"; stopped {swept} unrecorded server(s) of an interrupted `up`" if swept else ""
            )
            print(f"nothing deployed from {settings.workdir}{extra}")
            return
        _check_inventory(state, inventory, settings)
        count = len(state.components)
        for kind in sorted({r.launcher for r in state.components.values()}):
            records = [r for r in state.components.values() if r.launcher == kind]
            stop_components(
                launcher_for(kind, settings),
                records,
                state,
                store,
                on_event=lambda name, message: print(f"  {name}: {message}", file=sys.stderr),
            )
        swept = _stop_unrecorded(settings, state.runtime)
        store.remove()
    extra = f" and {swept} unrecorded server(s) of an interrupted `up`" if swept else ""
    print(f"stopped {count} components of deployment {state.deployment}{extra}")


def status(
    inventory: OptionalInventoryOpt = None, workdir: WorkdirOpt = None, as_json: JsonOpt = False
) -> None:
    """Health of every component (a real inference each), gateway generations, engine hashes.

    Exit 0 when everything runs, answers and serves the expected generation; 1 otherwise.
    """
    from expert_deploy.runtime.status import reconcile

    settings = settings_for(workdir)
    state = StateStore(settings.workdir).load()
    if state is None:
        if as_json:
            print(json.dumps({"deployed": False, "workdir": str(settings.workdir.resolve())}))
        else:
            print(f"nothing deployed from {settings.workdir}; run `expert-deploy up`")
        raise typer.Exit(1)
    _check_inventory(state, inventory, settings)
    report = reconcile(state, settings, _launchers(settings))
    report = replace(report, unrecorded=_count_unrecorded(settings, state))
    if as_json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        _print_status(report)
    raise typer.Exit(0 if report.healthy else 1)


def logs(
    component: Annotated[
        str | None,
        typer.Argument(help="triton/expert-0-0, gateway/1, nginx, an expert id, or a kind."),
    ] = None,
    inventory: OptionalInventoryOpt = None,
    workdir: WorkdirOpt = None,
    tail: Annotated[int, typer.Option("--tail", "-n", help="Lines from the end.")] = 50,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing.")] = False,
) -> None:
    """Print the last lines of components' logs (all of them when no name is given)."""
    settings, state = _deployed(inventory, workdir)
    records = _select(state, component)
    launchers = _launchers(settings)
    for record in records:
        if len(records) > 1:
            print(f"==> {record.name} ({record.log_path or 'no log file'}) <==")
        text = launchers(record.launcher).logs(record.handle, tail=tail)
        if text:
            print(text)
    if follow:
        _follow([Path(r.log_path) for r in records if r.log_path], labelled=len(records) > 1)


def chat(
    prompt: Annotated[str, typer.Argument(help="What to ask.")],
    inventory: OptionalInventoryOpt = None,
    workdir: WorkdirOpt = None,
    max_tokens: Annotated[int, typer.Option("--max-tokens", min=1)] = 128,
) -> None:
    """Stream an answer through the deployment and say which expert served it."""
    from expert_deploy.runtime.chat import stream_chat
    from expert_deploy.runtime.gateway_auth import deployment_auth
    from expert_deploy.runtime.status import endpoint_of

    settings, state = _deployed(inventory, workdir)
    url = endpoint_of(list(state.components.values()))
    if url is None:
        raise StateError("no gateway or NGINX is running; run `expert-deploy up`")
    auth = deployment_auth(state.components.values(), settings.workdir.resolve())
    key = auth.api_key(settings)

    def show(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    result = stream_chat(
        url, prompt, max_tokens=max_tokens, api_key=key.reveal() if key else None, on_text=show
    )
    print()
    cluster = f" (cluster {result.cluster})" if result.cluster else ""
    fallback = ", as fallback" if result.fallback else ""
    print(f"served by {result.expert or 'an unnamed expert'}{cluster}{fallback}", file=sys.stderr)


# --- helpers ---------------------------------------------------------------------------------


def _deployed(inventory: str | None, workdir: Path | None) -> tuple[Settings, DeploymentState]:
    """Settings and the work dir's deployment state, checked against ``--inventory`` if given.

    Raises:
        StateError: nothing is deployed from the work dir.
    """
    settings = settings_for(workdir)
    state = StateStore(settings.workdir).load()
    if state is None:
        raise StateError(f"nothing deployed from {settings.workdir}; run `expert-deploy up`")
    _check_inventory(state, inventory, settings)
    return settings, state


def _launchers(settings: Settings) -> Callable[[str], Launcher]:
    """``kind → launcher``, each built once (a state may mix kinds only in theory)."""
    from expert_deploy.runtime.launchers import launcher_for

    made: dict[str, Launcher] = {}

    def get(kind: str) -> Launcher:
        if kind not in made:
            made[kind] = launcher_for(kind, settings)
        return made[kind]

    return get


@contextlib.contextmanager
def _unrecorded_finders(
    settings: Settings, runtime: str | None
) -> Iterator[list[ProcessLauncher | DockerLauncher]]:
    """The launchers that find servers of this work dir outside its state: processes always
    (any runtime may have spawned some), containers under the docker runtime."""
    from expert_deploy.runtime.process_launcher import ProcessLauncher

    launchers: list[ProcessLauncher | DockerLauncher] = [ProcessLauncher(settings)]
    docker = None
    if runtime == "docker":
        from expert_deploy.runtime.docker_launcher import docker_launcher

        docker = docker_launcher(settings)
        launchers.append(docker)
    try:
        yield launchers
    finally:
        if docker is not None:
            docker.close()


def _count_unrecorded(settings: Settings, state: DeploymentState) -> int:
    """Servers of this work dir that the state does not name (status warns about them)."""
    recorded = {r.ref for r in state.components.values()}
    with _unrecorded_finders(settings, state.runtime) as launchers:
        return sum(launcher.unrecorded(recorded) for launcher in launchers)


def _stop_unrecorded(settings: Settings, runtime: str | None) -> int:
    """Stop the servers this work dir started and the state never recorded; return how many."""
    with _unrecorded_finders(settings, runtime) as launchers:
        return sum(launcher.stop_unrecorded() for launcher in launchers)


def _rendered_runtime(settings: Settings) -> str | None:
    """The runtime the last render of this work dir named (an ``up`` renders before it launches)."""
    from expert_deploy.render.gateway import read_ansible_vars

    runtime = read_ansible_vars(settings.workdir).get("runtime")
    return runtime if isinstance(runtime, str) else None


def _without_missing_nginx(
    launcher: Launcher, desired: list[Component], console: Console
) -> list[Component]:
    """Drop NGINX, with a warning, when the process runtime cannot find it on this machine."""
    from expert_deploy.runtime.process_launcher import ProcessLauncher

    if not isinstance(launcher, ProcessLauncher):
        return desired
    kept = []
    for component in desired:
        reason = launcher.missing_binary(component) if component.kind == "nginx" else None
        if reason:
            console.print(f"warning: {reason}; clients use a gateway replica directly")
        else:
            kept.append(component)
    return kept


def _check_same_deployment(state: DeploymentState, name: str, runtime: str) -> None:
    if state.deployment != name:
        raise StateError(
            f"this work dir runs deployment {state.deployment!r}, not {name!r}; "
            "`expert-deploy down` it first or pass another --workdir"
        )
    if state.runtime != runtime:
        raise StateError(
            f"deployment {name!r} runs with runtime {state.runtime!r}, the inventory now says "
            f"{runtime!r}; run `expert-deploy down` first"
        )


def _check_inventory(state: DeploymentState, inventory: str | None, settings: Settings) -> None:
    """When ``--inventory`` is given, it must name the deployment this work dir runs.

    Only the inventory's ``name`` is read, so an inventory being edited (or broken) never
    stops ``down`` from cleaning up.
    """
    if inventory is None:
        return
    import yaml

    from expert_deploy.inventory import resolve_inventory_path

    path = resolve_inventory_path(inventory, settings.inventories_dir)
    try:
        name = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("name")
    except (OSError, yaml.YAMLError, AttributeError):
        name = None
    if name is not None and name != state.deployment:
        raise StateError(
            f"{settings.workdir} runs deployment {state.deployment!r}, not {name!r}; "
            "pass the --workdir that deployment was started with"
        )


def _select(state: DeploymentState, name: str | None) -> list[ComponentRecord]:
    """Records a ``logs`` argument names: a component, an expert id, or a kind.

    Raises:
        UsageError: nothing matches (lists what would).
    """
    records = sorted(state.components.values(), key=lambda r: (_order(r.kind), r.name))
    if name is None:
        return records
    chosen = [
        r for r in records if name in (r.name, r.expert_id, r.kind) or r.name == f"gateway/{name}"
    ]
    if not chosen:
        experts = sorted({r.expert_id for r in records if r.expert_id})
        valid = [r.name for r in records] + experts
        raise UsageError(f"no component {name!r} in this deployment; valid: {', '.join(valid)}")
    return chosen


def _order(kind: str) -> int:
    from expert_deploy.runtime.components import START_ORDER

    return START_ORDER.index(kind)


def _follow(paths: list[Path], *, labelled: bool) -> None:
    """Print what is appended to ``paths`` until Ctrl-C (as ``tail -f``)."""
    offsets = {p: p.stat().st_size if p.exists() else 0 for p in paths}
    try:
        while True:
            for path in paths:
                if not path.exists():
                    continue
                size = path.stat().st_size
                if size < offsets[path]:
                    offsets[path] = 0  # truncated or replaced
                if size == offsets[path]:
                    continue
                with path.open("rb") as handle:
                    handle.seek(offsets[path])
                    chunk = handle.read(size - offsets[path])
                offsets[path] = size
                text = chunk.decode(errors="replace")
                if labelled:
                    text = "".join(f"{path.stem}| {line}" for line in text.splitlines(True))
                sys.stdout.write(text)
                sys.stdout.flush()
            time.sleep(0.25)
    except KeyboardInterrupt:
        return


def _ref_pid(record: ComponentRecord) -> str:
    """A short handle for the table: PID, container id prefix, or host of an Ansible unit."""
    if record.launcher == "process":
        return record.ref.split(":", 1)[0]
    if record.launcher == "ansible":
        return f"on {record.host}"
    return record.ref[:12]


def _ports_text(ports: dict[str, int]) -> str:
    return " ".join(f"{name}={port}" for name, port in ports.items())


def _print_records(state: DeploymentState) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"deployment {state.deployment}", title_justify="left")
    for column in ("component", "pid", "ports", "state"):
        table.add_column(column)
    for record in sorted(state.components.values(), key=lambda r: (_order(r.kind), r.name)):
        table.add_row(record.name, _ref_pid(record), _ports_text(record.ports), record.phase)
    Console(highlight=False).print(table)


def _print_endpoint(state: DeploymentState, settings: Settings) -> None:
    from expert_deploy.runtime.gateway_auth import deployment_auth
    from expert_deploy.runtime.status import endpoint_of

    url = endpoint_of(list(state.components.values()))
    if url is None:
        return
    if not any(r.kind == "nginx" for r in state.components.values()):
        print("NGINX is not running here: requests go to gateway replica 0 directly")
    auth = deployment_auth(state.components.values(), settings.workdir.resolve())
    key_note = ""
    if auth.api_key(settings) is not None:
        key_note = f", with 'Authorization: Bearer <a key from ${auth.api_keys_env}>'"
    print(f"send requests to {url} (model expert-router{key_note})")


def _print_status(report: StatusReport) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"deployment {report.deployment} ({report.runtime}, generation {report.generation})",
        title_justify="left",
    )
    for column in ("component", "ref", "ports", "state", "generation", "artifact", "detail"):
        table.add_column(column)
    for c in report.components:
        generation = "" if c.generation is None else str(c.generation)
        if c.kind == "gateway" and c.generation is None:
            generation = "?"
        artifact = (c.artifact_hash or "")[:19]
        table.add_row(
            c.name, c.ref, _ports_text(c.ports), c.state_word, generation, artifact, c.detail
        )
    Console(highlight=False, width=200).print(table)
    if not any(c.kind == "nginx" for c in report.components):
        print("NGINX is not part of this deployment: clients use a gateway replica directly")
    if report.endpoint:
        print(f"endpoint: {report.endpoint}")
    if report.unrecorded:
        print(
            f"warning: {report.unrecorded} server(s) of an interrupted `up` run outside the "
            "state; `expert-deploy down` stops them",
            file=sys.stderr,
        )
    bad = [c for c in report.components if not c.healthy]
    if bad:
        for c in bad:
            print(f"{c.name}: {c.state_word} ({c.detail}); log: {c.log_path}", file=sys.stderr)
    else:
        print(f"healthy: {len(report.components)} components running and ready")
