"""``prepare`` and ``expert-deploy build`` without processes: synthetic experts, a real router
fit, the lock's --locked/--upgrade rules, and the new inventory fields (calib_dataset, nginx
tls and grpc_listen_port). Engines and downloads run in tests/integration/test_build_lock.py.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
import yaml

from expert_deploy.artifacts.lockfile import LockError, lock_path, read_lock
from expert_deploy.artifacts.prepare import Prepared, prepare
from expert_deploy.builder import preflight
from expert_deploy.builder.cache import Builder
from expert_deploy.builder.checkpoint_index import CheckpointRecord
from expert_deploy.builder.engines import calib_hash, engine_key
from expert_deploy.builder.recipes import CONTAINER_PATHS, BuildPaths, options_of, recipe
from expert_deploy.cli import main
from expert_deploy.errors import EngineBuildError, RenderError, UsageError
from expert_deploy.inventory import LoadedInventory, load_inventory
from expert_deploy.inventory.loader import load_toolchain
from expert_deploy.plan.planner import make_plan
from expert_deploy.render.deployment import render_deployment
from expert_deploy.settings import Secret, Settings
from tests.unit.inventory_factory import gpu_inventory, write

REPO = Path(__file__).resolve().parents[2]
ENGINES = REPO / "engines"
CORPUS = REPO / "inventories" / "data" / "local-prompts.jsonl"
SECRET = "hf_pipelineSecretValue42"  # a test value that must never be written


def _synthetic(tmp_path: Path, **router: Any) -> Path:
    data = {
        "name": "syn",
        "toolchain": "trtllm-0.11",
        "hosts": [{"name": "localhost", "address": "127.0.0.1"}],
        "defaults": {"engine": "synthetic"},
        "experts": [{"id": f"expert-{i}", "cluster": i} for i in range(3)],
        "router": {"source": {"kind": "fit", "corpus": str(CORPUS), "seed": 0, **router}, "k": 3},
        "gateway": {"replicas": 1},
    }
    path = tmp_path / "inv" / "syn.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _run(path: Path, workdir: Path, **options: Any) -> Prepared:
    loaded = load_inventory(path, ENGINES)
    settings = Settings(workdir=workdir, data_dir=REPO, hf_token=Secret(SECRET))
    return prepare(settings, loaded, make_plan(loaded), **options)


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_prepare_writes_the_lock_then_changes_nothing(tmp_path: Path) -> None:
    path = _synthetic(tmp_path)
    first = _run(path, tmp_path / "work")
    lock_file = lock_path(path)
    assert first.lock_path == lock_file and first.lock_changes == ("syn.lock is new",)
    assert first.router.status == "fitted"
    # Readable by servers running as another user (images/gateway.Dockerfile: nobody).
    assert first.router.path.stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "work" / "rendered").stat().st_mode & 0o777 == 0o755
    assert set(first.step_seconds) == {"fetch", "engines", "router", "render"}
    assert [o.status for o in first.experts] == ["skipped"] * 3
    text = lock_file.read_text()
    lock = read_lock(lock_file)
    assert lock is not None and lock.router.content_hash == first.router.content_hash
    assert lock.router.inputs["kind"] == "fit" and lock.router.inputs["seed"] == 0
    assert set(lock.experts) == {"expert-0", "expert-1", "expert-2"}
    assert SECRET not in text

    again = _run(path, tmp_path / "work")
    assert again.router.status == "cached" and again.lock_changes == ()
    assert lock_file.read_text() == text
    assert _run(path, tmp_path / "work", locked=True).lock_changes == ()


def test_a_fresh_workdir_rebuilds_byte_identical_files_from_the_lock(tmp_path: Path) -> None:
    path = _synthetic(tmp_path)
    workdir = tmp_path / "work"
    first = _run(path, workdir)
    before = _tree(first.rendered.root)
    import shutil

    shutil.rmtree(workdir)
    rebuilt = _run(path, workdir, locked=True)
    assert rebuilt.router.status == "fitted"  # really refitted, not found
    assert rebuilt.router.content_hash == first.router.content_hash
    assert _tree(rebuilt.rendered.root) == before
    assert all(SECRET.encode() not in data for data in before.values())


def test_locked_refuses_a_changed_inventory_and_leaves_everything_as_it_was(
    tmp_path: Path,
) -> None:
    path = _synthetic(tmp_path)
    first = _run(path, tmp_path / "work")
    rendered = _tree(first.rendered.root)
    lock_text = lock_path(path).read_text()
    changed = _synthetic(tmp_path, seed=1)
    with pytest.raises(LockError) as caught:
        _run(changed, tmp_path / "work", locked=True)
    (line,) = str(caught.value).splitlines()
    assert line.startswith("syn.lock: router: inputs are")
    assert line.endswith("`expert-deploy build --upgrade` moves the lock")
    assert _tree(first.rendered.root) == rendered and lock_path(path).read_text() == lock_text
    # Refused before any work: the changed seed's router was never fitted.
    assert len(list((tmp_path / "work" / "router").iterdir())) == 1

    # Without --locked the lock follows the inventory and says how it moved.
    moved = _run(changed, tmp_path / "work")
    assert any(change.startswith("router: inputs") for change in moved.lock_changes)
    assert lock_path(path).read_text() != lock_text


def test_lock_mode_errors_are_one_line_each(tmp_path: Path) -> None:
    path = _synthetic(tmp_path)
    with pytest.raises(LockError, match=r"--locked needs .*syn\.lock; run `expert-deploy build`"):
        _run(path, tmp_path / "work", locked=True)
    with pytest.raises(UsageError, match="--locked and --upgrade"):
        _run(path, tmp_path / "work", locked=True, upgrade=True)
    with pytest.raises(UsageError, match=r"no expert 'expert-9'.*did you mean 'expert-\d'"):
        _run(path, tmp_path / "work", experts=["expert-9"])
    assert not lock_path(path).exists()


def test_build_command_prints_the_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _synthetic(tmp_path)
    assert main(["build", "-i", str(path), "-w", str(tmp_path / "work")]) == 0
    out = capsys.readouterr().out
    assert "expert-2" in out and "skipped" in out
    assert "router: sha256:" in out and "(fitted)" in out
    assert "rendered 9 files" in out and "syn.lock is new" in out
    assert "steps: fetch" in out and "render" in out
    assert main(["build", "-i", str(path), "-w", str(tmp_path / "work"), "--locked"]) == 0
    assert "unchanged" in capsys.readouterr().out


def test_build_without_a_reachable_checkpoint_fails_that_expert_and_renders_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Offline with an empty HF cache: no network is touched, the fetch fails for e0 and e1.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    data = gpu_inventory()
    router = tmp_path / "router"
    router.mkdir()
    (router / "router.json").write_text('{"content_hash": "sha256:abc"}')
    path = write(tmp_path, data)
    code = main(["build", "-i", str(path), "-w", str(tmp_path / "work")])
    captured = capsys.readouterr()
    assert code == 1
    assert captured.out.count("failed") >= 2
    assert "nothing was rendered and the lock is unchanged" in captured.err
    assert not (tmp_path / "work" / "rendered").exists() and not lock_path(path).exists()


# -- calib_dataset ---------------------------------------------------------------------------


def _awq(tmp_path: Path, **defaults: Any) -> LoadedInventory:
    data = gpu_inventory()
    data["defaults"].update({"quantization": "int4_awq", **defaults})
    return load_inventory(write(tmp_path, data), ENGINES)


def test_calib_dataset_resolves_against_the_inventory_and_reaches_quantize_argv(
    tmp_path: Path,
) -> None:
    calib = tmp_path / "calib"
    calib.mkdir()
    (calib / "train.jsonl").write_text('{"text": "a"}\n')
    loaded = _awq(tmp_path, calib_dataset="calib")
    expert = loaded.inventory.experts[0]
    assert expert.calib_dataset == calib.resolve()
    for name in ("trtllm-0.11", "trtllm-1.2"):
        toolchain = load_toolchain(name, ENGINES)
        paths = BuildPaths(CONTAINER_PATHS.model_dir, CONTAINER_PATHS.output_root, "/c")
        quantize = recipe(expert, toolchain, paths, (9, 0)).steps[0]
        assert quantize.script == "quantize"
        argv = list(quantize.argv)
        assert argv[argv.index("--calib_dataset") + 1] == "/c"
        assert set(options_of(quantize)) <= toolchain.flags.quantize
        assert preflight.check_calibration(expert, toolchain) == []


def test_calib_dataset_content_is_folded_into_the_engine_key(tmp_path: Path) -> None:
    calib = tmp_path / "calib"
    calib.mkdir()
    (calib / "train.jsonl").write_text('{"text": "a"}\n')
    plain = _awq(tmp_path)
    loaded = _awq(tmp_path, calib_dataset="calib")
    record = CheckpointRecord("r/m", "main", "a" * 40, Path(), (("config.json", "1" * 40),))
    builder = Builder("container", "")

    def key(inventory: LoadedInventory) -> str | None:
        expert = inventory.inventory.experts[0]
        return engine_key(
            expert,
            loaded=inventory,
            plan=make_plan(inventory),
            checkpoint=record,
            builder=builder,
            calib_sha256=calib_hash(expert),
        )

    first = key(loaded)
    assert first is not None and first != key(plain)
    (calib / "train.jsonl").write_text('{"text": "b"}\n')
    assert key(loaded) != first
    # A bf16 expert does not calibrate: the folder changes nothing for it.
    bf16 = _awq(tmp_path, quantization="bf16", calib_dataset="calib")
    assert calib_hash(bf16.inventory.experts[0]) is None


def test_a_missing_calib_dataset_or_a_toolchain_without_the_flag_is_reported(
    tmp_path: Path,
) -> None:
    loaded = _awq(tmp_path, calib_dataset="nope")
    expert = loaded.inventory.experts[0]
    with pytest.raises(EngineBuildError, match=r"calib_dataset .*nope is not a folder with files"):
        calib_hash(expert)
    toolchain = loaded.toolchain
    flags = toolchain.flags.model_copy(
        update={"quantize": toolchain.flags.quantize - {"--calib_dataset"}}
    )
    old = toolchain.model_copy(update={"flags": flags, "name": "trtllm-0.9"})
    (problem,) = preflight.check_calibration(expert, old)
    assert "has no --calib_dataset option" in str(problem) and "remove calib_dataset" in str(
        problem
    )


# -- nginx tls and grpc_listen_port -----------------------------------------------------------


def _with_nginx(tmp_path: Path, nginx: dict[str, Any]) -> Path:
    path = _synthetic(tmp_path)
    data = yaml.safe_load(path.read_text())
    data["nginx"] = {"listen_port": 8080, **nginx}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _render(path: Path, workdir: Path) -> str:
    loaded = load_inventory(path, ENGINES)
    settings = Settings(workdir=workdir, data_dir=REPO)
    result = render_deployment(loaded, make_plan(loaded), settings, router_dir=workdir / "r")
    return (result.root / "nginx" / "nginx.conf").read_text()


def test_nginx_tls_and_grpc_port_come_from_the_inventory(tmp_path: Path) -> None:
    (tmp_path / "inv").mkdir()
    cert, key = tmp_path / "inv" / "cert.pem", tmp_path / "inv" / "key.pem"
    cert.write_text("not parsed here; nginx -t checks real ones\n")
    key.write_text("not parsed here\n")
    path = _with_nginx(
        tmp_path,
        {
            "grpc_listen_port": 8443,
            "tls": {"certificate": "cert.pem", "certificate_key": "key.pem"},
        },
    )
    text = _render(path, tmp_path / "work")
    assert "listen 127.0.0.1:8080 ssl;" in text
    assert "listen 127.0.0.1:8443 ssl http2;" in text
    assert f"ssl_certificate {cert.resolve()};" in text
    assert f"ssl_certificate_key {key.resolve()};" in text
    assert "not parsed here" not in text  # paths only, never the key's contents
    plain = _render(_with_nginx(tmp_path, {}), tmp_path / "work2")
    assert "listen 127.0.0.1:8081 http2;" in plain and "ssl" not in plain


def test_nginx_field_mistakes_are_one_line_errors(tmp_path: Path) -> None:
    missing = _with_nginx(
        tmp_path, {"tls": {"certificate": "absent.pem", "certificate_key": "absent.key"}}
    )
    with pytest.raises(RenderError, match=r"nginx.tls.certificate .*absent.pem is not a file"):
        _render(missing, tmp_path / "work")
    same = _with_nginx(tmp_path, {"grpc_listen_port": 8080})
    loaded = load_inventory(same, ENGINES)
    errors = [(f.path, f.message) for f in make_plan(loaded).errors]
    # The planner claims NGINX's gRPC port like every other one, so a clash never reaches render.
    assert [path for path, _ in errors] == [("nginx", "grpc_listen_port")], errors
    assert "8080" in errors[0][1]
    assert not (tmp_path / "work" / "rendered").exists()


def test_the_lock_file_is_deterministic_across_runs(tmp_path: Path) -> None:
    path = _synthetic(tmp_path)
    _run(path, tmp_path / "a")
    first = hashlib.sha256(lock_path(path).read_bytes()).hexdigest()
    lock_path(path).unlink()
    _run(path, tmp_path / "b")
    assert hashlib.sha256(lock_path(path).read_bytes()).hexdigest() == first
