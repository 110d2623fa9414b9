"""Full-text search over the caller's own messages."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from chatstore.http.context import Context, authenticated, render
from chatstore.http.params import SearchQuery, query


@authenticated
async def search(request: Request, ctx: Context, user_id: str) -> Response:
    asked = query(request, SearchQuery)
    results = await ctx.store.search(
        user_id,
        asked.q,
        limit=asked.limit,
        conversation_id=asked.conversation_id,
        archived=asked.archived,
    )
    return render(results)
