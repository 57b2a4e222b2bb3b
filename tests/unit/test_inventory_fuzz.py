"""Random and mutated inventories: always a clean InventoryError, never a traceback."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from expert_deploy.cli import main
from expert_deploy.errors import ExpertDeployError
from expert_deploy.inventory import load_inventory
from expert_deploy.plan.planner import make_plan
from tests.unit.inventory_factory import gpu_inventory

ENGINES = Path(__file__).resolve().parents[2] / "engines"

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 70_000),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.sampled_from(["fp8", "int4_awq", "synthetic", "docker", "h1", "e0", "0.9"]),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, child in node.items():
            found += _paths(child, (*prefix, key))
    elif isinstance(node, list):
        for index, child in enumerate(node):
            found += _paths(child, (*prefix, index))
    return found


@st.composite
def mutated_inventories(draw: st.DrawFn) -> Any:
    data: Any = copy.deepcopy(gpu_inventory())
    for _ in range(draw(st.integers(1, 4))):
        paths = _paths(data)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = data
        for part in path[:-1]:
            parent = parent[part]
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "replace":
            parent[path[-1]] = draw(values)
        elif action == "delete":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=10))] = draw(values)
    return data


def _check(tmp_path: Path, document: Any) -> None:
    path = tmp_path / "fuzz.yaml"
    path.write_text(yaml.safe_dump(document))
    try:
        make_plan(load_inventory(path, ENGINES))
    except ExpertDeployError as error:
        assert str(error).strip(), "an error must say something"
        assert "Traceback" not in str(error)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(document=mutated_inventories())
def test_mutated_inventory_gives_clean_error(tmp_path: Path, document: Any) -> None:
    _check(tmp_path, document)


@settings(
    max_examples=75, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(document=values)
def test_random_document_gives_clean_error(tmp_path: Path, document: Any) -> None:
    _check(tmp_path, document)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(document=mutated_inventories())
def test_cli_validate_never_raises(tmp_path: Path, document: Any) -> None:
    path = tmp_path / "cli.yaml"
    path.write_text(yaml.safe_dump(document))
    assert main(["validate", "--inventory", str(path)]) in (0, 1)
