from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from stories import services
from stories.errors import GenerationError
from stories.limits import generation_admission_check
from stories.models import GenerationRun
from stories.services import generation_run_admit


def _run(user: Any, *, status: str = "streaming", minutes_ago: float = 0) -> GenerationRun:
    run = GenerationRun.objects.create(user=user, status=status, model="offline", max_tokens=1024)
    GenerationRun.objects.filter(pk=run.pk).update(created_at=timezone.now() - timedelta(minutes=minutes_ago))
    return run


def _refusal(user: Any) -> GenerationError:
    with pytest.raises(GenerationError) as raised:
        generation_admission_check(user_id=user.pk)
    return raised.value


@override_settings(STORY_MAX_ACTIVE_PER_USER=2)
def test_a_third_concurrent_generation_is_busy(writer: Any, other_writer: Any) -> None:
    _run(writer)
    generation_admission_check(user_id=writer.pk)
    _run(writer)
    error = _refusal(writer)
    assert error.code == "busy"
    assert error.retryable is True
    assert "at most 2 at a time" in error.message
    # Another writer is not affected by this one's generations.
    generation_admission_check(user_id=other_writer.pk)


@override_settings(STORY_MAX_ACTIVE_PER_USER=1)
def test_finished_runs_do_not_count_as_active(writer: Any) -> None:
    for status in ("succeeded", "failed", "cancelled"):
        _run(writer, status=status)
    generation_admission_check(user_id=writer.pk)


@override_settings(STORY_MAX_ACTIVE_PER_USER=1, STORY_STREAMING_STALE_SECONDS=1800)
def test_a_run_stuck_streaming_after_a_crash_never_locks_the_writer_out(writer: Any) -> None:
    _run(writer, minutes_ago=31)
    generation_admission_check(user_id=writer.pk)
    _run(writer, minutes_ago=29)
    assert _refusal(writer).code == "busy"


@override_settings(STORY_GENERATIONS_PER_HOUR=3, STORY_MAX_ACTIVE_PER_USER=10)
def test_the_hourly_limit_says_when_to_retry(writer: Any) -> None:
    _run(writer, status="succeeded", minutes_ago=50)
    _run(writer, status="failed", minutes_ago=20)
    generation_admission_check(user_id=writer.pk)
    _run(writer, status="cancelled", minutes_ago=1)
    error = _refusal(writer)
    assert error.code == "rate_limited"
    assert error.retryable is True
    # The oldest run leaves the rolling hour in about ten minutes.
    assert error.retry_after is not None and 590 <= error.retry_after <= 600
    assert f"retry_after={error.retry_after} seconds" in error.message
    assert "Try again in 10 minutes" in error.message


@override_settings(STORY_GENERATIONS_PER_HOUR=2, STORY_MAX_ACTIVE_PER_USER=10)
def test_runs_older_than_an_hour_do_not_count(writer: Any) -> None:
    _run(writer, status="succeeded", minutes_ago=61)
    _run(writer, status="succeeded", minutes_ago=90)
    _run(writer, status="succeeded", minutes_ago=5)
    generation_admission_check(user_id=writer.pk)


@override_settings(STORY_GENERATIONS_PER_HOUR=2, STORY_MAX_ACTIVE_PER_USER=10)
def test_over_the_limit_the_retry_waits_for_enough_runs_to_leave_the_hour(writer: Any) -> None:
    # Four runs (a race admitted extras): the count drops below 2 only when the third oldest leaves.
    for minutes in (55, 40, 30, 10):
        _run(writer, status="succeeded", minutes_ago=minutes)
    error = _refusal(writer)
    assert error.retry_after is not None and 29 * 60 <= error.retry_after <= 30 * 60


@override_settings(
    CACHES={
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",
        }
    }
)
@override_settings(STORY_MAX_ACTIVE_PER_USER=1)
def test_the_limits_hold_when_redis_is_unreachable(writer: Any) -> None:
    _run(writer)
    assert _refusal(writer).code == "busy"


@pytest.mark.django_db(transaction=True)
def test_racing_admissions_of_one_user_cannot_exceed_the_limit(
    writer: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Several threads (separate database connections, like separate processes) admit the same user
    # at once; the per-user lock in generation_run_admit lets exactly the allowed number through.
    # (SQLite serializes these writers by itself; on PostgreSQL, without the lock, all four get in.)
    settings.STORY_MAX_ACTIVE_PER_USER = 1
    real_check = services.admission_check

    def slow_check(**arguments: Any) -> None:
        # Widen the window between the check and the run's creation, where an unlocked race would slip.
        real_check(**arguments)
        time.sleep(0.3)

    monkeypatch.setattr(services, "admission_check", slow_check)
    barrier = threading.Barrier(4)
    outcomes: list[str] = []

    def admit() -> None:
        try:
            barrier.wait(timeout=10)
            generation_run_admit(
                user_id=writer.pk, model="offline", max_tokens=1024, persona_names=[], story_id=None
            )
            outcomes.append("admitted")
        except GenerationError as error:
            outcomes.append(error.code)
        finally:
            connection.close()

    threads = [threading.Thread(target=admit) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(outcomes) == ["admitted", "busy", "busy", "busy"]
    assert GenerationRun.objects.filter(user=writer, status="streaming").count() == 1


@override_settings(STORY_GENERATIONS_PER_HOUR=50, STORY_MAX_ACTIVE_PER_USER=5)
def test_admission_reads_the_writers_runs_once_however_many_there_are(writer: Any) -> None:
    def admission_queries() -> list[str]:
        with CaptureQueriesContext(connection) as queries:
            run = generation_run_admit(
                user_id=writer.pk, model="offline", max_tokens=1024, persona_names=[], story_id=None
            )
        services.generation_run_release(run_id=run.pk)
        GenerationRun.objects.filter(pk=run.pk).update(status="succeeded")
        return [query["sql"] for query in queries.captured_queries]

    first = admission_queries()
    for minutes in range(20):
        _run(writer, status="succeeded", minutes_ago=minutes)
    _run(writer, minutes_ago=1)
    later = admission_queries()
    assert len(later) == len(first)
    reads = [sql for sql in later if sql.startswith("SELECT") and "stories_generationrun" in sql]
    assert len(reads) == 1
    # The one read still counts every run of the hour: 23 of them, the two admitted here included.
    with override_settings(STORY_GENERATIONS_PER_HOUR=23):
        assert _refusal(writer).code == "rate_limited"


@override_settings(STORY_MAX_ACTIVE_PER_USER=1, STORY_STREAMING_STALE_SECONDS=1800)
def test_a_run_this_process_holds_but_no_longer_runs_is_closed_at_the_next_admission(writer: Any) -> None:
    # Leased here, still "streaming", but nothing in this process runs it (its task died unrecorded):
    # admission closes it rather than counting it, young or older than both windows alike.
    young, old = _run(writer, minutes_ago=1), _run(writer, minutes_ago=120)
    GenerationRun.objects.filter(pk__in=[young.pk, old.pk]).update(lease_owner=services.RUN_LEASE_OWNER)
    elsewhere = _run(writer, minutes_ago=120)
    GenerationRun.objects.filter(pk=elsewhere.pk).update(lease_owner="another-process")
    run = generation_run_admit(
        user_id=writer.pk, model="offline", max_tokens=1024, persona_names=[], story_id=None
    )
    services.generation_run_release(run_id=run.pk)
    closed = GenerationRun.objects.filter(pk__in=[young.pk, old.pk])
    assert {(r.status, r.error_code) for r in closed} == {("failed", services.INTERRUPTED_CODE)}
    # Another process's run is its own to close (recover_runs, a lease's expiry).
    assert GenerationRun.objects.get(pk=elsewhere.pk).status == "streaming"
