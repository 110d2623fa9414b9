"""How many streams of a kind (event streams, exports) each user may hold
open on this process.

An event stream holds a task, a follower and (while it reads) a pooled
connection for as long as the client keeps the socket open, and an export
holds a connection of the stream pool: one user opening streams without end
would take the process (or the stream pool) from everyone. The cap is per
process: with several processes a user may hold one cap on each, which is
still bounded.
"""

from __future__ import annotations

from collections import Counter

from prometheus_client import Gauge

from chatstore.http.errors import HTTPError

# A client over the cap most likely leaked streams (tabs, retries); it may
# try again soon, once one has closed.
RETRY_AFTER_SECONDS = "5"


class StreamSlots:
    def __init__(self, per_user: int, what: str, gauge: Gauge | None = None) -> None:
        self._per_user = per_user
        self._what = what  # "event streams", "exports": for the 429's message
        self._gauge = gauge
        self._open: Counter[str] = Counter()

    def take(self, user_id: str) -> None:
        """Count one more open stream for ``user_id``; a 429 HTTPError past the cap."""
        if self._open[user_id] >= self._per_user:
            raise HTTPError(
                429,
                "too_many_streams",
                f"at most {self._per_user} {self._what} may be open at once per user; "
                "close one and try again",
                {"Retry-After": RETRY_AFTER_SECONDS},
            )
        self._open[user_id] += 1
        if self._gauge is not None:
            self._gauge.inc()

    def give_back(self, user_id: str) -> None:
        self._open[user_id] -= 1
        if self._open[user_id] <= 0:
            del self._open[user_id]
        if self._gauge is not None:
            self._gauge.dec()

    def open_count(self, user_id: str) -> int:
        return self._open[user_id]
