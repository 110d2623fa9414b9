"""The HTTP surface: a thin Starlette app over ChatStore (http-api.md)."""
