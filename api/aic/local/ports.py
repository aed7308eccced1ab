"""Free loopback ports for the servers the local stack, tests and benches start side by side."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A TCP port free on loopback right now (another process may still take it before you do)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
