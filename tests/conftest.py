"""The suite's root: loads the shared fixtures (tests/support/fixtures.py).

Everything shared lives in the package ``support`` (tests/support): see its
``__init__`` for the map and support/fixtures.py for the fixtures' names.
"""

pytest_plugins = ["support.fixtures"]
