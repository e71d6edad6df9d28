"""Work put off until the response is sent: under the ASGI handler after it, anywhere else at once."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import pytest
from rest_framework.authtoken.models import Token

from personas.selectors import persona_contexts
from storyproject import after_response, stamped_cache
from storyproject.asgi import django_asgi_app


def test_outside_a_request_the_work_runs_at_once() -> None:
    done: list[str] = []
    after_response.after_response(lambda: done.append("now"))
    assert done == ["now"]


def test_queued_work_runs_in_order_when_drained_and_a_failure_stops_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    done: list[str] = []

    def fail() -> None:
        raise RuntimeError("boom")

    with after_response.collected() as queue:
        after_response.after_response(lambda: done.append("first"))
        after_response.after_response(fail)
        after_response.after_response(lambda: done.append("second"))
        assert done == []
        with caplog.at_level(logging.ERROR, logger="storyproject.after_response"):
            queue.drain()
        assert done == ["first", "second"]
        assert "work after the response failed" in caplog.text
        # Drained: work queued later (a task the request started, outliving it) runs at once.
        after_response.after_response(lambda: done.append("late"))
        assert done == ["first", "second", "late"]
    after_response.after_response(lambda: done.append("outside"))
    assert done[-1] == "outside"


def _asgi_exchange(path: str, query: str, token: str, events: list[str]) -> None:
    """One GET through the ASGI app daphne serves, noting what it sends, in order, in ``events``."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "headers": [(b"host", b"127.0.0.1"), (b"authorization", f"Token {token}".encode())],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
    }

    async def exchange() -> None:
        received = False

        async def receive() -> dict[str, Any]:
            nonlocal received
            if not received:
                received = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await asyncio.Event().wait()  # the client never disconnects
            raise AssertionError("unreachable")

        async def send(message: Mapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                events.append(f"status {message['status']}")
            elif not message.get("more_body", False):
                events.append("response sent")

        await django_asgi_app(scope, receive, send)

    asyncio.run(exchange())


@pytest.mark.django_db(transaction=True)
def test_a_cold_batch_is_answered_before_its_entries_are_written_and_they_are_written(
    persona_factory: Any, user_factory: Any, monkeypatch: pytest.MonkeyPatch, django_assert_num_queries: Any
) -> None:
    names = [f"late-{i}" for i in range(5)]
    for name in names:
        persona_factory(name)
    token = Token.objects.create(user=user_factory("reader")).key
    events: list[str] = []
    write = stamped_cache.set_many

    def noted(values: dict[str, Any], timeout: int) -> bool:
        if all(key.startswith("persona-context:") for key in values):
            events.append(f"{len(values)} entries written")
        return write(values, timeout)

    monkeypatch.setattr(stamped_cache, "set_many", noted)
    _asgi_exchange("/api/personas/contexts/", "names=" + ",".join(names), token, events)
    assert events == ["status 200", "response sent", "5 entries written"]
    with django_assert_num_queries(0):  # what was written is what the next read is served from
        assert [c.name for c in persona_contexts(names=names).contexts] == names
