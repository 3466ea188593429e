"""The service's listening socket."""

from __future__ import annotations

import socket

from emofuse.errors import ConfigError


def listening_socket(host: str, port: int) -> socket.socket:
    """A bound TCP socket for uvicorn, whose accepted connections send answers at once.

    ``TCP_NODELAY`` is set on the listening socket, and Linux (like the BSDs) copies it to every
    connection accepted from it. Without it, a client on a kept-alive connection waits for a
    delayed ACK (~40 ms) before the second half of each answer: asyncio sets the option only on
    sockets it creates itself, not on one handed to uvicorn.

    Args:
        host: An IPv4 or IPv6 address (IPv6 when it contains ``:``), e.g. ``127.0.0.1``, ``::``.
        port: TCP port; 0 picks a free one (read it with ``getsockname()``).

    Raises:
        ConfigError: the address cannot be bound (in use, not this machine's, no permission),
            as one line naming it.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    return sock
