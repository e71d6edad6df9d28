"""/healthz and /readyz as a probe meets them: each dependency really down gives a 503 naming it, and nothing else."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection
from django.db.migrations.recorder import MigrationRecorder
from django.test import Client

from stories.generation.models_registry import DEFAULT_MODEL
from storyproject import health
from tests.live_server import redis_url

SECRET = "sk-ant-never-shown-0123456789"


@pytest.fixture(autouse=True)
def _migrations_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    # Each test starts as a fresh process would: it has not yet seen the migrations complete.
    monkeypatch.setattr(health, "_migrated", False)


def _ready(**extra: Any) -> tuple[int, dict[str, Any], str]:
    response = Client(**extra).get("/readyz")
    return response.status_code, response.json(), response.content.decode()


@pytest.mark.django_db
def test_healthz_answers_without_touching_the_database_even_with_a_session_cookie(
    django_assert_num_queries: Any,
) -> None:
    client = Client()
    client.cookies["sessionid"] = "abcdefghijklmnopqrstuvwxyz012345"
    with django_assert_num_queries(0):
        response = client.get("/healthz")
    assert response.status_code == 200
    assert response.content == b"ok\n"
    assert "no-cache" in response["Cache-Control"]
    assert "Set-Cookie" not in response


@pytest.mark.django_db
def test_readyz_is_200_when_every_dependency_answers(settings: Any) -> None:
    status, body, _ = _ready()
    assert status == 200, body
    # Redis is asked only where the suite runs with it (the PostgreSQL + Redis pass).
    redis = "ok" if settings.REDIS_URL else "not configured"
    assert body == {
        "status": "ok",
        "checks": {"database": "ok", "migrations": "ok", "redis": redis, "model": "ok"},
        "failed": [],
    }


@pytest.mark.django_db
def test_readyz_says_redis_is_not_configured_rather_than_ok_without_redis_url(settings: Any) -> None:
    settings.REDIS_URL = ""
    status, body, _ = _ready()
    assert status == 200, body
    assert body["checks"]["redis"] == "not configured"
    assert body["failed"] == []


@pytest.mark.django_db
def test_readyz_needs_no_login_and_no_https_redirect_in_production(settings: Any) -> None:
    settings.SECURE_SSL_REDIRECT = True
    status, body, _ = _ready()
    assert status == 200, body
    assert Client().get("/healthz").status_code == 200
    # The rest of the site still redirects to HTTPS.
    assert Client().get("/accounts/login/").status_code == 301


@pytest.mark.django_db
def test_redis_down_is_a_503_naming_redis_without_its_address(settings: Any) -> None:
    # A port where nothing listens: the connection is really refused.
    settings.REDIS_URL = "redis://:hunter2-password@127.0.0.1:1/11"
    status, body, text = _ready()
    assert status == 503
    assert body["failed"] == ["redis"] and body["checks"]["database"] == "ok"
    for secret in ("127.0.0.1", "hunter2", "redis://"):
        assert secret not in text


@pytest.mark.parametrize(
    "overrides",
    [
        # A Claude model without the key every call would need.
        {"STORY_MODEL": DEFAULT_MODEL, "ANTHROPIC_API_KEY": ""},
        # A Claude model writers may choose, without the key: was "ok", and the runs of writers who chose
        # it were written by the offline back-end, recorded and priced as Claude's.
        {"STORY_MODEL": "offline", "STORY_MODELS": [DEFAULT_MODEL], "ANTHROPIC_API_KEY": ""},
        # A back-end that cannot be imported; the key must not be shown either.
        {"STORY_BACKEND": "stories.generation.backends.nowhere.Backend", "ANTHROPIC_API_KEY": SECRET},
    ],
)
@pytest.mark.django_db
def test_an_unusable_model_back_end_is_a_503_naming_the_model_and_nothing_else(
    settings: Any, overrides: dict[str, str]
) -> None:
    for name, value in overrides.items():
        setattr(settings, name, value)
    status, body, text = _ready()
    assert status == 503
    assert body["failed"] == ["model"]
    assert SECRET not in text and "nowhere" not in text


@pytest.mark.django_db
def test_an_unapplied_migration_is_a_503_naming_migrations() -> None:
    recorder = MigrationRecorder(connection)
    latest = recorder.migration_qs.filter(app="stories").order_by("-id").first()
    assert latest is not None
    latest.delete()  # rolled back with the test's transaction
    status, body, _ = _ready()
    assert status == 503
    assert body["failed"] == ["migrations"]


@pytest.fixture
def database_gone() -> Iterator[None]:
    """The default database, really unreachable: a file in a missing directory, or a missing database."""
    settings_dict = connection.settings_dict
    saved = {"NAME": settings_dict["NAME"], "OPTIONS": dict(settings_dict["OPTIONS"])}
    _disconnect()
    if connection.vendor == "sqlite":
        settings_dict["NAME"] = "/nonexistent-directory/story.sqlite3"
    else:
        settings_dict["NAME"] = "story_no_such_database"
        if "pool" in settings_dict["OPTIONS"]:
            settings_dict["OPTIONS"] = {
                **saved["OPTIONS"],
                "pool": {**saved["OPTIONS"]["pool"], "timeout": 1},
            }
    try:
        yield
    finally:
        _disconnect()
        settings_dict.update(saved)


def _disconnect() -> None:
    connection.close()
    if hasattr(connection, "close_pool"):
        connection.close_pool()


@pytest.mark.django_db(transaction=True)
def test_the_database_down_is_a_503_naming_it_without_its_name_or_host(database_gone: None) -> None:
    status, body, text = _ready()
    assert status == 503
    assert body["failed"] == ["database"]
    assert body["checks"]["migrations"] == "not checked"
    for secret in ("nonexistent-directory", "story_no_such_database", "127.0.0.1", "sqlite", "postgres"):
        assert secret not in text


@pytest.mark.django_db(transaction=True)
def test_metrics_are_served_with_the_database_down_leaving_out_only_the_active_runs(
    database_gone: None, settings: Any
) -> None:
    settings.METRICS_TOKEN = "metrics-token-0123456789abcdef"
    response = Client().get("/metrics", HTTP_AUTHORIZATION="Bearer metrics-token-0123456789abcdef")
    assert response.status_code == 200
    text = response.content.decode()
    assert "story_websockets_open" in text and "story_generations_total" in text
    assert "story_generations_active" not in text


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
def test_probes_refuse_writes_with_405_not_a_csrf_page(path: str) -> None:
    assert Client(enforce_csrf_checks=True).post(path).status_code == 405


@pytest.mark.django_db
def test_a_check_failing_probe_after_probe_logs_its_traceback_once_then_its_recovery(
    settings: Any, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Was: a WARNING with its traceback at every probe (every few seconds per process) while Redis was
    # down. Now as the app's other repeated failures (storyproject.logs.RepeatedFailure).
    monkeypatch.setattr(health, "_failures", {})
    settings.REDIS_URL = "redis://:hunter2@127.0.0.1:1/0"
    with caplog.at_level("WARNING"):
        for _ in range(5):
            assert _ready()[0] == 503
    failing = [r for r in caplog.records if r.name == "storyproject.health"]
    assert [r.getMessage() for r in failing] == ["readiness: the redis check failed"]
    # Nor Django's "Service Unavailable: /readyz" ERROR at every probe: the check said it already.
    assert [r.getMessage() for r in caplog.records if r.name == "django.request"] == []
    assert failing[0].exc_info is not None  # its cause, once
    caplog.clear()
    settings.REDIS_URL = redis_url()  # the machine's Redis, up
    with caplog.at_level("WARNING", logger="storyproject.health"):
        assert _ready()[0] == 200
        assert _ready()[0] == 200
    said = [r.getMessage() for r in caplog.records if r.name == "storyproject.health"]
    assert len(said) == 1 and re.fullmatch(
        r"readiness: the redis check works again, after 5 failures in \d+ s", said[0]
    )
