"""The chat page (``/``), the API reference (``/docs``) and their files
(``/static/...``): the package's chatstore/web folder, served as it is.

Not API endpoints: no session is needed to fetch them (the page signs in by
calling the API, which is the gate), and they are left out of openapi.json
(``include_in_schema=False``; tests/test_openapi.py skips them explicitly).

The files are read once, when the app is built: a handful of small files,
served from memory with a strong ETag, ``Cache-Control: no-cache`` (the
names carry no version, so a browser revalidates, and a 304 keeps that
cheap) and, on the HTML, a Content-Security-Policy that lets the page run
only its own scripts and talk only to its own origin.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from chatstore.errors import NotFound

WEB_DIR = Path(__file__).resolve().parent.parent / "web"

MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}

# No inline script or style, no other origin: an injected <script> or
# on* attribute does not run, and nothing could be sent anywhere else.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)

COMMON_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    # The sign-in link's token is in the fragment, which no Referer carries;
    # no-referrer keeps even the path to ourselves.
    "Referrer-Policy": "no-referrer",
}


@dataclass(frozen=True)
class WebFile:
    body: bytes
    media_type: str
    etag: str

    @classmethod
    def read(cls, path: Path) -> WebFile:
        body = path.read_bytes()
        return cls(body, MEDIA_TYPES[path.suffix], f'"{hashlib.sha256(body).hexdigest()[:32]}"')

    def response(self, request: Request) -> Response:
        headers = {**COMMON_HEADERS, "ETag": self.etag}
        if self.media_type.startswith("text/html"):
            headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        if self.etag in _etags(request.headers.get("if-none-match", "")):
            return Response(status_code=304, headers=headers)
        return Response(self.body, media_type=self.media_type, headers=headers)


def _etags(header: str) -> set[str]:
    return {tag.strip().removeprefix("W/") for tag in header.split(",")}


def load_files(folder: Path = WEB_DIR) -> dict[str, WebFile]:
    """Every file of ``folder`` with a known type, by name. Only these names
    are served: a request names a key of this dict, never a path."""
    return {
        path.name: WebFile.read(path)
        for path in sorted(folder.iterdir())
        if path.is_file() and path.suffix in MEDIA_TYPES
    }


def routes(files: dict[str, WebFile] | None = None) -> list[Route]:
    served = load_files() if files is None else files

    def page(name: str) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            return served[name].response(request)

        return endpoint

    async def static(request: Request) -> Response:
        found = served.get(request.path_params["name"])
        if found is None:
            raise NotFound("file")
        return found.response(request)

    return [
        Route("/", page("index.html"), methods=["GET"], include_in_schema=False),
        Route("/docs", page("docs.html"), methods=["GET"], include_in_schema=False),
        Route("/static/{name}", static, methods=["GET"], include_in_schema=False),
    ]
