"""Two daphne processes on one Redis and one database: a run started on one is watched, resumed over
SSE and cancelled from the other (issue 16, "Across processes").

The processes are real (``daphne``), so are the sockets (``websockets``), the HTTP streams (``httpx``),
Redis and the SDK; the model is the fake Anthropic server of this test process.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from websockets.typing import Origin

from stories.generation.models_registry import DEFAULT_MODEL
from tests.fake_anthropic import FakeAnthropic
from tests.live_server import ROOT, daphne_start, daphne_stop, redis_url, server_env, writer_seeded
from tests.stories.generation.conftest import TERMINAL, generate_message, screenplay
from tests.stories.runs.conftest import script_slow

REDIS_URL = redis_url()


@dataclass
class Servers:
    urls: tuple[str, str]
    token: str
    fake: FakeAnthropic
    env: dict[str, str]


def _env(database: Path, fake: FakeAnthropic) -> dict[str, str]:
    return server_env(
        database=database,
        REDIS_URL=REDIS_URL,
        # Its own keys: nothing another test run left in this Redis database is seen.
        CACHE_KEY_PREFIX=f"test-runs-{uuid.uuid4().hex[:12]}",
        ANTHROPIC_API_KEY=fake.api_key,
        ANTHROPIC_BASE_URL=fake.base_url,
        STORY_BACKEND="stories.generation.backends.anthropic.AnthropicBackend",
        STORY_MODEL=DEFAULT_MODEL,
        STORY_MODELS=DEFAULT_MODEL,
        STORY_DEFAULT_MODE="single",
    )


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    workdir = tmp_path_factory.mktemp("two-processes")
    fake = FakeAnthropic()
    env = _env(workdir / "db.sqlite3", fake)
    token = writer_seeded(env)
    first = daphne_start(env=env, log=workdir / "daphne-a.log")
    try:
        second = daphne_start(env=env, log=workdir / "daphne-b.log")
        try:
            yield Servers(urls=(first[0], second[0]), token=token, fake=fake, env=env)
        finally:
            daphne_stop(second[1])
    finally:
        daphne_stop(first[1])
        fake.close()


def _socket(servers: Servers, index: int) -> Any:
    url = servers.urls[index]
    return websockets.connect(
        url.replace("http://", "ws://") + "/ws/generate/",
        origin=Origin(url),
        additional_headers={"Authorization": f"Token {servers.token}"},
        open_timeout=10,
    )


async def _receive(socket: Any, until: Any) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    while not events or not until(events):
        events.append(json.loads(await asyncio.wait_for(socket.recv(), timeout=15)))
    return events


def _ended(events: list[dict[str, Any]]) -> bool:
    return events[-1]["type"] in TERMINAL


def _slow(servers: Servers, tokens_per_second: float) -> None:
    script_slow(servers.fake, tokens_per_second)


async def test_a_run_started_on_one_process_is_watched_and_cancelled_from_the_other(servers: Servers) -> None:
    _slow(servers, tokens_per_second=20)
    requests_before = len(servers.fake.requests)
    async with _socket(servers, 0) as starter, _socket(servers, 1) as watcher:
        await starter.send(json.dumps(generate_message()))
        started = await _receive(starter, lambda events: events[-1]["type"] == "delta")
        run_id = started[0]["run_id"]
        await watcher.send(json.dumps({"type": "attach", "run_id": run_id, "after": 0}))
        watched = await _receive(watcher, lambda events: len(events) >= len(started))
        # The other process sees the same events, under the same addresses.
        assert watched[: len(started)] == started
        await watcher.send(json.dumps({"type": "cancel", "run_id": run_id}))
        cancelled_at = time.monotonic()
        rest = await _receive(starter, _ended)
        watched += await _receive(watcher, _ended)
    upstream = servers.fake.requests[requests_before]
    assert await asyncio.to_thread(servers.fake.wait_for_disconnect, upstream, 1.5)
    assert rest[-1]["type"] == watched[-1]["type"] == "cancelled"
    assert time.monotonic() - cancelled_at < 5
    assert [e["seq"] for e in watched] == list(range(1, len(watched) + 1))
    runs = httpx.get(f"{servers.urls[1]}/api/runs/", headers={"Authorization": f"Token {servers.token}"})
    assert next(r for r in runs.json()["results"] if r["id"] == run_id)["status"] == "cancelled"


async def test_sse_on_the_other_process_resumes_with_last_event_id_and_ends_with_the_save(
    servers: Servers,
) -> None:
    _slow(servers, tokens_per_second=150)
    headers = {"Authorization": f"Token {servers.token}"}
    async with httpx.AsyncClient(base_url=servers.urls[0], headers=headers, timeout=20) as starter:
        started = await starter.post("/api/ai/generate-screenplay/", json={**_plot(), "wait": False})
    assert started.status_code == 202, started.text
    events_url = started.json()["events_url"]
    async with httpx.AsyncClient(base_url=servers.urls[1], headers=headers, timeout=20) as other:
        first = await _sse_read(other, events_url, {}, count=5)
        assert [int(id_) for id_, _ in first] == [1, 2, 3, 4, 5]
        rest = await _sse_read(other, events_url, {"Last-Event-ID": first[-1][0]}, count=None)
        again = await other.get(events_url, headers={"Last-Event-ID": rest[-1][0]})
    ids = [int(id_) for id_, _ in [*first, *rest]]
    assert ids == list(range(1, len(ids) + 1))
    assert [event["type"] for _, event in rest][-2:] == ["saved", "done"]
    assert again.status_code == 204


def _plot() -> dict[str, Any]:
    message = generate_message()
    return {key: message[key] for key in ("plot", "personas")}


async def _sse_read(
    client: httpx.AsyncClient, url: str, headers: dict[str, str], count: int | None
) -> list[tuple[str, dict[str, Any]]]:
    """Read SSE messages (all, or ``count`` then drop the connection) as (id, event)."""
    messages: list[tuple[str, dict[str, Any]]] = []
    async with client.stream("GET", url, headers={"Accept": "text/event-stream", **headers}) as response:
        assert response.status_code == 200
        fields: dict[str, str] = {}
        async for line in response.aiter_lines():
            if line:
                name, _, value = line.partition(": ")
                fields[name] = value
                continue
            if "data" in fields:
                messages.append((fields["id"], json.loads(fields["data"])))
                if len(messages) == count:
                    break
            fields = {}
    return messages


# --- The command: Ctrl-C cancels, --detach leaves the run going, --attach follows it from elsewhere ---

PERSONAS = ["--persona", "noir-detective", "--persona", "femme-fatale"]


def _command(servers: Servers, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "manage.py", "generate_screenplay", "--plot", "Fog.", *args],
        cwd=ROOT,
        env=servers.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def _run_status(servers: Servers, run_id: int) -> str:
    async with httpx.AsyncClient(headers={"Authorization": f"Token {servers.token}"}) as client:
        runs = (await client.get(f"{servers.urls[0]}/api/runs/")).json()["results"]
    return str(next(run["status"] for run in runs if run["id"] == run_id))


# SIGTERM (kill, timeout) as Ctrl-C: it ended the process with its run orphaned, which a server then
# resumed, paid for and saved.
@pytest.mark.parametrize(("signal_sent", "said"), [(signal.SIGINT, "Ctrl-C"), (signal.SIGTERM, "terminated")])
async def test_ctrl_c_or_a_kill_cancels_the_commands_run_and_closes_the_upstream(
    servers: Servers, signal_sent: signal.Signals, said: str
) -> None:
    _slow(servers, tokens_per_second=20)
    requests_before = len(servers.fake.requests)
    command = _command(servers, *PERSONAS)
    deadline = time.monotonic() + 30
    while len(servers.fake.requests) == requests_before:
        assert time.monotonic() < deadline and command.poll() is None, command.stderr
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)
    command.send_signal(signal_sent)
    _, err = await asyncio.to_thread(command.communicate, timeout=20)
    assert command.returncode == 1, err
    assert f"cancelled ({said}): nothing was saved" in err
    upstream = servers.fake.requests[requests_before]
    assert await asyncio.to_thread(servers.fake.wait_for_disconnect, upstream, 1.0)
    async with httpx.AsyncClient(headers={"Authorization": f"Token {servers.token}"}) as client:
        newest = (await client.get(f"{servers.urls[0]}/api/runs/")).json()["results"][0]
    assert newest["status"] == "cancelled"  # recorded so, not orphaned for a server to resume


async def test_detach_prints_the_run_and_attach_from_another_process_follows_it_to_the_save(
    servers: Servers,
) -> None:
    _slow(servers, tokens_per_second=150)
    detach = _command(servers, *PERSONAS, "--detach")
    out, err = await asyncio.to_thread(detach.communicate, timeout=60)
    assert detach.returncode == 0, err
    run_id = int(out.strip())
    attach = subprocess.Popen(
        [sys.executable, "manage.py", "generate_screenplay", "--attach", str(run_id), "--format", "json"],
        cwd=ROOT,
        env=servers.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out, err = await asyncio.to_thread(attach.communicate, timeout=60)
    assert attach.returncode == 0, err
    assert json.loads(out)["scenes"] == screenplay(scenes=4)["scenes"]
    assert "Saved story" in err
    assert await _run_status(servers, run_id) == "succeeded"


async def test_a_detached_run_keeps_a_title_that_starts_with_a_dash(servers: Servers) -> None:
    # The background process was given `--title -Redux-`, which its parser read as an unknown option:
    # the command said "the background run did not start" where the same command without --detach ran.
    _slow(servers, tokens_per_second=4000)
    detach = _command(servers, *PERSONAS, "--title=-Redux-", "--detach")
    out, err = await asyncio.to_thread(detach.communicate, timeout=60)
    assert detach.returncode == 0, err
    run_id = out.strip()
    attach = subprocess.Popen(
        [sys.executable, "manage.py", "generate_screenplay", "--attach", run_id],
        cwd=ROOT,
        env=servers.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _, err = await asyncio.to_thread(attach.communicate, timeout=60)
    assert attach.returncode == 0, err
    assert "('-Redux-'), version 1" in err


async def test_a_detached_run_refused_exits_as_the_same_refusal_without_detach_does(servers: Servers) -> None:
    # A story that is not the writer's is refused before admission, in the background process: the
    # command exited 1, where without --detach it exits 2 (a bad request; protocol.md), and a retryable
    # refusal lost its "(you can retry)".
    for args in ([], ["--detach"]):
        command = _command(servers, *PERSONAS, "--story", "999999", *args)
        out, err = await asyncio.to_thread(command.communicate, timeout=60)
        assert command.returncode == 2, (args, err)
        assert "forbidden: that story does not exist or is not yours" in err
        assert out == ""
