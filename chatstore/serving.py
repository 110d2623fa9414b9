"""Running the HTTP app under uvicorn, as ``uvicorn.run`` does, with one fix.

With ``--workers N`` uvicorn binds the listening socket itself
(``Config.bind_socket``) with protocol 0; the accepted sockets inherit it,
and asyncio only sets TCP_NODELAY on sockets whose protocol is IPPROTO_TCP.
Without TCP_NODELAY every keep-alive response waits for the client's
delayed ACK: about 44 ms a request on loopback (Kludex/uvicorn#3149;
BENCHMARKS.md measures it). The listener is re-made as IPPROTO_TCP here.
"""

from __future__ import annotations

import socket
import sys
from typing import Any

import uvicorn
from uvicorn.supervisors import Multiprocess

STARTUP_FAILURE = 3

# CHATSTORE_SERVE_HTTP's values, as uvicorn's http option: httptools with
# the request head bounded in size and time (chatstore/http/head_limit.py),
# or h11 with it bounded in time (chatstore/http/h11_head.py; h11 bounds
# its size itself).
HTTP_PROTOCOLS = {
    "httptools": "chatstore.http.head_limit:BoundedHttpToolsProtocol",
    "h11": "chatstore.http.h11_head:BoundedH11Protocol",
}


class _Config(uvicorn.Config):
    def bind_socket(self) -> socket.socket:
        sock = super().bind_socket()
        if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.proto == 0:
            return socket.socket(sock.family, socket.SOCK_STREAM, socket.IPPROTO_TCP, sock.detach())
        return sock


def run(app: str, **options: Any) -> None:
    """``uvicorn.run(app, **options)`` for an import string, without reload."""
    config = _Config(app, **options)
    server = uvicorn.Server(config=config)
    if config.workers > 1:
        Multiprocess(config, sockets=[config.bind_socket()]).run()
        return
    server.run()
    if not server.started:
        sys.exit(STARTUP_FAILURE)
