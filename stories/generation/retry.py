"""How long to wait before retrying a model call: the one back-off rule.

The Anthropic back-end's own retries (before any text) and parallel mode's per-scene retries both wait
this long: the server's ``retry-after`` when it gave one of more than 0 s (the SDK's rule), else
exponential back-off with jitter, never past ``STORY_LLM_RETRY_AFTER_CAP_SECONDS`` (nor ``cap_seconds``, when the caller has a tighter bound).

A ``retry-after`` longer than that bound is not retried at all (``retry_after_too_long``): a request
sent before it has passed is refused again ("retry-after: The number of seconds to wait until you can
retry the request. Earlier retries will fail.", platform.claude.com/docs/en/api/rate-limits, "Response
headers"), so waiting only the cap would cost a request and the wait for the same answer. The caller
fails at once with the error, whose ``retry_after`` tells the writer how long to wait.
"""

from __future__ import annotations

import random

from django.conf import settings

_BACKOFF_BASE_SECONDS = 0.5


def backoff_seconds(attempt: int, retry_after: float | None, *, cap_seconds: float | None = None) -> float:
    """The wait before retry ``attempt`` (0 for the first retry)."""
    cap = _cap(cap_seconds)
    if retry_after is not None and retry_after > 0:
        return min(retry_after, cap)
    return min(_BACKOFF_BASE_SECONDS * 2**attempt, cap) * random.uniform(0.75, 1.25)


def retry_after_too_long(retry_after: float | None, *, cap_seconds: float | None = None) -> bool:
    """Whether the server asks for a longer wait than a retry may wait here: then there is no retry."""
    return retry_after is not None and retry_after > _cap(cap_seconds)


def _cap(cap_seconds: float | None) -> float:
    cap = float(settings.STORY_LLM_RETRY_AFTER_CAP_SECONDS)
    return cap if cap_seconds is None else min(cap, cap_seconds)
