"""Liveness, readiness, the OpenAPI document and metrics; no authentication."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from chatstore import metrics
from chatstore.http.context import context
from chatstore.http.errors import RETRY_AFTER_SECONDS


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """200 once the database answers and every migration is applied."""
    reason = await context(request).store.unready_reason()
    if reason is not None:
        return _not_ready(reason)
    return JSONResponse({"status": "ready"})


def _not_ready(reason: str) -> Response:
    return JSONResponse(
        {"status": "unavailable", "reason": reason},
        status_code=503,
        headers={"Retry-After": RETRY_AFTER_SECONDS},
    )


async def openapi(request: Request) -> Response:
    return JSONResponse(request.app.state.openapi)


async def metrics_text(request: Request) -> Response:
    """The process's metrics in Prometheus' text format. Unauthenticated,
    like /healthz: expose it only to the network that scrapes it."""
    return Response(metrics.render(), media_type=metrics.CONTENT_TYPE)
