"""The adversity suite: faults injected under load (RELIABILITY.md).

A package (this file) so that its conftest.py is ``adversity.conftest``,
not a second ``conftest`` beside tests/conftest.py; the shared machinery is
imported as ``adversity.harness``.
"""
