"""Request ids the gateway makes up for requests that come without one."""

from __future__ import annotations

import re
import subprocess
import sys

from router_service.access_log import new_request_id

HEX24 = re.compile(r"[0-9a-f]{24}")


def test_ids_are_unique_hex_within_a_process() -> None:
    ids = [new_request_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    assert all(HEX24.fullmatch(i) for i in ids), ids[:3]


def test_two_processes_do_not_start_with_the_same_id() -> None:
    # Replicas and restarts each get their own random prefix, so logs of several gateways
    # behind one NGINX never share an id.
    code = "from router_service.access_log import new_request_id; print(new_request_id())"
    runs = [
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        for _ in range(2)
    ]
    first, second = (run.stdout.strip() for run in runs)
    assert HEX24.fullmatch(first) and HEX24.fullmatch(second)
    assert first != second
