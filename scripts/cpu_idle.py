"""Keep some CPUs out of idle states deeper than polling for the length of a benchmark run.

An idle CPU halts. On the 2-vCPU VM where the gateway bench runs (cpuidle driver ``haltpoll``
with ``guest_halt_poll_ns`` 0) the wake-up itself is cheap (a bare TCP relay on the gateway's
vCPU adds 0.2 ms), but code that runs after the vCPU halted for 0.5-2 ms runs 5-15x slower
than hot, and a gateway waiting for Triton's first token is idle that long on every request.
Kept polling, its added TTFT p50 went from 1.23–1.48 to 0.83–1.00 ms and its CPU per request
from 5.4–6.9 to 3.1–4.4 ms. Hosts tuned for latency do the same for
their network-facing cores (tuned's ``latency-performance`` profile, ``cpupower idle-set``).

The knob is the per-CPU PM QoS resume-latency limit,
``/sys/devices/system/cpu/cpuN/power/pm_qos_resume_latency_us``: ``n/a`` means no wake-up
latency is acceptable, so the cpuidle governor picks only the polling state; ``0`` means no
limit. Writing it needs root. :func:`polling_idle` restores every value it changed.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = [
    "CpuIdleError",
    "add_gateway_idle_option",
    "describe_idle",
    "polling_idle",
    "run_with_gateway_idle",
]

SYSFS_CPU = Path("/sys/devices/system/cpu")
_NO_WAKE_LATENCY = "n/a"


class CpuIdleError(Exception):
    """The idle policy cannot be changed here; the message says why and what to do."""


def _limit_file(cpu: int, root: Path) -> Path:
    return root / f"cpu{cpu}" / "power" / "pm_qos_resume_latency_us"


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def describe_idle(cpus: set[int], root: Path = SYSFS_CPU) -> str:
    """One line for a benchmark header: the cpuidle driver and the CPUs' wake-up limits."""
    driver = _read(root / "cpuidle" / "current_driver") or "none"
    limits = {_read(_limit_file(cpu, root)) for cpu in sorted(cpus)}
    if limits == {_NO_WAKE_LATENCY}:
        policy = "polling only (PM QoS resume latency n/a)"
    elif limits == {"0"}:
        policy = "any idle state"
    else:
        policy = "resume latency limits " + ", ".join(sorted(str(v) for v in limits))
    return f"cpuidle {driver}, cpus {','.join(map(str, sorted(cpus)))}: {policy}"


@contextlib.contextmanager
def polling_idle(cpus: set[int], root: Path = SYSFS_CPU) -> Iterator[None]:
    """Let ``cpus`` idle only by polling inside the block; their previous limits come back after.

    Raises:
        CpuIdleError: a CPU has no PM QoS file, or it cannot be written (not root).
    """
    previous: dict[Path, str] = {}
    try:
        for cpu in sorted(cpus):
            path = _limit_file(cpu, root)
            value = _read(path)
            if value is None:
                raise CpuIdleError(
                    f"cpu{cpu} has no per-CPU PM QoS file ({path}); run without this option"
                )
            try:
                path.write_text(_NO_WAKE_LATENCY)
            except PermissionError as exc:
                raise CpuIdleError(
                    f"cannot write {path} (needs root); run as root or without this option"
                ) from exc
            previous[path] = value
        yield
    finally:
        for path, value in previous.items():
            path.write_text(value)


def add_gateway_idle_option(parser: argparse.ArgumentParser) -> None:
    """The benchmarks' ``--gateway-idle default|poll`` option (pairs with ``--pin-gateways``)."""
    parser.add_argument(
        "--gateway-idle",
        choices=("default", "poll"),
        default="default",
        help="poll: the --pin-gateways CPUs idle only by polling during the run (root;"
        " scripts/cpu_idle.py), as on a host tuned for latency",
    )


def run_with_gateway_idle(
    parser: argparse.ArgumentParser,
    args: argparse.Namespace,
    run: Callable[[argparse.Namespace], int],
) -> int:
    """``run(args)`` under the ``--gateway-idle`` policy for ``args.pin_gateways``.

    A policy that cannot be set ends the program with a usage error that says why.
    """
    if args.gateway_idle == "poll" and not args.pin_gateways:
        parser.error("--gateway-idle poll needs --pin-gateways (the CPUs to keep polling)")
    try:
        with (
            polling_idle(args.pin_gateways)
            if args.gateway_idle == "poll"
            else contextlib.nullcontext()
        ):
            return run(args)
    except CpuIdleError as exc:
        parser.error(str(exc))
