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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as connect_sync
from websockets.typing import Origin

from storyproject import serve as serve_module

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Served:
    process: subprocess.Popen[str]
    base: str
    env: dict[str, str]
    # Set when it serves on a Unix socket: the path clients connect to.
    unix_socket: str = ""


class Serve(Protocol):
    """The ``serve`` fixture: starts ``storyproject.serve`` with ``processes`` and settings ``extra``."""

    def __call__(self, processes: int, host: str = "127.0.0.1", **extra: str) -> Served: ...


def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


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


def _healthz(base: str, unix_socket: str = "") -> int:
    # A fresh connection each time: the kernel hands it to one process.
    transport = httpx.HTTPTransport(uds=unix_socket) if unix_socket else None
    with httpx.Client(timeout=5, transport=transport) as client:
        return client.get(base + "/healthz").status_code


def _connection_refused(base: str) -> bool:
    """Whether a new connection to ``base`` is refused (nothing listens there any more)."""
    try:
        _healthz(base)
    except httpx.ConnectError:
        return True
    return False


def _wait_for(ready: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if ready():
                return
        except (httpx.HTTPError, OSError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"{what} within {timeout} s")


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Serve]:
    started: list[Served] = []

    def start(processes: int, host: str = "127.0.0.1", **extra: str) -> Served:
        env = _server_env(tmp_path, SERVE_PROCESSES=str(processes), **extra)
        if host.startswith("unix:"):
            port, base, unix_socket = 0, "http://localhost", host.removeprefix("unix:")
        else:
            port, unix_socket = _free_port(host), ""
            # A wildcard address is reached over the loopback of its family.
            loopback = {"::": "::1", "0.0.0.0": "127.0.0.1"}.get(host, host)
            base = f"http://[{loopback}]:{port}" if ":" in loopback else f"http://{loopback}:{port}"
        command = [sys.executable, "-m", "storyproject.serve", "--host", host, "--port", str(port), "-v", "0"]
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        served = Served(process=process, base=base, env=env, unix_socket=unix_socket)
        started.append(served)
        _wait_for(lambda: len(_children(process.pid)) == processes, 120, "the processes started")
        _wait_for(lambda: _healthz(served.base, unix_socket) == 200, 120, "/healthz answered")
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
    serve: Serve,
) -> None:
    served = serve(2)
    workers = _children(served.process.pid)
    _each_process_answers(served)

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
    # Two processes share their limits and runs through Redis only: said at start when it is missing.
    unshared = "2 processes without REDIS_URL: each counts login attempts"
    assert (unshared in output) == (not served.env.get("REDIS_URL")), output
    with pytest.raises(httpx.ConnectError):
        _healthz(served.base)


def _each_process_answers(served: Served) -> None:
    """Freeze all processes but one, in turn: each answers /healthz on the served address alone."""
    workers = _children(served.process.pid)
    assert len(set(workers)) == 2
    for answering in workers:
        others = [pid for pid in workers if pid != answering]
        for pid in others:
            os.kill(pid, signal.SIGSTOP)
        try:
            assert _healthz(served.base, served.unix_socket) == 200
        finally:
            for pid in others:
                os.kill(pid, signal.SIGCONT)


def _stopped_cleanly(served: Served) -> None:
    served.process.send_signal(signal.SIGTERM)
    output, _ = served.process.communicate(timeout=60)
    assert served.process.returncode == 0, output


@pytest.mark.skipif(not _ipv6_loopback(), reason="this machine has no IPv6 loopback (::1) to serve on")
def test_serve_on_ipv6_answers_on_every_process_over_ipv6_loopback_and_ipv4_where_dual_stack(
    serve: Serve,
) -> None:
    served = serve(2, host="::")
    port = served.base.rsplit(":", 1)[1]
    assert served.base == f"http://[::1]:{port}"
    _each_process_answers(served)
    if socket.has_dualstack_ipv6():  # "::" takes IPv4 connections too (Linux: IPV6_V6ONLY off)
        assert _healthz(f"http://127.0.0.1:{port}") == 200
    _stopped_cleanly(served)


def test_serve_on_a_unix_socket_answers_on_every_process_and_guards_the_path(
    serve: Serve, tmp_path: Path
) -> None:
    path = tmp_path / "story.sock"
    with socket.socket(socket.AF_UNIX) as stale:
        stale.bind(str(path))  # left by a server that was killed: bound, nobody listening; replaced
    served = serve(2, host=f"unix:{path}")
    assert path.is_socket()
    # Whoever runs the server and its group (a reverse proxy added to it) may connect; nobody else.
    assert path.stat().st_mode & 0o777 == 0o660
    _each_process_answers(served)
    env = _server_env(tmp_path)
    assert f"refusing to start: {path} is in use by a running server" in _serve_refusal(env, f"unix:{path}")
    _stopped_cleanly(served)
    assert not path.exists()

    path.write_text("not a socket")
    refused = _serve_refusal(env, f"unix:{path}")
    assert f"refusing to start: {path} exists and is not a socket; refusing to replace it" in refused
    assert path.read_text() == "not a socket"


def _serve_refusal(env: dict[str, str], host: str) -> str:
    """Start the server on ``host``, which it must refuse (exit 2, no traceback); what it said."""
    result = subprocess.run(
        [sys.executable, "-m", "storyproject.serve", "--host", host, "--port", str(_free_port())],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    return result.stderr


@pytest.mark.parametrize(
    ("host", "said"),
    [
        (
            "localhost",
            "HOST must be an IPv4 address (127.0.0.1, 0.0.0.0), an IPv6 address (::1, ::) or unix:",
        ),
        ("unix:relative.sock", "HOST unix: needs an absolute path"),
        ("unix:/no/such/directory/story.sock", "HOST unix: the directory /no/such/directory does not exist"),
    ],
)
def test_serve_refuses_a_bind_address_it_cannot_use_with_a_clear_message(
    tmp_path: Path, host: str, said: str
) -> None:
    refused = _serve_refusal(_server_env(tmp_path), host)
    assert f"serve: refusing to start: {said}" in refused


def _serve_once(env: dict[str, str], port: int) -> subprocess.CompletedProcess[str]:
    """``make serve`` on ``port``, expected to refuse: what it printed and its exit status."""
    command = [sys.executable, "-m", "storyproject.serve", "--port", str(port)]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_serve_says_a_taken_port_before_it_prepares_anything(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = _serve_once(_server_env(tmp_path), port)
    assert result.returncode == 2
    assert f"serve: cannot listen on 127.0.0.1:{port}" in result.stderr
    # Nothing was prepared: no migration ran, no database file was made.
    assert "Applying" not in result.stdout + result.stderr
    assert not list(tmp_path.glob("*.sqlite3"))


def test_serve_refuses_metrics_on_several_processes_without_the_multiprocess_directory(
    tmp_path: Path,
) -> None:
    # Was: it served, and each scrape reported the counters of whichever process answered it alone.
    env = _server_env(tmp_path, METRICS_TOKEN=secrets.token_hex(16), SERVE_PROCESSES="2")
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    result = _serve_once(env, _free_port())
    assert result.returncode == 2
    assert "serve: refusing to start: /metrics is on (METRICS_TOKEN or METRICS_ALLOWED_NETWORKS) with 2" in (
        result.stderr
    )
    assert "Applying" not in result.stdout + result.stderr  # refused before anything was prepared


@pytest.mark.parametrize("port", [99999, -1])
def test_serve_refuses_a_port_out_of_range_with_a_clear_message(tmp_path: Path, port: int) -> None:
    # `python -m storyproject.serve --port 99999` (the systemd unit's form) was an OverflowError traceback
    # from bind(): only the PORT variable was range-checked.
    result = _serve_once(_server_env(tmp_path), port)
    assert result.returncode == 2
    assert f"serve: refusing to start: PORT (--port) must be from 0 to 65535; got {port}" in result.stderr
    assert "Traceback" not in result.stderr


def test_ctrl_c_during_the_preparation_stops_it_without_a_traceback_and_starts_no_process(
    tmp_path: Path,
) -> None:
    # Was: Ctrl-C while the checks, migrations or recover_runs ran (minutes, with runs to resume) printed
    # two KeyboardInterrupt tracebacks, the supervisor's and the preparing child's; a SIGTERM (a systemd
    # stop) killed the supervisor at once and left the preparation running on, orphaned.
    command = [sys.executable, "-m", "storyproject.serve", "--port", str(_free_port())]
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=_server_env(tmp_path, SERVE_PROCESSES="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # A terminal's foreground job: its own process group, Ctrl-C's SIGINT not ignored.
        process_group=0,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    _wait_for(lambda: _children(process.pid), 60, "the preparation started")
    [preparing] = _children(process.pid)
    os.killpg(process.pid, signal.SIGINT)  # Ctrl-C: to the terminal's foreground process group
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output
    assert "stopped during the preparation; no server process was started" in output
    assert "Traceback" not in output
    assert not Path(f"/proc/{preparing}").exists()


def test_serve_restarts_a_process_that_dies(serve: Serve) -> None:
    served = serve(1)
    [first] = _children(served.process.pid)
    os.kill(first, signal.SIGKILL)
    _wait_for(lambda: _children(served.process.pid) not in ([], [first]), 60, "a new process started")
    _wait_for(lambda: _healthz(served.base) == 200, 120, "the new process answered")


def test_the_processes_stop_when_the_supervisor_is_killed(serve: Serve) -> None:
    served = serve(2)
    workers = _children(served.process.pid)
    served.process.kill()
    served.process.wait()
    # Each gets a SIGTERM from the kernel (prctl PR_SET_PDEATHSIG), drains nothing, and exits.
    _wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in workers), 60, "the processes stopped")


def test_a_hang_up_stops_the_server_gracefully(serve: Serve) -> None:
    # Was: SIGHUP (the terminal of `make serve` closed) killed the supervisor at once, exit status 129
    # and nothing logged; its processes were left to notice it by themselves.
    # Started with the hang-up's default disposition even when the tests run under nohup (an ignored
    # one is inherited, and the server rightly keeps ignoring it then).
    inherited = signal.signal(signal.SIGHUP, signal.SIG_DFL)
    try:
        served = serve(2)
    finally:
        signal.signal(signal.SIGHUP, inherited)
    workers = _children(served.process.pid)
    served.process.send_signal(signal.SIGHUP)
    output, _ = served.process.communicate(timeout=90)
    assert served.process.returncode == 0, output
    assert "stopping 2 server processes" in output
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)


@pytest.mark.parametrize(
    ("overrides", "said"),
    [
        ({"DJANGO_SECRET_KEY": None}, "refusing to start: DJANGO_SECRET_KEY is required"),
        # `check --deploy` warns about a short key; make serve takes a warning as a refusal.
        ({"DJANGO_SECRET_KEY": "short"}, "security.W009"),
        ({"DJANGO_DEBUG": "1"}, "refusing to start: DJANGO_DEBUG is on"),
        ({"SERVE_PROCESSES": "many"}, "refusing to start: SERVE_PROCESSES must be an integer"),
        # A database that is not there: one line, not the pool's traceback.
        (
            {"DATABASE_URL": "postgres://postgres@127.0.0.1:1/story_nowhere?connect_timeout=2"},
            "refusing to start: the database (DATABASE_URL) failed: ",
        ),
        ({"REDIS_URL": "http://127.0.0.1:6379/0"}, "REDIS_URL must start with redis://"),
        # Was: preparation passed (migrations applied), then each process died on the import five
        # times with a traceback and the server gave up with exit 1.
        (
            {"STORY_BACKEND": "nope.Backend"},
            "refusing to start: STORY_BACKEND 'nope.Backend' cannot be imported",
        ),
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
    result = _serve_once(env, _free_port())
    assert result.returncode == 2
    assert said in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_says_why_it_cannot_use_the_database_at_once(tmp_path: Path) -> None:
    # Was: the migrations waited for psycopg's pool, which logged a warning at each of its tries for 10 s,
    # then refused with "couldn't get a connection after 10.00 sec", which did not say why.
    env = _server_env(tmp_path, DATABASE_URL="postgres://postgres@127.0.0.1:1/story_nowhere")
    result = _serve_once(env, _free_port())
    assert result.returncode == 2
    refusal = "serve: refusing to start: the database (DATABASE_URL) failed: connection failed: "
    assert refusal in result.stderr
    assert "port 1 failed: Connection refused" in result.stderr
    assert "psycopg.pool" not in result.stderr
    assert "Applying" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("options", "said"),
    [
        (["--proxy-headerz"], "daphne option: unrecognized arguments: --proxy-headerz"),
        (["-v", "5"], "daphne option: -v/--verbosity must be 0, 1, 2 or 3; got 5"),
        (["-p", "9000"], "daphne option: -p/--port is not for make serve: give --host and --port"),
        # Was: "unrecognized arguments: storyproject.asgi:application", naming what make serve adds.
        (
            ["app.extra"],
            "daphne option: 'app.extra' is not an option; make serve serves storyproject.asgi:application itself",
        ),
    ],
)
def test_serve_refuses_a_daphne_option_its_processes_would_refuse_before_preparing(
    tmp_path: Path, options: list[str], said: str
) -> None:
    # Was: the migrations were applied, then each process printed daphne's usage (or a KeyError for -v 5)
    # and exited, was started again five times, and the server gave up with exit status 1.
    command = [sys.executable, "-m", "storyproject.serve", "--port", str(_free_port()), *options]
    env = _server_env(tmp_path, SERVE_PROCESSES="1")
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert f"serve: refusing to start: {said}" in result.stderr
    assert "usage:" not in result.stderr and "Traceback" not in result.stderr
    assert "Applying" not in result.stdout + result.stderr


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


async def _refused_soon(port: int) -> None:
    """Return once a connection to ``port`` is refused; fail if it still takes them 30 s after.

    Waited for, not assumed after a second: the supervisor passes the signal on from a loop that wakes
    every 0.5 s, and under load it and the process may wait longer for a core (the test then failed).
    """
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        except OSError:
            return
        assert time.monotonic() < deadline, "the port still takes connections 30 s after the stop"
        await asyncio.sleep(0.2)


async def _generate_through_a_stop(served: Served, token: str) -> tuple[list[str], tuple[int, str] | None]:
    """Start a generation, SIGTERM the server after its first delta; the event types the client saw,
    and the code and reason of the server's close frame that followed (None: no close frame)."""
    url = served.base.replace("http://", "ws://") + "/ws/generate/"
    headers = {"Authorization": f"Token {token}"}
    seen: list[str] = []
    async with connect(url, origin=Origin(served.base), additional_headers=headers, open_timeout=60) as ws:
        message = {"type": "generate", "plot": "A chef and a detective share a kitchen.", "mode": "single"}
        await ws.send(json.dumps({**message, "personas": ["noir-detective", "grandmother-chef"]}))
        async with asyncio.timeout(120):
            async for raw in ws:
                kind = json.loads(raw)["type"]
                seen.append(kind)
                if kind == "delta" and seen.count("delta") == 1:
                    served.process.send_signal(signal.SIGTERM)
                    # The port no longer takes connections while the generation goes on.
                    await _refused_soon(int(served.base.rsplit(":", 1)[1]))
                if kind in ("done", "error", "cancelled"):
                    break
            # The socket stays open after the run; the process then stops, and closes it.
            try:
                seen.append(json.loads(await ws.recv())["type"])
            except ConnectionClosed as close:
                return seen, (close.rcvd.code, close.rcvd.reason) if close.rcvd else None
    return seen, None


def test_serve_lets_a_running_generation_finish_after_sigterm(serve: Serve) -> None:
    # About 10 s of generation at this pace: long enough to stop the server in the middle of it.
    served = serve(1, STORY_OFFLINE_TOKENS_PER_SECOND="60", SERVE_GRACEFUL_SECONDS="90")
    token = _writer_token(served)
    seen, closed = asyncio.run(_generate_through_a_stop(served, token))
    assert seen[-1] == "done", seen[-5:]
    assert "scene" in seen
    # Closed with a code that says why (was: dropped when daphne stopped, 1006, no close frame).
    assert closed == (4503, "server_stopping")
    output, _ = served.process.communicate(timeout=60)
    assert served.process.returncode == 0, output


def test_a_frozen_process_shows_in_the_loop_lag_that_metrics_sum_over_the_processes(
    serve: Serve, tmp_path: Path
) -> None:
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    token = secrets.token_urlsafe(24)
    served = serve(2, METRICS_TOKEN=token, PROMETHEUS_MULTIPROC_DIR=str(metrics_dir))
    _each_process_answers(served)  # each has served a request, which starts its loop's watcher
    time.sleep(1.5)
    before = _loop_lag_counts(served, token)
    stalled = _children(served.process.pid)[0]
    os.kill(stalled, signal.SIGSTOP)  # a process whose loop cannot run, as a saturated one
    time.sleep(1.5)
    os.kill(stalled, signal.SIGCONT)
    time.sleep(1.5)
    after = _loop_lag_counts(served, token)
    assert after[0] - before[0] >= 6  # both processes measure, twice a second, and any scrape sums them
    assert after[1] - before[1] >= 1  # the frozen one's timer, over a second late
    _stopped_cleanly(served)


def _loop_lag_counts(served: Served, token: str) -> tuple[float, float]:
    """All observations of the loop lag histogram, and those over a second."""
    # Over HTTPS as the reverse proxy says (DJANGO_SECURE_SSL is on).
    headers = {"Authorization": f"Bearer {token}", "X-Forwarded-Proto": "https"}
    response = httpx.get(served.base + "/metrics", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    samples = {
        (sample.name, sample.labels.get("le")): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }
    total = samples[("story_event_loop_lag_seconds_count", None)]
    return total, total - samples[("story_event_loop_lag_seconds_bucket", "1.0")]


def test_a_stopping_process_takes_no_new_request_on_a_kept_alive_connection(serve: Serve) -> None:
    # Was: only the listening socket was closed; a kept-alive connection (nginx's upstream `keepalive`)
    # went on bringing requests, and new generations, to the draining process for its whole grace; so
    # did an open WebSocket.
    served = serve(1, STORY_OFFLINE_TOKENS_PER_SECOND="60", SERVE_GRACEFUL_SECONDS="90")
    # X-Forwarded-Proto: as the reverse proxy says; DJANGO_SECURE_SSL is on.
    headers = {"Authorization": f"Token {_writer_token(served)}", "X-Forwarded-Proto": "https"}
    body = {
        "plot": "A chef and a detective share a kitchen.",
        "personas": ["noir-detective"],
        "mode": "single",
    }
    with httpx.Client(base_url=served.base, headers=headers, timeout=120) as client:
        started = client.post("/api/ai/generate-screenplay/", json={**body, "wait": False})
        assert started.status_code == 202, started.text
        idle = httpx.Client(base_url=served.base, timeout=10)
        assert idle.get("/healthz").status_code == 200
        # And a WebSocket open with nothing running on it (a client may send its next generate any time).
        ws_url = served.base.replace("http://", "ws://") + "/ws/generate/"
        idle_socket = connect_sync(ws_url, origin=Origin(served.base), additional_headers=headers)
        # When the stop comes, one connection follows the run (which keeps the process draining), the
        # other is idle, kept alive.
        with idle_socket, client.stream("GET", started.json()["events_url"]) as events:
            served.process.send_signal(signal.SIGTERM)
            # The stop has reached the process once a new connection is refused: it closes the
            # listening socket and ends its kept-alive connections in one step. Waited for, not assumed
            # after a second: the supervisor passes the signal on from a loop that wakes every 0.5 s,
            # and under load it and the process may wait longer for a core (the kept-alive request then
            # came first and was answered, and the test failed).
            _wait_for(lambda: _connection_refused(served.base), 30, "new connections refused after the stop")
            with pytest.raises(httpx.TransportError):
                idle.get("/healthz")
            # Closed with 4503 at once, so its next generate goes to another process.
            with pytest.raises(ConnectionClosed) as closed:
                idle_socket.recv(timeout=5)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4503
            text = "".join(events.iter_text())
        idle.close()
    assert '"type": "done"' in text, text[-500:]
    output, _ = served.process.communicate(timeout=60)
    assert served.process.returncode == 0, output


def test_the_documented_systemd_unit_keeps_to_systemd_syntax() -> None:
    # systemd takes a comment only on a line of its own: "KillMode=mixed  # ..." was read as the kill
    # mode "mixed  # ...", refused, and the unit fell back to SIGTERM for every process at once
    # (systemd.syntax(7): lines starting with "#" or ";" are comments; no comment after a value).
    text = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    unit = text.split("# /etc/systemd/system/screenplay-studio.service\n", 1)[1].split("```", 1)[0]
    settings = {}
    for line in unit.splitlines():
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        assert "#" not in value, line
        settings[key] = value
    assert settings["KillMode"] == "mixed"
    # SERVE_GRACEFUL_SECONDS' default and the supervisor's own margin for the hand-over and the exit.
    assert int(settings["TimeoutStopSec"]) > 300 + serve_module._EXIT_MARGIN_SECONDS
    # After= alone does not start network-online.target; a unit ordered after it must want it too
    # (systemd.special(7), network-online.target).
    assert "network-online.target" in settings["Wants"].split()
    assert settings["ExecStart"].split()[1:3] == ["-m", "storyproject.serve"]


def test_serve_says_at_start_what_several_processes_do_not_share_without_redis(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Was silent: two processes on the embedded defaults each allowed a writer the whole hourly
    # generation limit and an attacker the whole login lockout, and a reconnect landing on the other
    # process did not find its run.
    monkeypatch.delenv("REDIS_URL", raising=False)
    warning = serve_module.redis_unshared_warning(4)
    assert warning is not None
    assert warning.startswith(
        "4 processes without REDIS_URL: each counts login attempts, generations per hour"
    )
    assert "up to 4 times each limit" in warning
    assert serve_module.redis_unshared_warning(1) is None
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/0")
    assert serve_module.redis_unshared_warning(4) is None


@pytest.mark.parametrize(
    ("value", "level"), [("warning", "WARNING"), (" ERROR ", "ERROR"), ("", "INFO"), ("loud", "INFO")]
)
def test_the_supervisor_logs_at_the_level_the_processes_do(
    monkeypatch: pytest.MonkeyPatch, value: str, level: str
) -> None:
    # Was INFO whatever DJANGO_LOG_LEVEL said: the supervisor's lines (listening, a process restarted,
    # stopping) came through a level the operator had turned off for the processes.
    monkeypatch.setenv("DJANGO_LOG_LEVEL", value)
    assert serve_module.supervisor_log_level() == level
