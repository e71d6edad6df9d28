"""Redis down: the cache degrades to none and generations still complete (single process)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.core.cache import caches
from django.http import StreamingHttpResponse
from django.test import override_settings
from django.utils import timezone
from rest_framework.test import APIClient

from stories.models import GenerationRun
from storyproject import logs
from storyproject.cache import RETRY_AFTER_SECONDS, FailSoftRedisCache
from tests.stories.generation.conftest import ws_connect, ws_events, ws_generate

DEAD_REDIS = "redis://127.0.0.1:1/0"


def _down(location: str = DEAD_REDIS) -> dict[str, Any]:
    # The circuit breaker is shared by every cache object with the same location: a test that counts
    # the breaker's warnings takes a location of its own, which no earlier test has tripped.
    return {
        "default": {
            "BACKEND": "storyproject.cache.FailSoftRedisCache",
            "LOCATION": location,
            "OPTIONS": {"socket_connect_timeout": 0.2, "socket_timeout": 0.2},
        }
    }


DOWN = _down()


@pytest.mark.django_db(transaction=True)
async def test_a_generation_completes_and_is_saved_while_redis_is_down(
    writer: Any, cast: Any, offline: None
) -> None:
    with override_settings(CACHES=DOWN):
        events = await ws_generate(writer)
    assert events[-1]["type"] == "done", events[-1]
    assert await GenerationRun.objects.filter(user=writer, status="succeeded").acount() == 1


@override_settings(CACHES=_down("redis://127.0.0.1:1/7"))
def test_the_cache_answers_as_an_empty_one_and_skips_redis_for_a_while(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cache = caches["default"]
    with caplog.at_level(logging.WARNING, logger="storyproject.cache"):
        assert cache.get("k", "fallback") == "fallback"
        cache.set("k", "v")
        assert cache.get_many(["a", "b"]) == {}
        assert cache.set_many({"a": 1}) == ["a"]
        assert cache.add("k", 1) is False
        cache.delete("k")
    # One warning for the first failure; the circuit breaker then answers without trying Redis.
    assert len(caplog.records) == 1
    assert "cache unavailable" in caplog.records[0].getMessage()
    assert isinstance(cache, FailSoftRedisCache)
    assert cache._shared.down_until > time.monotonic() + RETRY_AFTER_SECONDS - 1

    # Django makes a cache object per thread and per request: the next one skips Redis too.
    other = threading.Thread(target=lambda: caches["default"].get("k"))
    with caplog.at_level(logging.WARNING, logger="storyproject.cache"):
        other.start()
        other.join()
    assert len(caplog.records) == 1


def test_with_redis_url_the_settings_use_the_fail_soft_cache() -> None:
    env = {**os.environ, "REDIS_URL": DEAD_REDIS, "DJANGO_SETTINGS_MODULE": "storyproject.settings"}
    script = "import django; django.setup(); from django.conf import settings; print(settings.CACHES['default']['BACKEND'])"
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.stdout.strip() == "storyproject.cache.FailSoftRedisCache", result.stderr


def test_an_outage_is_logged_once_then_once_a_minute_then_its_end(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The run events' writer and the cancel watcher log through it: they wrote a traceback at every
    # attempt, every 110 ms and 250 ms per process, for as long as Redis was down.
    clock = [1000.0]
    monkeypatch.setattr(logs.time, "monotonic", lambda: clock[0])
    failure = logs.RepeatedFailure(logging.getLogger("tests.outage"), "writing run events to Redis")
    with caplog.at_level(logging.WARNING, logger="tests.outage"):
        for _ in range(500):  # 50 s of attempts every 0.1 s
            try:
                raise ConnectionError("Error 111 connecting to 127.0.0.1:1. Connection refused.")
            except ConnectionError:
                failure.failed("3 events not written")
            clock[0] += 0.1
        clock[0] += 10.5
        try:
            raise ConnectionError("still down")
        except ConnectionError:
            failure.failed()
        failure.succeeded()
        failure.succeeded()
    said = [(record.getMessage(), record.exc_info is not None) for record in caplog.records]
    assert said == [
        ("writing run events to Redis failed (3 events not written)", True),
        ("writing run events to Redis still failing: 501 times in the last 60 s", False),
        ("writing run events to Redis works again, after 501 failures in 60 s", False),
    ]


def _run_of_another_process(user: Any) -> GenerationRun:
    """A run that another server process runs now: streaming, under that process's live lease."""
    return GenerationRun.objects.create(
        user=user,
        status="streaming",
        model="offline",
        max_tokens=1024,
        lease_owner="other-host:4242:0123456789ab",
        lease_expires_at=timezone.now() + timedelta(seconds=60),
    )


def _run_fails_there(run: GenerationRun) -> None:
    GenerationRun.objects.filter(pk=run.pk).update(
        status="failed", error_code="llm_timeout", error_message="the model stalled", lease_owner=""
    )


@pytest.mark.django_db(transaction=True)
def test_an_event_stream_of_another_process_s_run_gets_its_end_from_the_database_while_redis_is_down(
    writer: Any, settings: Any
) -> None:
    # Was: a 500 for a new stream (an EventSource then stops for good), and a stream already open was
    # cut by daphne without an end, its client left waiting.
    settings.REDIS_URL = DEAD_REDIS
    run = _run_of_another_process(writer)
    client = APIClient()
    client.force_authenticate(writer)
    response = client.get(f"/api/runs/{run.pk}/events/", {"after": "12"})
    assert response.status_code == 200, response.content
    _run_fails_there(run)
    assert isinstance(response, StreamingHttpResponse)
    body = async_to_sync(_body)(response.streaming_content).decode()
    assert body.endswith(
        'id: end\ndata: {"type": "error", "code": "llm_timeout", "message": "the model stalled", '
        f'"retryable": true, "run_id": {run.pk}, "seq": null}}\n\n'
    ), body


async def _body(content: Any) -> bytes:
    return b"".join([chunk async for chunk in content])


@pytest.mark.django_db(transaction=True)
async def test_a_socket_attached_to_another_process_s_run_gets_its_end_from_the_database_while_redis_is_down(
    writer: Any, settings: Any
) -> None:
    # Was: `error` llm_unavailable "the run's events could not be read", with no run id or seq, as if
    # the run had failed, while it went on.
    settings.REDIS_URL = DEAD_REDIS
    run = await sync_to_async(_run_of_another_process)(writer)
    communicator = await ws_connect(writer)
    try:
        await communicator.send_json_to({"type": "attach", "run_id": run.pk, "after": 12})
        assert await communicator.receive_nothing(timeout=1.5)
        await sync_to_async(_run_fails_there)(run)
        events = await ws_events(communicator)
    finally:
        await communicator.disconnect()
    assert [(e["type"], e.get("code"), e.get("run_id"), e["seq"]) for e in events] == [
        ("error", "llm_timeout", run.pk, None)
    ]
