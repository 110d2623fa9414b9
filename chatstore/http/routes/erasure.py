"""DELETE /api/me/data: everything the caller stored, deleted (chatstore/erasure.py)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from chatstore.http.context import Context, authenticated, render


@authenticated
async def erase_my_data(request: Request, ctx: Context, user_id: str) -> Response:
    # Only ever the caller's own data: the user id comes from the session,
    # never from the request.
    return render(await ctx.store.erase_user_data(user_id))
