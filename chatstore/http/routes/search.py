"""Full-text search over the caller's own messages."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from chatstore.http.context import Context, authenticated, render
from chatstore.http.params import query_int


@authenticated
async def search(request: Request, ctx: Context, user_id: str) -> Response:
    limit = query_int(request, "limit", default=20, minimum=1, maximum=100)
    assert limit is not None
    results = await ctx.store.search(
        user_id,
        request.query_params.get("q", ""),
        limit=limit,
        conversation_id=request.query_params.get("conversation_id"),
    )
    return render(results)


routes = [Route("/api/search", search, methods=["GET"])]
