"""scripts/cpu_idle.py against a sysfs-shaped folder (a stand-in: the real sysfs is the machine's).

Writing the real ``pm_qos_resume_latency_us`` would change how this machine's CPUs idle while
other tests run, so these tests lay out the same files in a temporary folder.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts.cpu_idle import CpuIdleError, describe_idle, polling_idle


def _sysfs(root: Path, limits: dict[int, str]) -> Path:
    (root / "cpuidle").mkdir(parents=True)
    (root / "cpuidle" / "current_driver").write_text("haltpoll\n")
    for cpu, value in limits.items():
        power = root / f"cpu{cpu}" / "power"
        power.mkdir(parents=True)
        (power / "pm_qos_resume_latency_us").write_text(value + "\n")
    return root


def _limit(root: Path, cpu: int) -> str:
    return (root / f"cpu{cpu}" / "power" / "pm_qos_resume_latency_us").read_text().strip()


def test_polling_idle_sets_the_cpus_and_restores_their_previous_limits(tmp_path: Path) -> None:
    root = _sysfs(tmp_path, {0: "0", 1: "0", 2: "20"})
    with polling_idle({1, 2}, root=root):
        assert (_limit(root, 0), _limit(root, 1), _limit(root, 2)) == ("0", "n/a", "n/a")
        assert describe_idle({1, 2}, root=root) == (
            "cpuidle haltpoll, cpus 1,2: polling only (PM QoS resume latency n/a)"
        )
    assert (_limit(root, 0), _limit(root, 1), _limit(root, 2)) == ("0", "0", "20")
    assert describe_idle({0, 1}, root=root) == "cpuidle haltpoll, cpus 0,1: any idle state"


def test_polling_idle_restores_what_it_changed_when_the_block_raises(tmp_path: Path) -> None:
    root = _sysfs(tmp_path, {1: "0"})
    with pytest.raises(RuntimeError, match="boom"), polling_idle({1}, root=root):
        raise RuntimeError("boom")
    assert _limit(root, 1) == "0"


def test_a_cpu_without_a_qos_file_is_a_one_line_error_and_nothing_stays_changed(
    tmp_path: Path,
) -> None:
    root = _sysfs(tmp_path, {1: "0"})
    missing = r"cpu7 has no per-CPU PM QoS file .*run without"
    with pytest.raises(CpuIdleError, match=missing), polling_idle({1, 7}, root=root):
        pytest.fail("the block must not run")
    assert _limit(root, 1) == "0"
