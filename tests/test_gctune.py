"""chatstore/gctune.py: a serving process freezes what it started with and
collects its youngest generation less often (the live server's log says it
did: tests/features/test_serve_logs.py)."""

from __future__ import annotations

import gc

from chatstore.gctune import YOUNGEST_THRESHOLD, tune_for_serving


def test_serving_freezes_startup_objects_and_raises_the_youngest_threshold() -> None:
    before = gc.get_threshold()
    survivor = [object() for _ in range(1000)]
    try:
        frozen = tune_for_serving()
        assert frozen == gc.get_freeze_count() >= len(survivor)
        assert gc.get_threshold() == (YOUNGEST_THRESHOLD, before[1], before[2])
        assert before[0] < YOUNGEST_THRESHOLD
        # The frozen objects are out of the collector's sight.
        assert not any(thing is survivor for thing in gc.get_objects())
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
