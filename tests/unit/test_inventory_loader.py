"""Loading inventories: every problem reported at once, with line, field path and suggestion."""

from __future__ import annotations

from pathlib import Path

import pytest

from expert_deploy.errors import InventoryError, UsageError
from expert_deploy.inventory import load_inventory, resolve_inventory_path
from tests.unit.inventory_factory import gpu_inventory, write

BAD = """\
name: bad
toolchain: trtllm-0.11
hosts:
  - name: h1
    address: 127.0.0.1
    gpus: {count: 8, model: H100-SXM-80GB}
defaults:
  quantisation: fp8
  max_batch_size: many
experts:
  - {id: e0, cluster: 0, model: {repo: meta-llama/Meta-Llama-3-8B}, quantization: int4}
  - {id: e1, cluster: 1, model: {repo: meta-llama/Meta-Llama-3-8B}, tp_sise: 2}
router:
  source: {kind: fitt, corpus: x.jsonl}
  k: 2
  scaler: standart
"""


def _problems(path: Path, engines_dir: Path) -> list[str]:
    with pytest.raises(InventoryError) as caught:
        load_inventory(path, engines_dir)
    return [str(p) for p in caught.value.problems]


def test_schema_problems_all_reported_with_line_path_and_suggestion(
    tmp_path: Path, engines_dir: Path
) -> None:
    path = write(tmp_path, None, BAD)
    problems = _problems(path, engines_dir)
    f = str(path)
    assert (
        f"{f}:8: defaults.quantisation: unknown key 'quantisation' (did you mean 'quantization'?)"
        in problems
    )
    assert any(p.startswith(f"{f}:9: defaults.max_batch_size:") and "'many'" in p for p in problems)
    assert (
        f"{f}:11: experts[0].quantization: 'int4' is not one of fp16, bf16, fp8, int4_awq "
        "(did you mean 'int4_awq'?)" in problems
    )
    assert (
        f"{f}:12: experts[1].tp_sise: unknown key 'tp_sise' (did you mean 'tp_size'?)" in problems
    )
    assert (
        f"{f}:14: router.source.kind: 'fitt' is not one of fit, artifact, cbtm (did you mean 'fit'?)"
        in problems
    )
    assert (
        f"{f}:16: router.scaler: 'standart' is not one of l2_normalizer, standard (did you mean 'standard'?)"
        in problems
    )
    # A bad default is reported once, at defaults, not once per expert.
    assert sum("max_batch_size" in p for p in problems) == 1
    assert len(problems) == 6


def test_semantic_problems(tmp_path: Path, engines_dir: Path) -> None:
    data = gpu_inventory(toolchain="trtllm-0.111")
    data["hosts"][0]["gpus"]["model"] = "A100-SXM-80GB"
    data["experts"][1].update(id="e0", cluster=0)
    data["experts"].append(
        {
            "id": "e2",
            "cluster": 5,
            "quantization": "fp8",
            "model": {"repo": "meta-llama/Meta-Llama-3-8B"},
            "placement": {"host": "h11", "gpus": [0]},
        }
    )
    data["router"]["k"] = 3
    problems = _problems(write(tmp_path, data), engines_dir)
    text = "\n".join(problems)
    assert "toolchain: unknown toolchain 'trtllm-0.111' (did you mean 'trtllm-0.11'?)" in text
    assert "experts[1].id: expert id 'e0' is used twice" in text
    assert "experts[1].cluster: cluster 0 is served by e0, e0" in text
    assert "experts[2].cluster: cluster 5 is outside 0..2 (router.k is 3)" in text
    assert "router.k: clusters 1, 2 have no expert" in text
    assert "experts[2].placement.host: no host named 'h11' (did you mean 'h1'?)" in text


def test_fp8_on_ampere_is_refused(tmp_path: Path, engines_dir: Path) -> None:
    data = gpu_inventory()
    data["hosts"][0]["gpus"]["model"] = "A100-SXM-80GB"
    data["experts"][0].update(quantization="fp8", placement={"host": "h1", "gpus": [0]})
    problems = _problems(write(tmp_path, data), engines_dir)
    assert any("experts[0].quantization: fp8 needs compute capability 8.9" in p for p in problems)


def test_quantization_the_toolchain_lacks(tmp_path: Path, engines_dir: Path) -> None:
    # A toolchain file that cannot build FP8 (a copy of trtllm-0.11 with fp8 removed).
    custom = tmp_path / "engines"
    custom.mkdir()
    text = (engines_dir / "trtllm-0.11.yaml").read_text().replace("- fp8\n", "")
    (custom / "no-fp8.yaml").write_text(text.replace("name: trtllm-0.11", "name: no-fp8"))
    data = gpu_inventory(toolchain="no-fp8")
    data["experts"][0]["quantization"] = "fp8"
    problems = _problems(write(tmp_path, data), custom)
    assert any("experts[0].quantization: toolchain no-fp8 cannot build fp8" in p for p in problems)


def test_duplicate_yaml_key_and_not_yaml(tmp_path: Path, engines_dir: Path) -> None:
    path = write(tmp_path, None, "name: a\nname: b\n")
    assert _problems(path, engines_dir) == [f"{path}:2: name: key given twice; keep one"]
    path = write(tmp_path, None, "name: [unclosed\n")
    (problem,) = _problems(path, engines_dir)
    assert problem.startswith(f"{path}:") and "not valid YAML" in problem
    path = write(tmp_path, None, "")
    assert _problems(path, engines_dir) == [f"{path}:1: expected a mapping, the file is empty"]


def test_remote_host_needs_ansible(tmp_path: Path, engines_dir: Path) -> None:
    data = gpu_inventory()
    data["hosts"][0]["address"] = "10.0.0.7"
    problems = _problems(write(tmp_path, data), engines_dir)
    assert any("hosts[0].address: runtime process runs on this machine only" in p for p in problems)
    data["runtime"] = "ansible"
    assert load_inventory(write(tmp_path, data), engines_dir).inventory.runtime.kind == "ansible"


def test_defaults_fill_experts_and_paths_resolve(tmp_path: Path, engines_dir: Path) -> None:
    loaded = load_inventory(write(tmp_path, gpu_inventory()), engines_dir)
    inventory = loaded.inventory
    assert [e.max_batch_size for e in inventory.experts] == [8, 8]
    assert inventory.router.source.kind == "artifact"
    assert inventory.router.source.path == (tmp_path / "router").resolve()
    with pytest.raises(Exception, match="frozen"):
        inventory.experts[0].tp_size = 2  # type: ignore[misc]


def test_resolve_inventory_name(tmp_path: Path, inventories_dir: Path) -> None:
    assert resolve_inventory_path("dgx", inventories_dir) == inventories_dir / "dgx.yaml"
    with pytest.raises(UsageError, match=r"no inventory named 'dgy' .*did you mean 'dgx'"):
        resolve_inventory_path("dgy", inventories_dir)
    with pytest.raises(UsageError, match="not found"):
        resolve_inventory_path(str(tmp_path / "missing.yaml"), inventories_dir)


@pytest.mark.parametrize(
    ("cpus", "expected"), [("12-15", (12, 13, 14, 15)), ("0, 2-3", (0, 2, 3)), ([5, 1], (5, 1))]
)
def test_gateway_cpus_take_a_cpu_list(
    tmp_path: Path, engines_dir: Path, cpus: object, expected: tuple[int, ...]
) -> None:
    path = write(tmp_path, gpu_inventory(gateway={"cpus": cpus}))
    assert load_inventory(path, engines_dir).inventory.gateway.cpus == expected


@pytest.mark.parametrize(
    ("cpus", "detail"),
    [
        ("12-", "expected a CPU list like 12-15 or 0,2-3 (got '12-')"),
        ("7-3", "expected a CPU list like 12-15 or 0,2-3 (got '7-3')"),
        ("1,1", "a CPU is listed twice (got '1,1')"),
        ([-1], "greater than or equal to 0"),
    ],
)
def test_bad_gateway_cpus_are_one_problem_at_their_line(
    tmp_path: Path, engines_dir: Path, cpus: object, detail: str
) -> None:
    path = write(tmp_path, gpu_inventory(gateway={"cpus": cpus}))
    problems = _problems(path, engines_dir)
    assert len(problems) == 1 and f"{path}:" in problems[0]
    assert "gateway.cpus" in problems[0] and detail in problems[0], problems[0]
