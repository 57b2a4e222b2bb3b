"""The ``expert-deploy`` command line: a thin client of the library.

Exit codes: 0 ok; 1 invalid input or a failed operation; 2 usage error (bad flags, unknown
names). ``plan`` also returns 2 when the deployment would change (as ``terraform plan
-detailed-exitcode``) once a deployment state exists. Set ``EXPERT_DEPLOY_DEBUG=1`` to see
a Python traceback instead of the one-line error.

Command modules import their heavy dependencies inside the command body, so that
``import expert_deploy.cli`` (and ``--help``) stays fast and needs no extras.
"""

from __future__ import annotations

import os
import sys

import typer

from expert_deploy.cli import bench, build, doctor, fetch, inspect, render, router, runtime, swap
from expert_deploy.errors import EXIT_USAGE, ExpertDeployError

app = typer.Typer(
    name="expert-deploy",
    help="Deploy Expert Router: a k-means prompt router in front of one LLM expert per GPU.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command("validate")(inspect.validate)
app.command("plan")(inspect.plan)
app.command("doctor")(doctor.doctor)
app.command("render")(render.render)
app.command("fetch")(fetch.fetch)
app.command("build")(build.build)
app.add_typer(router.app, name="router")
app.add_typer(bench.app, name="bench")
app.command("up")(runtime.up)
app.command("down")(runtime.down)
app.command("status")(runtime.status)
app.command("logs")(runtime.logs)
app.command("chat")(runtime.chat)
app.command("swap")(swap.swap)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; turn every known error into one line on stderr and an exit code."""
    debug = os.environ.get("EXPERT_DEPLOY_DEBUG", "") not in ("", "0", "false")
    try:
        # Without standalone mode Click returns a command's ``typer.Exit`` code instead of
        # raising it; dropping it would turn `status`'s exit 1 into 0.
        result = app(args=argv, standalone_mode=False)
    except ExpertDeployError as error:
        if debug:
            raise
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except typer.Exit as done:
        return done.exit_code
    except (typer.Abort, KeyboardInterrupt):
        print("aborted", file=sys.stderr)
        return 130
    except typer.TyperException as error:
        # Click's usage errors (unknown command, missing option) as Typer re-exports them.
        show = getattr(error, "show", None)
        if show is None:
            raise
        show()
        return int(getattr(error, "exit_code", EXIT_USAGE))
    return result if isinstance(result, int) else 0


def entrypoint() -> None:
    sys.exit(main())
