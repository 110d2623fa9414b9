"""Feature tests: idempotency, search, export, live events, several processes.

A package (this file) so that its conftest.py is the module
``features.conftest`` to mypy and pytest, not a second ``conftest`` beside
tests/conftest.py; helpers are imported as ``features.helpers``.
"""
