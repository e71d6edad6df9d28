"""The interpreter's settings for a server process: how threads share the GIL, and when the GC runs.

A daphne process runs every stream on its event loop thread and every database call on the loop's
thread pool (storyproject.db). Under load the loop thread always has work, and a pool thread that
gave the GIL up for a PostgreSQL round trip waits for it again until the loop thread is made to drop
it: after ``sys.getswitchinterval()``, 5 ms by default (Python's "convoy effect", bpo-7946). A
generation makes about ten such calls, each several round trips, so at 200 streams its admission and
save queued for seconds behind the streams. ``STORY_GIL_SWITCH_INTERVAL_MS`` (1 ms by default) makes
the loop thread hand the GIL over sooner.

The cyclic garbage collector ran about 17 times a second under the same load and took 6.5 % of the
process's CPU time, most of it scanning the objects loaded at start-up (Django, the SDK, the models),
which never become garbage. ``gc.freeze()`` moves those out of its sight (the Python docs on ``gc``
recommend it once start-up is done), and a first generation threshold of ``STORY_GC_THRESHOLD``
(50,000 allocations, against 700 by default: CPython's default was raised to 2,000 in 3.12 for the
same cost) makes it run about once every ten seconds there. Cycles are still collected; a process
holds them a little longer. Figures: bench/results/steady.md.
"""

from __future__ import annotations

import gc
import sys

from django.conf import settings


def server_runtime_tune() -> None:
    """Apply STORY_GIL_SWITCH_INTERVAL_MS and STORY_GC_THRESHOLD to this process (once start-up is done)."""
    sys.setswitchinterval(settings.STORY_GIL_SWITCH_INTERVAL_MS / 1000)
    gc.collect()
    gc.freeze()
    _, second, third = gc.get_threshold()
    gc.set_threshold(settings.STORY_GC_THRESHOLD, second, third)
