"""Django's database session engine, whose sweep of expired sessions (``clearsessions``) does not load them.

Receivers watch every deleted session row (``post_delete`` of ``Session``: the open sockets' cached
check, accounts/apps.py, and the runs a session started, stories/apps.py), so Django's own sweep, a
``QuerySet.delete()``, read every expired row into memory to send each its signal, and each receiver
then decoded it and asked the database about its runs: a site with 100,000 expired sessions had its
cron job load them all. An expired session no longer signs anyone in (a socket's check reads its
expiry; accounts/session_auth.py), and its runs were left going at its expiry, so the sweep deletes
the rows in batches of keys without the signals, as a session's natural expiry sends none either.
"""

from __future__ import annotations

from django.contrib.sessions.backends.db import SessionStore as DatabaseSessionStore
from django.utils import timezone

# Expired sessions deleted per statement.
_SWEEP_BATCH = 1_000


class SessionStore(DatabaseSessionStore):
    @classmethod
    def clear_expired(cls) -> None:
        model = cls.get_model_class()
        now = timezone.now()
        expired = model.objects.filter(expire_date__lt=now)
        while keys := list(expired.values_list("session_key", flat=True)[:_SWEEP_BATCH]):
            # The expiry asked again: a session used (and extended) since the read is kept.
            gone = model.objects.filter(session_key__in=keys, expire_date__lt=now)
            gone._raw_delete(gone.db)  # Django's own fast path for a delete without receivers
