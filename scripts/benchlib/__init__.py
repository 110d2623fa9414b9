"""chatstore's benchmark suite: chatstore against a raw-asyncpg floor, at every layer.

Run it as ``scripts/bench [--quick] [--plot]`` (see BENCHMARKS.md). The modules:

- ``plan``: what a quick and a full run measure, and for how long;
- ``stats``: the timing loop, percentiles and the A/B alternation;
- ``database``: the throwaway PostgreSQL (or ``--database-url``), settings, machine facts;
- ``seed``: the data set, written with COPY;
- ``api``: the Python API workloads, through ChatStore and through the floor;
- ``scaling``: page reads as a conversation (or a user's conversation list) grows;
- ``server``, ``wrk``, ``loadgen``, ``httpbench``: ``chatstore serve`` under load;
- ``profile``: py-spy on the server under load;
- ``report``, ``plot``: the Markdown tables, the JSON file and the PNG charts.
"""
