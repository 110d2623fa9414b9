"""What a run measures and for how long: the full run and the --quick smoke run."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Plan:
    quick: bool
    # Seeds.
    big_conversation: int  # messages in the "1M" conversation (also the export)
    mid_conversation: int  # messages in the middle conversation of the scaling table
    small_conversation: int  # messages in the small conversation
    list_sizes: tuple[int, ...]  # conversations of the users whose first page is read
    search_users: int  # users of the search corpus
    search_messages_per_user: int
    search_conversations_per_user: int
    append_conversations: int  # appends spread over this many conversations
    # Timing of the Python API workloads (seconds): a warm-up, then
    # `duration` seconds of each implementation in alternating slices.
    warmup: float
    duration: float
    slice: float
    # Scaling: per size, this long for each implementation.
    scaling_duration: float
    # HTTP: wrk's duration is whole seconds.
    http_warmup: int
    http_duration: int
    http_connections: int
    # The asyncio client against wrk, on one workload.
    client_comparison: int  # seconds per client, 0 to skip
    # The peers (scripts/benchlib/peers.py): conversations read (small, big),
    # seconds of each store per phase in slices, the concurrency sweep.
    peer_sizes: tuple[int, int]
    peer_warmup: float
    peer_duration: float
    peer_slice: float
    sweep: tuple[int, ...]
    sweep_duration: float
    # The HTTP peer against chatstore serve: wrk threads x connections, seconds.
    http_peer_threads: int
    http_peer_duration: int

    @property
    def label(self) -> str:
        return "quick" if self.quick else "full"


FULL = Plan(
    quick=False,
    big_conversation=1_000_000,
    mid_conversation=10_000,
    small_conversation=100,
    list_sizes=(100, 10_000, 100_000),
    search_users=1_000,
    search_messages_per_user=1_000,
    search_conversations_per_user=10,
    append_conversations=64,
    warmup=0.5,
    duration=6.0,
    slice=0.25,
    scaling_duration=2.0,
    http_warmup=2,
    http_duration=8,
    http_connections=16,
    client_comparison=5,
    peer_sizes=(100, 10_000),
    peer_warmup=0.5,
    peer_duration=5.0,
    peer_slice=1.0,
    sweep=(1, 4, 16, 64),
    sweep_duration=3.0,
    http_peer_threads=2,
    http_peer_duration=5,
)

QUICK = Plan(
    quick=True,
    big_conversation=20_000,
    mid_conversation=10_000,
    small_conversation=100,
    list_sizes=(100, 1_000, 10_000),
    search_users=20,
    search_messages_per_user=1_000,
    search_conversations_per_user=10,
    append_conversations=64,
    warmup=0.1,
    duration=0.5,
    slice=0.2,
    scaling_duration=0.4,
    http_warmup=1,
    http_duration=1,
    http_connections=16,
    client_comparison=0,
    peer_sizes=(100, 1_000),
    peer_warmup=0.1,
    peer_duration=0.3,
    peer_slice=0.3,
    sweep=(1, 16),
    sweep_duration=0.2,
    http_peer_threads=2,
    http_peer_duration=1,
)
