"""Test support: the one place the suites get users, the app, the error
contract, ``chatstore serve`` processes and throwaway clusters from.

tests/ is not a package (no ``__init__.py``): pytest puts tests/ on sys.path
for tests/conftest.py, and mypy (``files = tests``) sees the same top-level
names, so this folder is the package ``support`` to both. tests/conftest.py
loads ``support.fixtures`` as a plugin: its fixtures are everyone's.

- ``support.fixtures``: the fixtures (the cluster, ``database``, ``store``,
  ``settings``; ``new_user``/``user``/``other_user``/``user_id``/
  ``other_user_id``; ``app``/``client``) and the hook that shows a failed
  test's server logs.
- ``support.users``: ``User``, ``make_user`` (the one way to make a user and
  a session), ``new_key``.
- ``support.app``: ``open_app``, ``open_client``, ``app_client``.
- ``support.contract``: ``assert_error`` (the one error-contract check;
  ``error_of`` for raw responses), ``assert_status``, shapes.
- ``support.requests``: small requests (``create_conversation``, ``append``…).
- ``support.serve``: ``Server``, the one ``chatstore serve`` subprocess helper.
- ``support.sse``: reading server-sent events.
- ``support.databases``: ``create_database`` on the suite's server.
- ``support.pgbouncer``: a PgBouncer in front of the suite's server
  (CHATSTORE_TEST_PGBOUNCER=1, and tests/adversity/test_pgbouncer.py).
- ``support.cluster``: the embedded cluster's test-only powers (throwaway,
  fast and unsafe, kill, restart), kept out of the shipped package.
"""
