"""``make serve`` as an operator meets it: the real supervisor and daphne processes, started as subprocesses.

Each server runs on its own SQLite file and the offline model, whatever database the suite runs on: it
is a separate program, and these tests are about processes, sockets and signals.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Served:
    process: subprocess.Popen[str]
    base: str
    env: dict[str, str]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _server_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATABASE_URL", "ANTHROPIC_API_KEY", "STORY_MODEL", "STORY_BACKEND", "DJANGO_DEBUG")
    }
    env.update(
        DJANGO_SECRET_KEY=secrets.token_urlsafe(50),
        DATABASE_URL=f"sqlite:///{tmp_path / 'serve.sqlite3'}",
        PYTHONUNBUFFERED="1",
    )
    return {**env, **extra}


def _children(pid: int) -> list[int]:
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _healthz(base: str) -> int:
    # A fresh connection each time: the kernel hands it to one process.
    with httpx.Client(timeout=5) as client:
        return client.get(base + "/healthz").status_code


def _wait_for(ready: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if ready():  # type: ignore[operator]
                return
        except (httpx.HTTPError, OSError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"{what} within {timeout} s")


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[object]:
    started: list[Served] = []

    def start(processes: int, **extra: str) -> Served:
        port = _free_port()
        env = _server_env(tmp_path, SERVE_PROCESSES=str(processes), **extra)
        command = [sys.executable, "-m", "storyproject.serve", "--port", str(port), "-v", "0"]
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        served = Served(process=process, base=f"http://127.0.0.1:{port}", env=env)
        started.append(served)
        _wait_for(lambda: len(_children(process.pid)) == processes, 120, "the processes started")
        _wait_for(lambda: _healthz(served.base) == 200, 120, "/healthz answered")
        return served

    yield start
    for served in started:
        if served.process.poll() is None:
            served.process.terminate()  # a graceful stop, which takes its processes with it
            try:
                served.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                served.process.kill()  # its processes get a SIGTERM from the kernel (serve_worker)
                served.process.wait()


def test_serve_starts_the_configured_processes_that_each_answer_and_stops_cleanly_on_sigterm(
    serve: object,
) -> None:
    served: Served = serve(2)  # type: ignore[operator]
    workers = _children(served.process.pid)
    assert len(set(workers)) == 2
    for answering in workers:
        # Freeze every other process: only this one can accept the connection.
        others = [pid for pid in workers if pid != answering]
        for pid in others:
            os.kill(pid, signal.SIGSTOP)
        try:
            assert _healthz(served.base) == 200
        finally:
            for pid in others:
                os.kill(pid, signal.SIGCONT)

    # Static files were collected: pages name them by their hashed names, and those are served.
    https = {"X-Forwarded-Proto": "https"}  # as the reverse proxy says; DJANGO_SECURE_SSL is on
    page = httpx.get(served.base + "/accounts/login/", headers=https, timeout=10)
    assert page.status_code == 200
    stylesheet = re.search(r"/static/css/app\.[0-9a-f]{12}\.css", page.text)
    assert stylesheet is not None, page.text[:500]
    assert httpx.get(served.base + stylesheet.group(0), headers=https, timeout=10).status_code == 200

    served.process.send_signal(signal.SIGTERM)
    output, _ = served.process.communicate(timeout=60)
    assert served.process.returncode == 0, output
    assert all(not Path(f"/proc/{pid}").exists() for pid in workers)
    with pytest.raises(httpx.ConnectError):
        _healthz(served.base)


def test_serve_restarts_a_process_that_dies(serve: object) -> None:
    served: Served = serve(1)  # type: ignore[operator]
    [first] = _children(served.process.pid)
    os.kill(first, signal.SIGKILL)
    _wait_for(lambda: _children(served.process.pid) not in ([], [first]), 60, "a new process started")
    _wait_for(lambda: _healthz(served.base) == 200, 120, "the new process answered")


def test_the_processes_stop_when_the_supervisor_is_killed(serve: object) -> None:
    served: Served = serve(2)  # type: ignore[operator]
    workers = _children(served.process.pid)
    served.process.kill()
    served.process.wait()
    # Each gets a SIGTERM from the kernel (prctl PR_SET_PDEATHSIG), drains nothing, and exits.
    _wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in workers), 60, "the processes stopped")


@pytest.mark.parametrize(
    ("overrides", "said"),
    [
        ({"DJANGO_SECRET_KEY": None}, "refusing to start: DJANGO_SECRET_KEY is required"),
        # `check --deploy` warns about a short key; make serve takes a warning as a refusal.
        ({"DJANGO_SECRET_KEY": "short"}, "security.W009"),
        ({"DJANGO_DEBUG": "1"}, "refusing to start: DJANGO_DEBUG is on"),
        ({"SERVE_PROCESSES": "many"}, "refusing to start: SERVE_PROCESSES must be an integer"),
    ],
)
def test_serve_refuses_an_unsafe_configuration_with_a_clear_message(
    tmp_path: Path, overrides: dict[str, str | None], said: str
) -> None:
    env = _server_env(tmp_path)
    for name, value in overrides.items():
        if value is None:
            del env[name]
        else:
            env[name] = value
    result = subprocess.run(
        [sys.executable, "-m", "storyproject.serve", "--port", str(_free_port())],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert said in result.stderr
    assert "Traceback" not in result.stderr


def _writer_token(served: Served) -> str:
    script = (
        "from django.contrib.auth import get_user_model; from rest_framework.authtoken.models import Token; "
        "print(Token.objects.get_or_create(user=get_user_model().objects.get(username='writer'))[0].key)"
    )
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "load_demo"], cwd=ROOT, env=served.env, check=True, capture_output=True)
    result = subprocess.run(
        [*manage, "shell", "-c", script], cwd=ROOT, env=served.env, check=True, capture_output=True, text=True
    )
    return result.stdout.strip().splitlines()[-1]


async def _generate_through_a_stop(served: Served, token: str) -> list[str]:
    """Start a generation, SIGTERM the server after its first delta; the event types the client saw."""
    url = served.base.replace("http://", "ws://") + "/ws/generate/"
    headers = {"Authorization": f"Token {token}"}
    seen: list[str] = []
    async with connect(url, origin=served.base, additional_headers=headers, open_timeout=60) as ws:  # type: ignore[arg-type]
        message = {"type": "generate", "plot": "A chef and a detective share a kitchen.", "mode": "single"}
        await ws.send(json.dumps({**message, "personas": ["noir-detective", "grandmother-chef"]}))
        async with asyncio.timeout(120):
            async for raw in ws:
                kind = json.loads(raw)["type"]
                seen.append(kind)
                if kind == "delta" and seen.count("delta") == 1:
                    served.process.send_signal(signal.SIGTERM)
                    await asyncio.sleep(1)
                    # The port no longer takes connections while the generation goes on.
                    with pytest.raises(OSError):
                        socket.create_connection(("127.0.0.1", int(served.base.rsplit(":", 1)[1])), timeout=2)
                if kind in ("done", "error", "cancelled"):
                    break
    return seen


def test_serve_lets_a_running_generation_finish_after_sigterm(serve: object) -> None:
    # About 10 s of generation at this pace: long enough to stop the server in the middle of it.
    served: Served = serve(1, STORY_OFFLINE_TOKENS_PER_SECOND="60", SERVE_GRACEFUL_SECONDS="90")  # type: ignore[operator]
    token = _writer_token(served)
    seen = asyncio.run(_generate_through_a_stop(served, token))
    assert seen[-1] == "done", seen[-5:]
    assert "scene" in seen
    output, _ = served.process.communicate(timeout=60)
    assert served.process.returncode == 0, output
