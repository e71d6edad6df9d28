"""What every benchmark shares: PostgreSQL, Redis and daphne started as .ci/run does, the machine's
description, and a daphne process's CPU time and peak memory read from /proc."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
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


def redis_reachable(url: str) -> str:
    """Start Redis as .ci/run does when it is down; return "" when it answers, else why it does not."""
    try:
        redis_ensure(url)
    except (OSError, subprocess.SubprocessError, RuntimeError) as error:
        return f"Redis at {url} is not reachable and could not be started ({error})"
    return ""


@contextmanager
def daphne_running(*, env: Mapping[str, str]) -> Iterator[str]:
    """A daphne server of the project on a free loopback port; yields its base URL, stops it after."""
    with daphne_process(env=env) as (base, _pid):
        yield base


@contextmanager
def daphne_process(*, env: Mapping[str, str], root: Path = ROOT) -> Iterator[tuple[str, int]]:
    """As daphne_running, yielding (base URL, process id) for the benchmarks that watch the process.

    ``root`` is the checkout daphne serves (another commit's git worktree, for a before/after figure).
    """
    port = free_port()
    command = ["-m", "daphne", "-v", "0", "-b", "127.0.0.1", "-p", str(port), "storyproject.asgi:application"]
    process = subprocess.Popen([sys.executable, *command], cwd=root, env={**os.environ, **env})
    base = f"http://127.0.0.1:{port}"
    try:
        _wait(lambda: _answers(base), timeout=60)
        yield base, process.pid
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass(frozen=True)
class ProcessUsage:
    """CPU seconds (user + system) and peak resident memory (VmHWM) of a process, from /proc."""

    cpu_seconds: float
    peak_rss_mb: float


def process_usage(pid: int) -> ProcessUsage:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    # utime and stime are fields 14 and 15 of stat; after the ")" the state is field 3.
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    peak_kb = next(
        int(line.split()[1])
        for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if line.startswith("VmHWM:")
    )
    return ProcessUsage(cpu_seconds=cpu, peak_rss_mb=peak_kb / 1024)


def cpu_model() -> str:
    return next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown CPU",
    )


def machine_describe() -> list[str]:
    """The machine and the versions, as Markdown list items; Django must be set up (PostgreSQL asked)."""
    import daphne
    import django
    from django.db import connection

    cpu = cpu_model()
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        postgres = cursor.fetchone()[0]
    redis = subprocess.run(["redis-server", "--version"], capture_output=True, text=True, check=False)
    redis_version = next((part[2:] for part in redis.stdout.split() if part.startswith("v=")), "unknown")
    return [
        f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}",
        f"- versions: Python {platform.python_version()}, Django {django.get_version()}, "
        f"daphne {daphne.__version__}, PostgreSQL {postgres.split()[0]}, Redis {redis_version}",
    ]


def _answers(base: str) -> bool:
    try:
        return httpx.get(base + "/api/personas/", timeout=1).status_code in (401, 403)
    except httpx.HTTPError:
        return False


def _wait(ready: Callable[[], object], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.2)
    raise RuntimeError("a benchmark service did not start in time")


def personas_ensure(*, count: int) -> list[str]:
    """``count`` active personas named bench-NN-<demo name>, from the demo personas (idempotent).

    Django must be set up and migrated.
    """
    import json

    from personas.models import PersonaConfig

    demo = json.loads((ROOT / "personas" / "demo" / "personas.json").read_text("utf-8"))
    names = []
    for index in range(count):
        entry = demo[index % len(demo)]
        name = f"bench-{index:02d}-{entry['name']}"
        PersonaConfig.objects.update_or_create(
            name=name,
            defaults={
                "display_name": f"{entry['display_name']} {index}",
                "config_data": entry["config_data"],
                "is_active": True,
            },
        )
        names.append(name)
    return names
