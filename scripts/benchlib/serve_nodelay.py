"""``chatstore serve`` with the listening socket made as IPPROTO_TCP (experiment only).

uvicorn's ``Config.bind_socket()`` (the ``--workers N`` path) creates the
listener with ``proto`` 0; accepted sockets inherit it and asyncio then skips
TCP_NODELAY, so every keep-alive response waits for the client's delayed ACK
(uvicorn issue #3149). This wrapper re-wraps the bound socket with
``proto=IPPROTO_TCP`` and runs the unchanged ``chatstore`` CLI, to measure
what the fix BENCHMARKS.md proposes would give:
``python -m scripts.benchlib.serve_nodelay serve --workers 2 ...``.
"""

from __future__ import annotations

import socket
import sys

import uvicorn.config

_original = uvicorn.config.Config.bind_socket


def _bind_socket(self: uvicorn.config.Config) -> socket.socket:
    sock = _original(self)
    if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.proto == 0:
        return socket.socket(sock.family, socket.SOCK_STREAM, socket.IPPROTO_TCP, sock.detach())
    return sock


uvicorn.config.Config.bind_socket = _bind_socket  # type: ignore[method-assign]

if __name__ == "__main__":
    from chatstore.cli import main

    main(sys.argv[1:])
