"""Golden renders of the shipped local, local-synthetic and dgx inventories.

A change to any rendered byte shows up here as a diff to review. After an intended change:
``UPDATE_GOLDEN=1 .venv/bin/pytest tests/unit/test_render_golden.py`` and commit tests/golden.
The temporary workdir's path is written as ``<WORKDIR>`` so goldens do not depend on it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.unit.render_support import REPO, render

GOLDEN = REPO / "tests" / "golden"
#: dgx and local render 8 identical-but-for-ids repositories (dgx: 16 gateway files too); keep
#: one of each. local-synthetic is small: all of it.
_KEEP = {
    "local": ("triton/programming-0/", "nginx/", "gateway/", "ansible/"),
    "local-synthetic": None,
    "dgx": ("triton/expert-0-0/", "nginx/", "gateway/gateway-0.yaml", "ansible/"),
}


#: Golden files carry this suffix so linters never take a golden model.py for source.
_SUFFIX = ".golden"


def _name(path: Path, folder: Path) -> str:
    return path.relative_to(folder).as_posix().removesuffix(_SUFFIX)


def _normalized(root: Path, workdir: Path, keep: tuple[str, ...] | None) -> dict[str, str]:
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if keep is not None and not rel.startswith(keep):
            continue
        if path.is_symlink():
            out[rel] = f"symlink -> {path.readlink()}\n"
        elif rel.endswith("/1/model.py"):
            # A copy of triton_models/<kind>/ (byte equality is tested in test_render.py);
            # its owner may change it without touching these goldens.
            out[rel] = "copy of a triton_models/ source\n"
        elif path.is_file():
            out[rel] = path.read_text().replace(str(workdir.resolve()), "<WORKDIR>")
    return out


@pytest.mark.parametrize("inventory", sorted(_KEEP))
def test_render_matches_golden(tmp_path: Path, inventory: str) -> None:
    result = render(inventory, tmp_path)
    rendered = _normalized(result.root, tmp_path, _KEEP[inventory])
    folder = GOLDEN / inventory
    if os.environ.get("UPDATE_GOLDEN") == "1":
        for rel, text in rendered.items():
            target = folder / f"{rel}{_SUFFIX}"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        for stale in sorted(folder.rglob("*")):
            if stale.is_file() and _name(stale, folder) not in rendered:
                stale.unlink()
    golden = {_name(p, folder): p.read_text() for p in sorted(folder.rglob("*")) if p.is_file()}
    assert sorted(golden) == sorted(rendered), "file set changed; UPDATE_GOLDEN=1 to accept"
    for rel, text in rendered.items():
        assert text == golden[rel], f"{rel} differs from tests/golden; UPDATE_GOLDEN=1 to accept"
