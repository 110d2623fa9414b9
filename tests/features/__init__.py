"""Feature tests: idempotency, search, export, live events, several processes.

A package (this file) so that its modules are ``features.test_...`` to
mypy and pytest; fixtures and helpers come from tests/support.
"""
