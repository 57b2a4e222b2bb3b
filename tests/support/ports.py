"""Free TCP port picking on 127.0.0.1."""

from __future__ import annotations

import socket
from collections.abc import Collection


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago.

    The kernel picks it; there is a small race until the caller binds it, which is fine for tests.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_ports(count: int, *, exclude: Collection[int] = ()) -> list[int]:
    """Return ``count`` distinct free ports, all held open together while picking.

    ``exclude``: ports picked earlier and not bound yet, which the kernel may hand out again.
    """
    sockets = [
        socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count + len(exclude))
    ]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        ports = [int(sock.getsockname()[1]) for sock in sockets]
        return [port for port in ports if port not in exclude][:count]
    finally:
        for sock in sockets:
            sock.close()
