"""A killed server process loses no finished work: real daphne processes, SIGKILL, and a resume.

A daphne subprocess runs a generation against the fake Anthropic server (in this process, so it sees
every request of both server processes); the test kills it with SIGKILL once k of n scenes are done,
then starts a new daphne process (parallel mode) or runs ``manage.py recover_runs`` (single mode).
The run completes under the same id and the fake is asked only for what was missing. The subprocesses
use the suite's own test database (SQLite file or PostgreSQL), so this runs on both.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.conf import settings as django_settings
from rest_framework.authtoken.models import Token

from stories.generation.stream import ScreenplayStreamParser
from stories.models import GenerationRun, ScreenplayVersion
from tests.fake_anthropic import FakeAnthropic, Reply, reply_shaped
from tests.fake_screenwriter import (
    FakeScreenwriter,
    first_user_text,
    scene_number,
    screenplay_as_assembled,
)
from tests.stories.generation.conftest import MODEL, generate_message, screenplay

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[3]
STALL = 60.0


def _database_url() -> str:
    db = django_settings.DATABASES["default"]
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    password = f":{db['PASSWORD']}" if db["PASSWORD"] else ""
    return f"postgres://{db['USER']}{password}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


@pytest.fixture
def server_env(fake_anthropic: FakeAnthropic) -> dict[str, str]:
    """The environment of the server processes: the test database, the fake, one-second leases."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "STORY_", "DATABASE_"))}
    env.update(
        DATABASE_URL=_database_url(),
        DJANGO_SETTINGS_MODULE="storyproject.settings",
        DJANGO_DEBUG="1",
        ANTHROPIC_API_KEY=fake_anthropic.api_key,
        ANTHROPIC_BASE_URL=fake_anthropic.base_url,
        STORY_MODEL=MODEL,
        STORY_RUN_LEASE_SECONDS="1",
        STORY_LLM_READ_TIMEOUT_SECONDS=str(int(STALL)),
        PYTHONUNBUFFERED="1",
    )
    return env


class Daphne:
    """One daphne process serving the app; ``kill`` sends SIGKILL, as the OOM killer would."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        self.log = log
        with log.open("ab") as out:
            command = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port)]
            self.process = subprocess.Popen(
                [*command, "storyproject.asgi:application"], cwd=ROOT, env=env, stdout=out, stderr=out
            )
        self.url = f"http://127.0.0.1:{self.port}"
        _until(self._answers, 30, lambda: f"daphne did not start:\n{log.read_text()}")

    def _answers(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"daphne exited:\n{self.log.read_text()}")
        try:
            with urllib.request.urlopen(self.url + "/healthz", timeout=2):
                return True
        except OSError:
            return False

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


@dataclasses.dataclass
class Servers:
    """The server processes of one test (stopped at its end) and what they share."""

    env: dict[str, str]
    logs: Path
    token: str
    started: list[Daphne] = dataclasses.field(default_factory=list)

    def start(self) -> Daphne:
        daphne = Daphne(self.env, self.logs / f"daphne-{len(self.started) + 1}.log")
        self.started.append(daphne)
        return daphne

    def killed_after(self, scenes: int, **fields: Any) -> GenerationRun:
        """Start a generation in a new process, and SIGKILL it once ``scenes`` scenes are checkpointed."""
        first = self.start()
        _generate_in_background(first.url, self.token, **fields)
        run = _checkpointed_scenes(scenes)
        first.kill()
        return run


@pytest.fixture
def servers(server_env: dict[str, str], tmp_path: Path, writer: Any) -> Iterator[Servers]:
    started = Servers(env=server_env, logs=tmp_path, token=Token.objects.create(user=writer).key)
    yield started
    for daphne in started.started:
        daphne.stop()


def _until(check: Callable[[], Any], seconds: float, message: Callable[[], str]) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(message())


def _generate_in_background(url: str, token: str, **fields: Any) -> None:
    """POST a blocking generation that the kill will cut; its answer never comes."""
    body = {k: v for k, v in generate_message(**fields).items() if k != "type"}

    def post() -> None:
        # The server is killed mid-request (what the test is about): the request fails.
        with contextlib.suppress(httpx.HTTPError):
            headers = {"Authorization": f"Token {token}"}
            httpx.post(f"{url}/api/ai/generate-screenplay/", json=body, timeout=120, headers=headers)

    threading.Thread(target=post, daemon=True).start()


def _checkpointed_scenes(count: int) -> GenerationRun:
    def check() -> GenerationRun | None:
        run = GenerationRun.objects.filter(status="streaming").first()
        return run if run is not None and len(run.checkpoint.get("scenes") or []) >= count else None

    return _until(
        check, 60, lambda: f"no run checkpointed {count} scenes: {list(GenerationRun.objects.values())}"
    )


def _finished(run_id: int, seconds: float = 60) -> GenerationRun:
    def check() -> GenerationRun | None:
        run = GenerationRun.objects.get(pk=run_id)
        return None if run.status == "streaming" else run

    return _until(check, seconds, lambda: f"run {run_id} is still streaming")


def test_a_parallel_run_killed_after_k_scenes_is_finished_by_a_new_process_writing_only_the_rest(
    cast: Any, fake_anthropic: FakeAnthropic, servers: Servers
) -> None:
    expected = screenplay(scenes=4)
    fake = FakeScreenwriter(expected)
    for index in (2, 3):
        # In the first process scenes 3 and 4 never finish: they stall after their first words.
        fake.fail_scene(
            index,
            Reply(
                text=json.dumps({"outline": None, "scene": expected["scenes"][index]}),
                stall_after=1,
                stall_seconds=STALL,
            ),
        )
    fake_anthropic.default = fake
    run = servers.killed_after(2, mode="parallel")
    asked_before = len(fake_anthropic.requests)
    assert sorted(scene_number(r.body) or 0 for r in fake_anthropic.requests) == [0, 1, 2, 3, 4]

    servers.start()
    finished = _finished(run.pk)

    assert finished.status == "succeeded", finished.error_message
    version = ScreenplayVersion.objects.get(run_id=run.pk)
    assert version.content == screenplay_as_assembled(expected)
    later = fake_anthropic.requests[asked_before:]
    # Only the two missing scenes were written again; the outline and scenes 1 and 2 were kept.
    assert sorted(scene_number(r.body) or 0 for r in later) == [3, 4]
    assert not [r for r in later if "Step 1: write the outline" in first_user_text(r.body)]
    assert finished.details["resumed"]["scenes_kept"] == 2
    assert GenerationRun.objects.count() == 1 and ScreenplayVersion.objects.count() == 1


def _stalling_after_scenes(document: dict[str, Any], scenes: int) -> Callable[[dict[str, Any]], Reply]:
    """The first call writes ``scenes`` whole scenes and stalls; a continuation writes the rest."""
    header = {key: document[key] for key in ("title", "logline", "characters")}

    def reply(body: dict[str, Any]) -> Reply:
        if len(body["messages"]) > 1:
            return Reply(text=json.dumps({**header, "scenes": document["scenes"][scenes:]}, indent=1))
        shaped = reply_shaped(Reply(text=json.dumps(document, indent=1)), body)
        parser, size = ScreenplayStreamParser(), shaped.chunk_chars
        # The fake sends the text in chunks of chunk_chars: stall at the first chunk after scene k ends.
        sent = 0
        while len(parser.scenes) < scenes:
            parser.feed(shaped.text[sent * size : (sent + 1) * size])
            sent += 1
        return dataclasses.replace(shaped, stall_after=sent, stall_seconds=STALL)

    return reply


def test_a_single_mode_run_killed_after_k_scenes_is_continued_by_recover_runs(
    cast: Any, fake_anthropic: FakeAnthropic, servers: Servers
) -> None:
    expected = screenplay(scenes=3)
    fake_anthropic.default = _stalling_after_scenes(expected, 2)
    run = servers.killed_after(2, mode="single")
    assert len(fake_anthropic.requests) == 1
    time.sleep(1.2)  # the one-second lease runs out

    recovered = subprocess.run(
        [sys.executable, "manage.py", "recover_runs"],
        cwd=ROOT,
        env=servers.env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert "1 orphaned run(s): 1 resumed and finished" in recovered.stdout, (
        recovered.stdout + recovered.stderr
    )
    finished = GenerationRun.objects.get(pk=run.pk)
    assert finished.status == "succeeded", finished.error_message
    assert ScreenplayVersion.objects.get(run_id=run.pk).content["scenes"] == expected["scenes"]
    [continuation] = fake_anthropic.requests[1:]
    assert 'after scene 2 ("INT. OFFICE 2 - NIGHT")' in continuation.body["messages"][-1]["content"]
    assert finished.continuations == 1 and finished.usage_estimated
