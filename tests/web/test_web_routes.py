"""The page's routes (chatstore/http/web.py): what a browser is sent, with
no database needed."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette
from support.app import open_client

from chatstore.config import Settings
from chatstore.http.app import create_app
from chatstore.http.openapi import openapi_document
from chatstore.http.web import CONTENT_SECURITY_POLICY, WEB_DIR


@pytest.fixture(scope="module")
def bare_app() -> Starlette:
    return create_app(Settings(database_url="postgresql://unused"))


@pytest.fixture
async def client(bare_app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with open_client(bare_app) as opened:
        yield opened


@pytest.mark.parametrize(
    ("path", "file", "media_type"),
    [
        ("/", "index.html", "text/html; charset=utf-8"),
        ("/docs", "docs.html", "text/html; charset=utf-8"),
        ("/static/app.js", "app.js", "text/javascript; charset=utf-8"),
        ("/static/api.js", "api.js", "text/javascript; charset=utf-8"),
        ("/static/docs.js", "docs.js", "text/javascript; charset=utf-8"),
        ("/static/style.css", "style.css", "text/css; charset=utf-8"),
    ],
)
async def test_page_files_are_served_with_their_content_type_and_revalidated(
    client: httpx.AsyncClient, path: str, file: str, media_type: str
) -> None:
    response = await client.get(path)
    assert response.status_code == 200
    assert response.content == (WEB_DIR / file).read_bytes()
    assert response.headers["content-type"] == media_type
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-content-type-options"] == "nosniff"
    again = await client.get(path, headers={"If-None-Match": response.headers["etag"]})
    assert again.status_code == 304
    assert again.content == b""


async def test_html_pages_carry_a_strict_content_security_policy(
    client: httpx.AsyncClient,
) -> None:
    for path in ("/", "/docs"):
        policy = (await client.get(path)).headers["content-security-policy"]
        assert policy == CONTENT_SECURITY_POLICY
        assert "default-src 'self'" in policy
        assert "script-src 'self';" in policy  # no 'unsafe-inline': no inline script runs
    for name in ("index.html", "docs.html"):
        html = (WEB_DIR / name).read_text()
        assert "<script>" not in html and " on" not in html.replace("\n", " ").split("<body>")[0]
        assert "http://" not in html and "https://" not in html  # no CDN


async def test_an_unknown_page_file_is_the_contracts_404(client: httpx.AsyncClient) -> None:
    for path in ("/static/nope.js", "/static/..%2Fcli.py", "/static/", "/index.html"):
        response = await client.get(path)
        assert response.status_code == 404, path
        assert response.json()["error"]["code"] == "not_found", path


def test_page_routes_are_not_api_endpoints(bare_app: Starlette) -> None:
    paths = openapi_document()["paths"]
    assert not {"/", "/docs", "/static/{name}"} & set(paths)
