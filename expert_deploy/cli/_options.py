"""Option aliases shared by every command, so each flag is spelt and documented once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

InventoryOpt = Annotated[
    str,
    typer.Option(
        "--inventory",
        "-i",
        help="Inventory: a bare name (resolved to inventories/NAME.yaml) or a path to a YAML file.",
    ),
]
WorkdirOpt = Annotated[
    Path | None,
    typer.Option(
        "--workdir",
        "-w",
        help="Where everything a deployment generates goes "
        "[default: $EXPERT_DEPLOY_WORKDIR or ./.expert-deploy].",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
