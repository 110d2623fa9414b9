"""Liveness, readiness, the OpenAPI document and metrics; no authentication."""

from __future__ import annotations

import asyncpg
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from chatstore import metrics
from chatstore.dberrors import translate_errors
from chatstore.errors import Unavailable
from chatstore.http.context import context
from chatstore.http.errors import RETRY_AFTER_SECONDS
from chatstore.migrations import known_ids


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """200 once the database answers and every migration is applied."""
    store = context(request).store
    try:
        with translate_errors():
            rows = await store.queries.many(store.executor, "applied_migrations")
    except Unavailable:
        return _not_ready("the database does not answer")
    except asyncpg.UndefinedTableError:
        return _not_ready("no migration has been applied")
    missing = sorted(set(known_ids()) - {row["migration_id"] for row in rows})
    if missing:
        return _not_ready(f"migrations not applied: {', '.join(missing)}")
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


routes = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/openapi.json", openapi, methods=["GET"]),
    Route("/metrics", metrics_text, methods=["GET"]),
]
