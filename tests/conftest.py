from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.core.cache import caches
from django.db.backends.signals import connection_created

from personas.models import PersonaConfig


def _sqlite_without_fsync(sender: Any, connection: Any, **kwargs: Any) -> None:
    # The test database is a throwaway file (see storyproject.env): durability buys nothing here,
    # and without fsync the per-test flushes of transactional tests are several times faster.
    if connection.vendor == "sqlite":
        connection.cursor().execute("PRAGMA synchronous=OFF")


connection_created.connect(_sqlite_without_fsync)


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings: Any) -> None:
    # PBKDF2 at Django's production cost takes most of a second per user on a busy machine; tests
    # check who may do what, not hashing strength. (The browser tests' server keeps the real hashers.)
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _clear_cache() -> Iterator[None]:
    # The caches are real (Redis in the PostgreSQL pass); each test starts from empty ones.
    for alias in django_settings.CACHES:
        caches[alias].clear()
    yield
    for alias in django_settings.CACHES:
        caches[alias].clear()


@pytest.fixture(autouse=True)
def _no_pending_persona_edits() -> Iterator[None]:
    # Persona edits mark their names "pending" on the connection until their transaction commits
    # (personas.cache). A test's transaction is rolled back, never committed, and outside tests the
    # mark is dropped once no transaction is open, which inside a test never happens: so each test
    # starts and ends without marks, as a request does.
    from personas.cache import pending_names

    pending_names().clear()
    yield
    pending_names().clear()


@pytest.fixture(autouse=True)
def _single_mode_unless_chosen(settings: Any) -> None:
    # A test that does not choose a mode gets single mode, whatever the deployment default: its
    # scripted fake replies are one call each. Parallel mode's tests choose it (or set this setting).
    settings.STORY_DEFAULT_MODE = "single"


@pytest.fixture(autouse=True)
def _no_orphan_watcher(settings: Any) -> None:
    # A server process resumes orphaned runs in the background (stories.generation.resume); in the
    # suite's own process that would race the tests' runs. Its tests start it themselves, and the
    # daphne subprocesses of the resume tests keep it on.
    settings.STORY_RUN_RECOVERY = False


@pytest.fixture
def user_factory(db: None) -> Any:
    def make(username: str = "writer", **extra: Any) -> Any:
        return get_user_model().objects.create_user(username=username, password="pw-" + username, **extra)

    return make


@pytest.fixture
def writer(user_factory: Any) -> Any:
    return user_factory("writer")


@pytest.fixture
def other_writer(user_factory: Any) -> Any:
    return user_factory("intruder")


@pytest.fixture
def persona_factory(db: None) -> Any:
    def make(name: str, display_name: str | None = None, **config: Any) -> PersonaConfig:
        config = config or {"personality": f"{name} is brave.", "voice": "Plain."}
        return PersonaConfig.objects.create(
            name=name, display_name=display_name or name.replace("-", " ").title(), config_data=config
        )

    return make


@pytest.fixture(params=["thread pool", "event loop"])
async def run_writes(request: Any, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[str]:
    """Where a running generation's own writes (lease renewals, checkpoints) go from, each in turn: the
    thread pool, or the event loop itself (storyproject.loop_db; on PostgreSQL only, elsewhere they go
    through the pool all the same). The test's loop stands in for daphne's; its connections are closed
    at the end."""
    from storyproject import loop_db

    if request.param == "event loop":
        monkeypatch.setattr(loop_db, "serving_loop", lambda loop: True)
    monkeypatch.setattr(loop_db, "sent", {"statements": 0, "round_trips": 0})
    yield request.param
    await loop_db.pools_close()


def loop_statements() -> int:
    """How many statements the event loops' own connections have sent (storyproject.loop_db)."""
    from storyproject import loop_db

    return loop_db.sent["statements"]


class RunRowLock:
    """Someone in ``psql``: ``BEGIN; SELECT ... FROM stories_generationrun WHERE id = <run> FOR UPDATE;``,
    left open, from a connection of its own (a thread's). On SQLite, which has no row locks, the
    transaction holds the database's write lock (BEGIN IMMEDIATE)."""

    def __init__(self) -> None:
        self.locked = threading.Event()
        self.released = threading.Event()
        self.thread: threading.Thread | None = None

    async def take(self, run_id: int) -> None:
        self.thread = threading.Thread(target=self._hold, args=(run_id,), daemon=True)
        self.thread.start()
        assert await asyncio.get_running_loop().run_in_executor(None, self.locked.wait, 10)

    def release(self) -> None:
        self.released.set()
        if self.thread is not None:
            self.thread.join(timeout=30)

    def _hold(self, run_id: int) -> None:
        from django.db import connections, transaction

        from stories.models import GenerationRun

        try:
            with transaction.atomic():
                list(GenerationRun.objects.select_for_update().filter(pk=run_id).values_list("pk"))
                self.locked.set()
                self.released.wait(60)
        finally:
            connections.close_all()


def etag_revalidated(client: Any, url: str) -> str:
    """The answer's ETag, after checking that sending it back (strong or weak) gets a 304 without a
    body, and another tag the body."""
    first = client.get(url)
    etag = first["ETag"]
    assert first.status_code == 200 and etag and first["Cache-Control"] == "private, no-cache"
    unchanged = client.get(url, HTTP_IF_NONE_MATCH=etag)
    assert (unchanged.status_code, unchanged.content, unchanged["ETag"]) == (304, b"", etag)
    weak = etag if etag.startswith("W/") else f"W/{etag}"
    assert client.get(url, HTTP_IF_NONE_MATCH=f'"other", {weak}').status_code == 304
    assert client.get(url, HTTP_IF_NONE_MATCH='"other"').status_code == 200
    return etag
