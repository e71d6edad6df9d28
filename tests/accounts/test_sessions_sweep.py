"""``clearsessions``: the expired sessions go in a few statements, the live ones stay."""

from __future__ import annotations

import datetime
import io
from typing import Any

import pytest
from django.contrib.sessions.models import Session
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.sessions import SessionStore

pytestmark = pytest.mark.django_db(transaction=True)


def test_clearsessions_deletes_thousands_of_expired_sessions_in_a_few_statements_and_keeps_live_ones(
    writer: Any,
) -> None:
    # Was: every expired row loaded and deleted one by one with its signals, each receiver decoding it
    # and asking about its runs: about 2,500 statements here, and all the rows in memory.
    live = Client()
    live.force_login(writer)
    payload = SessionStore().encode({"_auth_user_id": str(writer.pk)})
    past = timezone.now() - datetime.timedelta(days=1)
    Session.objects.bulk_create(
        Session(session_key=f"expired{n:05}".ljust(32, "x"), session_data=payload, expire_date=past)
        for n in range(2_500)
    )

    with CaptureQueriesContext(connection) as queries:
        call_command("clearsessions", stdout=io.StringIO())

    assert not Session.objects.filter(expire_date__lt=timezone.now()).exists()
    assert Session.objects.count() == 1
    assert len(queries) <= 10, [query["sql"][:80] for query in queries]
    # The live session still signs its writer in.
    assert live.get("/").status_code == 200
