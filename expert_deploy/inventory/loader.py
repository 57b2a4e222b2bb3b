"""Load and validate inventories and toolchain files, reporting every problem at once.

``load_inventory`` is the only place a ``ValidationError`` becomes an ``InventoryError``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from expert_deploy.errors import InventoryError, Problem, UsageError
from expert_deploy.inventory.checks import check_inventory
from expert_deploy.inventory.messages import did_you_mean, problems_from_validation
from expert_deploy.inventory.models import Inventory
from expert_deploy.inventory.source import SourceMap, read_yaml
from expert_deploy.inventory.toolchain import Toolchain

ModelT = TypeVar("ModelT", bound=BaseModel)


@dataclass(frozen=True)
class LoadedInventory:
    """A valid inventory with the file it came from and the line of every field."""

    inventory: Inventory
    toolchain: Toolchain
    path: Path
    source: SourceMap


def resolve_inventory_path(name_or_path: str, inventories_dir: Path) -> Path:
    """A bare name means ``inventories/NAME.yaml``; anything else is a path.

    Raises:
        UsageError: neither a file nor a known inventory name.
    """
    candidate = Path(name_or_path)
    looks_like_path = candidate.suffix in (".yaml", ".yml") or len(candidate.parts) > 1
    if looks_like_path or candidate.is_file():
        if not candidate.is_file():
            raise UsageError(f"inventory file {name_or_path} not found; check the path")
        return candidate
    named = inventories_dir / f"{name_or_path}.yaml"
    if named.is_file():
        return named
    known = sorted(p.stem for p in inventories_dir.glob("*.yaml"))
    raise UsageError(
        f"no inventory named {name_or_path!r} in {inventories_dir}"
        f"{did_you_mean(name_or_path, known)}; known: {', '.join(known) or 'none'}; "
        "or pass a path to a YAML file"
    )


def available_toolchains(engines_dir: Path) -> list[str]:
    return sorted(p.stem for p in engines_dir.glob("*.yaml"))


def load_toolchain(name: str, engines_dir: Path) -> Toolchain:
    """Load ``engines/<name>.yaml``.

    Raises:
        UsageError: no such toolchain (with the closest name).
        InventoryError: the toolchain file itself is invalid.
    """
    path = engines_dir / f"{name}.yaml"
    if not path.is_file():
        known = available_toolchains(engines_dir)
        raise UsageError(
            f"unknown toolchain {name!r}{did_you_mean(name, known)}; "
            f"known: {', '.join(known) or 'none'} (files in {engines_dir})"
        )
    raw, source = read_yaml(path)
    return _validate(Toolchain, raw, source, context=None)


def load_inventory(path: Path, engines_dir: Path) -> LoadedInventory:
    """Read, validate and cross-check an inventory.

    Raises:
        InventoryError: with one problem per mistake (file, line, field path, suggestion).
    """
    raw, source = read_yaml(path)
    inventory = _validate(Inventory, raw, source, context={"base_dir": path.parent.resolve()})
    toolchain: Toolchain | None = None
    problems: list[Problem] = []
    try:
        toolchain = load_toolchain(inventory.toolchain, engines_dir)
    except UsageError as error:
        problems.append(source.problem(("toolchain",), str(error)))
    findings = check_inventory(inventory, toolchain)
    problems.extend(source.problem(path_, message) for path_, message in findings)
    if problems:
        raise InventoryError(sorted(problems, key=lambda p: p.line or 0))
    assert toolchain is not None
    return LoadedInventory(inventory, toolchain, path, source)


def _validate(
    model: type[ModelT], raw: Any, source: SourceMap, context: dict[str, Any] | None
) -> ModelT:
    if not isinstance(raw, dict):
        kind = "empty" if raw is None else f"a {type(raw).__name__}"
        raise InventoryError(
            [Problem(source.file, 1, "", f"expected a mapping, the file is {kind}")]
        )
    try:
        return model.model_validate(raw, context=context)
    except ValidationError as error:
        problems = problems_from_validation(error, model, raw, source)
        raise InventoryError(_dedupe_defaults(problems, raw, source)) from None


def _dedupe_defaults(
    problems: list[Problem], raw: dict[str, Any], source: SourceMap
) -> list[Problem]:
    """Report a bad ``defaults`` value once, at ``defaults``, not once per expert.

    The model copies ``defaults`` into every expert before validating, so a bad default
    fails under ``experts[i].key`` for each expert that did not set ``key`` itself.
    """
    raw_experts = raw.get("experts")
    experts: list[Any] = raw_experts if isinstance(raw_experts, list) else []
    seen: set[str] = set()
    kept: list[Problem] = []
    for problem in problems:
        head, _, rest = problem.path.partition("].")
        if head.startswith("experts[") and rest:
            index = int(head[len("experts[") :])
            key = rest.split(".")[0].split("[")[0]
            expert = experts[index] if index < len(experts) else None
            if isinstance(expert, dict) and key not in expert:
                line = source.line_of(("defaults", *rest.split(".")))
                problem = Problem(problem.file, line, f"defaults.{rest}", problem.message)  # noqa: PLW2901
        if str(problem) not in seen:
            seen.add(str(problem))
            kept.append(problem)
    return kept
