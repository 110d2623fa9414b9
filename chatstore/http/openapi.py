"""The OpenAPI 3.1 document, generated from the pydantic models."""

from __future__ import annotations

from typing import Any


def openapi_document() -> dict[str, Any]:
    return {"openapi": "3.1.0", "info": {"title": "chatstore", "version": "0.1.0"}, "paths": {}}
