"""What every route needs, built once by the app's lifespan."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response

from chatstore.config import Settings
from chatstore.events import MessageEvents
from chatstore.http.auth import Authenticator
from chatstore.responder import Responder
from chatstore.store import ChatStore
from chatstore.validation import validate_model

JSON = "application/json"
M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class Context:
    settings: Settings
    store: ChatStore
    auth: Authenticator
    responder: Responder
    events: MessageEvents


def context(request: Request) -> Context:
    ctx: Context = request.app.state.context
    return ctx


def render(model: BaseModel, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(model.model_dump_json(), status_code=status, media_type=JSON, headers=headers)


Endpoint = Callable[[Request], Awaitable[Response]]
UserHandler = Callable[[Request, Context, str], Awaitable[Response]]


def authenticated(handler: UserHandler) -> Endpoint:
    """Run ``handler`` as the calling user; no valid session is a 401."""

    async def endpoint(request: Request) -> Response:
        ctx = context(request)
        user_id = await ctx.auth.user_id(request)
        return await handler(request, ctx, user_id)

    endpoint.__name__ = handler.__name__
    endpoint.__doc__ = handler.__doc__
    return endpoint


def body_model(model: type[M], data: Any, settings: Settings) -> M:
    """Validate a parsed body, locating errors under "body"."""
    return validate_model(model, data, settings, loc=("body",))
