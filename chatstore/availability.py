"""Whether the database answers, as this process last saw it.

An outage is told twice in the log: one warning when the first request
fails for it (the 503 handler, chatstore/http/errors.py, calls
``unavailable``) and one when a database operation succeeds again
(chatstore/dberrors.py calls ``available``), with how long it lasted.
Not a warning per failed request: a busy server answers hundreds of 503s a
second during an outage, and a log that repeats them buries everything else.
Each process tracks its own (each worker logs its own outage).
"""

from __future__ import annotations

import logging
import time

log = logging.getLogger("chatstore.database")


class Availability:
    def __init__(self) -> None:
        # time.monotonic() of the first failure of the current outage.
        self.unavailable_since: float | None = None

    def unavailable(self, error: BaseException | None) -> None:
        if self.unavailable_since is None:
            self.unavailable_since = time.monotonic()
            log.warning(
                "database unavailable (%r): answering 503 until it answers again",
                error,
            )

    def available(self) -> None:
        if self.unavailable_since is not None:
            lasted = time.monotonic() - self.unavailable_since
            self.unavailable_since = None
            log.warning("database available again after %.1f s unavailable", lasted)


DATABASE = Availability()
