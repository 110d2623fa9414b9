"""Read-your-writes over HTTP: the ``Chatstore-LSN`` header, both ways.

Each request gets its own consistency scope (chatstore/replicas.py). A
request presenting ``Chatstore-LSN: 16/B374D848`` (from an earlier
response, of any process) has its reads served by a replica only once it
has replayed that far, else by the primary. A response whose request wrote
carries the commit LSN of its latest write in the same header, when read
replicas are configured (without them every read is on the primary and no
LSN is asked for). A malformed header is a 400.

Pure ASGI, like chatstore/http/middleware.py: it wraps ``send`` to add the
header when the response starts, which is after the write for every
endpoint except a streamed chat reply (its reply is written after the
response started: its stream's ``done`` event says what was stored).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chatstore import replicas
from chatstore.errors import ValidationError
from chatstore.http.errors import error_response
from chatstore.http.v1_errors import PREFIX as V1_PREFIX
from chatstore.http.v1_errors import openai_error_response

HEADER = b"chatstore-lsn"
NAME = "Chatstore-LSN"


class ReadYourWrites:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        presented = next((value for name, value in scope["headers"] if name == HEADER), None)
        try:
            floor = (
                None if presented is None else replicas.lsn_argument(presented.decode("latin-1"))
            )
        except ValidationError:
            # In the shape of the API asked: OpenAI's error body on /v1.
            speaks_openai = str(scope.get("path", "")).startswith(V1_PREFIX)
            answer = openai_error_response if speaks_openai else error_response
            response = answer(
                400,
                "bad_request",
                f"{NAME} must be an LSN as an earlier response gave it, like 16/B374D848",
            )
            await response(scope, receive, send)
            return
        with replicas.consistent(floor) as session:

            async def send_with_lsn(message: Message) -> None:
                if message["type"] == "http.response.start" and session.lsn is not None:
                    headers = [
                        (name, value)
                        for name, value in message.get("headers", [])
                        if name.lower() != HEADER
                    ]
                    headers.append((HEADER, session.lsn.encode("ascii")))
                    message = {**message, "headers": headers}
                await send(message)

            await self.app(scope, receive, send_with_lsn)
