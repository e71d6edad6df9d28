"""Redis down: the cache degrades to none and generations still complete (single process)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from typing import Any

import pytest
from django.core.cache import caches
from django.test import override_settings

from stories.models import GenerationRun
from storyproject import logs
from storyproject.cache import RETRY_AFTER_SECONDS, FailSoftRedisCache
from tests.stories.generation.conftest import ws_generate

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
