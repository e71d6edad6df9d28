"""Persona contexts: the old path (one request per persona, no cache) against the batch endpoint.

`make bench` runs it (or `python -m bench.personas_contexts`). It needs PostgreSQL and Redis on
127.0.0.1 (started when down, as .ci/run does) and uses the `story_bench` database. Two daphne
servers run the project: one with Django's cache turned off (bench/settings_nocache.py) for the old
path, as the old app had no cache, and one with the Redis cache for the batch endpoint. For N = 1, 5,
20 and 50 personas, each repetition times three things: N sequential GETs of
/api/personas/{name}/context/ (old), one GET of /api/personas/contexts/?names=... after deleting those
personas' cache entries (batch, cold), and the same GET with the entries in the cache (batch, warm).
Their order rotates through all six permutations (42 repetitions: each order 7 times), because on
shared cores a request that follows another server's burst or an idle gap is slower, and a fixed order
would always charge that to the same one. The table gives medians and the ratio old / batch; it is
printed and written to bench/results/personas.md.
"""

from __future__ import annotations

import itertools
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime

import httpx

from bench.harness import ROOT, cpu_model, daphne_running, personas_ensure, postgres_ensure, redis_ensure

SIZES = (1, 5, 20, 50)
REPEATS = int(os.environ.get("BENCH_REPEATS", "42"))
DATABASE_URL = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/story_bench")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/1")
_CHILD = "BENCH_PERSONAS_CHILD"
RESULTS = ROOT / "bench" / "results" / "personas.md"
SERVER_ENV = {
    "DATABASE_URL": DATABASE_URL,
    "REDIS_URL": REDIS_URL,
    "CACHE_KEY_PREFIX": "bench-personas",
    "DJANGO_DEBUG": "0",
    "DJANGO_SECURE_SSL": "0",
    "DJANGO_SECRET_KEY": "bench-only-secret-key-not-used-anywhere-else",
    "DJANGO_LOG_LEVEL": "WARNING",
}


def main() -> None:
    """Run the benchmark in a child process, so its Django settings do not leak into other benches."""
    subprocess.run(
        [sys.executable, "-m", "bench.personas_contexts"],
        cwd=ROOT,
        env={**os.environ, **SERVER_ENV, "DJANGO_SETTINGS_MODULE": "storyproject.settings", _CHILD: "1"},
        check=True,
    )


def _run() -> None:
    postgres_ensure(DATABASE_URL)
    redis_ensure(REDIS_URL)
    import django

    django.setup()
    token, names = _data_prepare()
    headers = {"Authorization": f"Token {token}"}
    with (
        daphne_running(env={**SERVER_ENV, "DJANGO_SETTINGS_MODULE": "bench.settings_nocache"}) as old_base,
        daphne_running(env={**SERVER_ENV, "DJANGO_SETTINGS_MODULE": "storyproject.settings"}) as new_base,
        httpx.Client(base_url=old_base, headers=headers, timeout=30) as old,
        httpx.Client(base_url=new_base, headers=headers, timeout=30) as new,
    ):
        _warm_up(old, new, names)
        rows = [_measure(old, new, names[:size]) for size in SIZES]
    report = _report(rows)
    print(report)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(report, encoding="utf-8")
    print(f"Written to {RESULTS.relative_to(ROOT)}")


def _data_prepare() -> tuple[str, list[str]]:
    """Migrate story_bench, and make the bench user, its token and 50 personas (idempotent)."""
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from rest_framework.authtoken.models import Token

    call_command("migrate", verbosity=0, interactive=False)
    user, _ = get_user_model().objects.get_or_create(username="bench-reader")
    token, _ = Token.objects.get_or_create(user=user)
    return token.key, personas_ensure(count=max(SIZES))


def _warm_up(old: httpx.Client, new: httpx.Client, names: list[str]) -> None:
    # First requests import code lazily and open pooled connections: keep them out of the figures.
    for _ in range(3):
        for name in names:
            old.get(f"/api/personas/{name}/context/").raise_for_status()
        new.get("/api/personas/contexts/", params={"names": ",".join(names)}).raise_for_status()


def _measure(old: httpx.Client, new: httpx.Client, names: list[str]) -> dict[str, float]:
    from django.conf import settings
    from django.core.cache import cache

    from personas import cache as context_cache

    query = {"names": ",".join(names)}
    keys = [context_cache.stamp_key(n) for n in names]
    keys += [context_cache.entry_key(n, settings.PERSONA_CONTEXT_TOKEN_BUDGET) for n in names]
    _check(new.get("/api/personas/contexts/", params=query), len(names))

    def old_path() -> None:
        for name in names:
            old.get(f"/api/personas/{name}/context/").raise_for_status()

    def batch() -> None:
        _check(new.get("/api/personas/contexts/", params=query), len(names))

    timings: dict[str, list[float]] = {"old": [], "cold": [], "warm": []}
    # The order rotates: on shared cores a request right after another server's burst, or after an
    # idle gap, is slower; in a fixed order (old, cold, warm) the cold read always paid for that.
    orders = list(itertools.permutations(timings))
    for repetition in range(REPEATS):
        for kind in orders[repetition % len(orders)]:
            if kind == "cold":
                cache.delete_many(keys)  # the same Redis the server uses: its next read is cold
            timings[kind].append(_timed(old_path if kind == "old" else batch))
    return {"n": len(names)} | {kind: statistics.median(values) * 1000 for kind, values in timings.items()}


def _timed(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def _check(response: httpx.Response, count: int) -> None:
    response.raise_for_status()
    if len(response.json()["contexts"]) != count:
        raise RuntimeError(f"the batch endpoint returned the wrong contexts: {response.text[:200]}")


def _report(rows: list[dict[str, float]]) -> str:
    lines = [
        "# Persona contexts: old path against the batch endpoint",
        "",
        f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {_machine()}",
        f"- command: `make bench` (`python -m bench.personas_contexts`), {REPEATS} repetitions per N, medians",
        "- old: N sequential GETs of /api/personas/{name}/context/, cache off (dummy cache), keep-alive",
        "- batch: one GET of /api/personas/contexts/?names=..., Redis cache; cold = that persona's "
        "cache entries deleted first; the three timed in rotating order (all six permutations)",
        "",
        "| N | old path (ms) | batch cold (ms) | batch warm (ms) | old / batch cold | old / batch warm |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['n']:.0f} | {row['old']:.1f} | {row['cold']:.1f} | {row['warm']:.1f} "
            f"| {row['old'] / row['cold']:.1f}x | {row['old'] / row['warm']:.1f}x |"
        )
    return "\n".join(lines) + "\n"


def _machine() -> str:
    cpu = cpu_model()
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        postgres = cursor.fetchone()[0]
    return (
        f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, Python {platform.python_version()}, "
        f"PostgreSQL {postgres}, Redis cache, daphne (one process per server), "
        f"load average {os.getloadavg()[0]:.1f} at the end (the machine is shared)"
    )


if __name__ == "__main__":
    # Run directly from a shell, the module sets up its child process like `make bench` does.
    if os.environ.get(_CHILD) == "1":
        _run()
    else:
        main()
