"""A killed or stopped server process loses no finished work: real daphne processes, and a resume.

A daphne subprocess runs a generation against the fake Anthropic server (in this process, so it sees
every request of both server processes); the test kills it with SIGKILL once k of n scenes are done,
then starts a new daphne process (parallel mode) or runs ``manage.py recover_runs`` (single mode).
The run completes under the same id and the fake is asked only for what was missing. The last test
stops a ``make serve`` process (storyproject.serve_worker) gracefully instead, past its grace period:
it hands its run to the other process (Redis carries the run's log between them). The subprocesses
use the suite's own test database (SQLite file or PostgreSQL), so this runs on both.
"""

from __future__ import annotations

import asyncio
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
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from django.conf import settings as django_settings
from rest_framework.authtoken.models import Token
from websockets.typing import Origin

from stories.generation.stream import ScreenplayStreamParser
from stories.models import GenerationRun, ScreenplayVersion
from tests.fake_anthropic import FakeAnthropic, Reply, reply_shaped
from tests.fake_screenwriter import (
    FakeScreenwriter,
    first_user_text,
    scene_number,
    screenplay_as_assembled,
)
from tests.live_server import redis_url
from tests.stories.generation.conftest import MODEL, TERMINAL, generate_message, screenplay

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[3]
STALL = 60.0


def _database_url() -> str:
    db = django_settings.DATABASES["default"]
    if str(db["ENGINE"]).endswith("sqlite3"):
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
    """One daphne process serving the app; ``kill`` sends SIGKILL, as the OOM killer would.

    With ``graceful``, one of ``make serve``'s processes (storyproject.serve_worker, daphne's command
    line with a graceful stop), which SIGTERM (``terminate``) drains and then hands its runs over.
    """

    def __init__(self, env: dict[str, str], log: Path, *, graceful: bool = False) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        self.log = log
        with log.open("ab") as out:
            module = "storyproject.serve_worker" if graceful else "daphne"
            command = [sys.executable, "-m", module, "-b", "127.0.0.1", "-p", str(self.port)]
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

    def start(self, *, graceful: bool = False) -> Daphne:
        daphne = Daphne(self.env, self.logs / f"daphne-{len(self.started) + 1}.log", graceful=graceful)
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


def _generate_in_background(url: str, token: str, **fields: Any) -> list[httpx.Response]:
    """POST a blocking generation that the kill will cut (its answer never comes) or a graceful stop
    will answer (the list it returns gets the response)."""
    body = {k: v for k, v in generate_message(**fields).items() if k != "type"}
    answered: list[httpx.Response] = []

    def post() -> None:
        # The server is killed mid-request (what the test is about): the request fails.
        with contextlib.suppress(httpx.HTTPError):
            headers = {"Authorization": f"Token {token}"}
            answered.append(
                httpx.post(f"{url}/api/ai/generate-screenplay/", json=body, timeout=120, headers=headers)
            )

    threading.Thread(target=post, daemon=True).start()
    return answered


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


def _scenes_3_and_4_stalling(fake_anthropic: FakeAnthropic) -> dict[str, Any]:
    """A four-scene screenplay whose scenes 3 and 4 never finish in the first process (they stall after
    their first words); a process that takes the run over writes them in full."""
    expected = screenplay(scenes=4)
    fake = FakeScreenwriter(expected)
    for index in (2, 3):
        fake.fail_scene(
            index,
            Reply(
                text=json.dumps({"outline": None, "scene": expected["scenes"][index]}),
                stall_after=1,
                stall_seconds=STALL,
            ),
        )
    fake_anthropic.default = fake
    return expected


def test_a_parallel_run_killed_after_k_scenes_is_finished_by_a_new_process_writing_only_the_rest(
    cast: Any, fake_anthropic: FakeAnthropic, servers: Servers
) -> None:
    expected = _scenes_3_and_4_stalling(fake_anthropic)
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


async def _follow(
    url: str, token: str, run_id: int, seen: list[dict[str, Any]], closed: list[tuple[int, str]] | None = None
) -> None:
    """Attach to the run over ``url``'s WebSocket and collect its events into ``seen`` to its end, from
    the last one there; a close by the server before it ends goes into ``closed`` (code, reason)."""
    async with websockets.connect(
        url.replace("http://", "ws://") + "/ws/generate/",
        origin=Origin(url),
        additional_headers={"Authorization": f"Token {token}"},
        open_timeout=30,
    ) as follower:
        after = seen[-1]["seq"] if seen else 0
        await follower.send(json.dumps({"type": "attach", "run_id": run_id, "after": after}))
        async with asyncio.timeout(120):
            try:
                async for raw in follower:
                    seen.append(json.loads(raw))
                    if seen[-1]["type"] in TERMINAL:
                        return
            except websockets.ConnectionClosed as close:
                if closed is None:
                    raise
                closed.append((close.rcvd.code, close.rcvd.reason) if close.rcvd else (1006, ""))


@dataclasses.dataclass
class HandingOver:
    """Two ``make serve`` processes sharing Redis, one of them driving a parallel run whose scenes 3
    and 4 stall there: a graceful stop of that one hands the run to the other."""

    expected: dict[str, Any]
    stopping: Daphne
    other: Daphne
    run: GenerationRun
    asked_before: int
    answered: list[httpx.Response]  # the blocking request's answer, from the stopping process


def _handing_over(fake_anthropic: FakeAnthropic, servers: Servers, lease: int) -> HandingOver:
    expected = _scenes_3_and_4_stalling(fake_anthropic)
    servers.env.update(
        REDIS_URL=redis_url(),
        CACHE_KEY_PREFIX=f"test-handover-{uuid.uuid4().hex[:12]}",
        STORY_RUN_LEASE_SECONDS=str(lease),
        SERVE_GRACEFUL_SECONDS="1",
    )
    stopping, other = servers.start(graceful=True), servers.start(graceful=True)
    answered = _generate_in_background(stopping.url, servers.token, mode="parallel")
    run = _checkpointed_scenes(2)
    # The stopping process's own (stalling) asks for scenes 3 and 4 are counted before the hand-over:
    # they may go out after the checkpoint of the first two.
    _until(
        lambda: sorted(scene_number(r.body) or 0 for r in fake_anthropic.requests) == [0, 1, 2, 3, 4],
        30,
        lambda: f"asked: {[scene_number(r.body) for r in fake_anthropic.requests]}",
    )
    return HandingOver(expected, stopping, other, run, len(fake_anthropic.requests), answered)


def test_a_run_past_a_graceful_stop_is_handed_over_to_the_other_process_and_followed_to_the_end(
    cast: Any, fake_anthropic: FakeAnthropic, servers: Servers
) -> None:
    lease = 60  # a resume within a lease period can only come from the hand-over
    handing = _handing_over(fake_anthropic, servers, lease)
    expected, stopping, other, run = handing.expected, handing.stopping, handing.other, handing.run
    asked_before = handing.asked_before

    seen: list[dict[str, Any]] = []
    follower = threading.Thread(target=asyncio.run, args=(_follow(other.url, servers.token, run.pk, seen),))
    follower.start()
    _until(lambda: any(event["type"] == "scene" for event in seen), 30, lambda: f"nothing followed: {seen}")
    stopping.process.send_signal(signal.SIGTERM)
    stopped_at = time.monotonic()
    assert stopping.process.wait(30) == 0, stopping.log.read_text()
    follower.join(120)

    kinds = [event["type"] for event in seen]
    assert kinds[-2:] == ["saved", "done"], kinds
    # One sequence across both processes: no repeat, "resumed" once, after the stopping process's last
    # event, which was no terminal event; one jump there (past any seq the stopping process gave out).
    assert kinds.count("resumed") == 1 and kinds.count("accepted") == 1
    resumed = kinds.index("resumed")
    seqs = [event["seq"] for event in seen]
    assert seqs[:resumed] == list(range(1, resumed + 1))
    assert seqs[resumed] == seqs[resumed - 1] + 10_000_001
    assert seqs[resumed:] == list(range(seqs[resumed], seqs[resumed] + len(seen) - resumed))
    assert kinds[resumed - 1] not in TERMINAL
    assert [s["index"] for s in seen[resumed]["scenes"]] == [0, 1]
    assert seen[-1]["run_id"] == run.pk
    # Resumed at once (the lease was released, the other process told), not a lease period later.
    finished = _finished(run.pk)
    assert time.monotonic() - stopped_at < lease / 2
    assert finished.status == "succeeded", finished.error_message
    assert finished.details["resumed"]["scenes_kept"] == 2
    assert GenerationRun.objects.count() == 1 and ScreenplayVersion.objects.count() == 1
    assert ScreenplayVersion.objects.get(run_id=run.pk).content == screenplay_as_assembled(expected)
    # The other process wrote only the two missing scenes; the stopping one recorded nothing.
    later = fake_anthropic.requests[asked_before:]
    assert sorted(scene_number(r.body) or 0 for r in later) == [3, 4]
    assert f"run {run.pk} handed over" in stopping.log.read_text()
    assert f"run {run.pk} resumed with 2 finished scene(s)" in other.log.read_text()
    # The blocking request that started it was answered before the process stopped (was: the connection
    # dropped without an answer): naming the run to follow, or, when the other process finished the run
    # while this one was still stopping (a loaded machine), with the run's result, as if it had run here.
    (answer,) = handing.answered
    if answer.status_code == 201:
        assert answer.json()["run_id"] == run.pk
        assert answer.json()["version"]["content"] == screenplay_as_assembled(expected)
        return
    assert answer.status_code == 503
    assert answer.json()["code"] == "server_stopping" and answer.json()["run_id"] == run.pk
    assert f"/api/runs/{run.pk}/events/" in answer.json()["message"]
    assert answer.json()["retryable"] is False


def test_a_socket_following_a_run_on_the_stopping_process_is_closed_with_4503_and_goes_on_from_the_other(
    cast: Any, fake_anthropic: FakeAnthropic, servers: Servers
) -> None:
    # Was: daphne stopped under the follower's socket: the client saw the connection drop (1006), as it
    # would for a network fault, and the create page said "Connection lost" while the run went on.
    handing = _handing_over(fake_anthropic, servers, lease=60)
    seen: list[dict[str, Any]] = []
    closed: list[tuple[int, str]] = []
    url, token, run_id = handing.stopping.url, servers.token, handing.run.pk
    follower = threading.Thread(target=asyncio.run, args=(_follow(url, token, run_id, seen, closed),))
    follower.start()
    _until(lambda: any(event["type"] == "scene" for event in seen), 30, lambda: f"nothing followed: {seen}")

    handing.stopping.process.send_signal(signal.SIGTERM)
    assert handing.stopping.process.wait(30) == 0, handing.stopping.log.read_text()
    follower.join(30)

    assert closed == [(4503, "server_stopping")], (closed, [event["type"] for event in seen])
    assert not [event for event in seen if event["type"] in TERMINAL]
    # Attached again from its last event, on the process left: the rest, without a gap or a repeat.
    shown = len(seen)
    asyncio.run(_follow(handing.other.url, token, run_id, seen))
    kinds = [event["type"] for event in seen]
    assert kinds[-2:] == ["saved", "done"], kinds
    assert seen[shown]["seq"] > seen[shown - 1]["seq"]
    seqs = [event["seq"] for event in seen]
    assert seqs == sorted(set(seqs))
    assert kinds.count("resumed") == 1 and kinds.count("accepted") == 1
    assert _finished(run_id).status == "succeeded"


def test_a_run_that_cannot_be_resumed_is_cancelled_when_a_graceful_stop_runs_out(
    cast: Any, fake_anthropic: FakeAnthropic, servers: Servers
) -> None:
    # Single mode, stalled before its first scene is complete: nothing another process could resume.
    fake_anthropic.default = _stalling_after_scenes(screenplay(scenes=3), 0)
    servers.env.update(SERVE_GRACEFUL_SECONDS="1")
    stopping = servers.start(graceful=True)
    _generate_in_background(stopping.url, servers.token, mode="single")
    _until(lambda: fake_anthropic.requests, 30, lambda: "the model was not asked")
    run = _until(lambda: GenerationRun.objects.filter(status="streaming").first(), 30, lambda: "no run")

    stopping.process.send_signal(signal.SIGTERM)

    assert stopping.process.wait(30) == 0, stopping.log.read_text()
    cancelled = GenerationRun.objects.get(pk=run.pk)
    assert cancelled.status == "cancelled"
    assert cancelled.lease_owner == "" and cancelled.checkpoint == {}
    assert len(fake_anthropic.requests) == 1
    assert f"run {run.pk} cannot be handed over" in stopping.log.read_text()
