"""chatstore's benchmark suite: chatstore against the floor and its peers.

Run it as ``scripts/bench [--quick] [--plot]`` (see BENCHMARKS.md). The modules:

- ``plan``: what a quick and a full run measure, and for how long;
- ``stats``: the timing loop, percentiles and the A/B alternation;
- ``database``: the throwaway PostgreSQL (or ``--database-url``), settings, machine facts;
- ``seed``: the data set of the same-SQL, scaling and HTTP sections, written with COPY;
- ``peerstores``, ``peerworker``, ``peers``: the Python API against the peers
  (minimal asyncpg floor, langchain-postgres, llama-index, Agents SDK, chatstore),
  each in its own process and database, and the concurrency sweep;
- ``httppeers``: ``chatstore serve`` against the FastAPI + SQLModel app
  (scripts/benchpeers);
- ``api``, ``scaling``: the Python API through ChatStore and through the same SQL
  on raw asyncpg, and reads as the data grows;
- ``server``, ``wrk``, ``loadgen``, ``httpbench``: ``chatstore serve`` under load;
- ``profile``: py-spy on the server under load;
- ``report``, ``peerreport``, ``plot``: the Markdown tables, the targets and the PNG charts.
"""
