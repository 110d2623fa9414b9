"""The per-user cap on event streams and the open-streams gauge (chatstore/http/streams.py).

(Over HTTP, against a server process: tests/features/test_sessions.py.)
"""

from __future__ import annotations

import pytest

from chatstore import metrics
from chatstore.http.errors import HTTPError
from chatstore.http.streams import StreamSlots


def open_streams() -> float:
    return metrics.REGISTRY.get_sample_value("chatstore_event_streams_open") or 0.0


def test_open_event_streams_are_counted_by_the_gauge_and_capped_per_user() -> None:
    slots = StreamSlots(2, "event streams", metrics.EVENT_STREAMS)
    before = open_streams()
    slots.take("alice")
    slots.take("alice")
    assert open_streams() == before + 2
    with pytest.raises(HTTPError) as refused:
        slots.take("alice")
    assert (refused.value.status, refused.value.code) == (429, "too_many_streams")
    assert int(refused.value.headers["Retry-After"]) > 0
    assert open_streams() == before + 2  # a refused stream is not counted
    slots.take("bob")  # another user's cap is their own
    slots.give_back("alice")
    slots.take("alice")  # the slot given back is free again
    for user in ("alice", "alice", "bob"):
        slots.give_back(user)
    assert open_streams() == before
    assert slots.open_count("alice") == 0
