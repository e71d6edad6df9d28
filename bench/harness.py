"""Local PostgreSQL, Redis and daphne for benchmarks: start what is down, as .ci/run does."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import httpx

ROOT = Path(__file__).resolve().parent.parent


def postgres_ensure(url: str) -> None:
    """Make sure the server of ``url`` answers and its database exists (created when missing)."""
    parsed = urlparse(url)
    host, port = parsed.hostname or "127.0.0.1", str(parsed.port or 5432)
    if subprocess.run(["pg_isready", "-q", "-h", host, "-p", port], check=False).returncode != 0:
        cluster = sorted(os.listdir("/etc/postgresql"))[-1]
        subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", cluster, "main", "start"], check=True)
        _wait(
            lambda: subprocess.run(["pg_isready", "-q", "-h", host, "-p", port], check=False).returncode == 0
        )
    name, user = parsed.path.lstrip("/"), parsed.username or "postgres"
    psql = ["psql", "-h", host, "-p", port, "-U", user, "-tc"]
    exists = subprocess.run(
        [*psql, f"SELECT 1 FROM pg_database WHERE datname = '{name}'"],
        capture_output=True,
        text=True,
        check=True,
    )
    if "1" not in exists.stdout:
        subprocess.run([*psql, f'CREATE DATABASE "{name}"'], check=True, capture_output=True)


def redis_ensure(url: str) -> None:
    parsed = urlparse(url)
    host, port = parsed.hostname or "127.0.0.1", str(parsed.port or 6379)
    ping = ["redis-cli", "-h", host, "-p", port, "ping"]
    if subprocess.run(ping, capture_output=True, check=False).returncode == 0:
        return
    os.makedirs("/var/lib/redis", exist_ok=True)
    subprocess.run(
        [
            "redis-server",
            "--daemonize",
            "yes",
            "--bind",
            host,
            "--port",
            port,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            "/var/lib/redis",
        ],
        check=True,
    )
    _wait(lambda: subprocess.run(ping, capture_output=True, check=False).returncode == 0)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def daphne_running(*, env: Mapping[str, str]) -> Iterator[str]:
    """A daphne server of the project on a free loopback port; yields its base URL, stops it after."""
    port = free_port()
    command = ["-m", "daphne", "-v", "0", "-b", "127.0.0.1", "-p", str(port), "storyproject.asgi:application"]
    process = subprocess.Popen([sys.executable, *command], cwd=ROOT, env={**os.environ, **env})
    base = f"http://127.0.0.1:{port}"
    try:
        _wait(lambda: _answers(base), timeout=60)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _answers(base: str) -> bool:
    try:
        return httpx.get(base + "/api/personas/", timeout=1).status_code in (401, 403)
    except httpx.HTTPError:
        return False


def _wait(ready: object, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise RuntimeError("a benchmark service did not start in time")
