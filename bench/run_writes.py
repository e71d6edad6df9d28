"""A running generation's own writes, from the thread pool and from the event loop: `python -m bench.run_writes`.

A streaming run's checkpoint (two scenes, as bench.steady's generations write) and lease renewal, each
sent ``WRITES`` times, one after another and then ``CONCURRENT`` runs at once, on PostgreSQL
(BENCH_DATABASE_URL, as bench.flow), through ``stories.services``' async writes, in one process:

- **thread pool**, the path before (``STORY_LOOP_DB_CONNECTIONS=0``): the ORM's UPDATE in a thread of
  the loop's pool (storyproject.db), Django's connection checked out and back in that thread;
- **event loop**: the same ORM-compiled UPDATE sent from the loop itself (storyproject.loop_db), the
  loop standing in for daphne's.

Per write: the process's CPU time (every thread: user + system, ``getrusage``) and wall time. CPU rather
than wall time is the figure that matters on a saturated server, whose one core is what limits it; a
quiet loop, as here, hides the cost of passing the GIL between a busy loop thread and the pool's
threads, which bench.steady shows. Writes bench/results/run_writes.md.
"""

from __future__ import annotations

import asyncio
import os
import resource
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bench.flow import DATABASE_URL, SERVER_ENV
from bench.harness import ROOT, machine_describe, postgres_ensure

RESULTS = ROOT / "bench" / "results" / "run_writes.md"
WRITES = int(os.environ.get("BENCH_RUN_WRITES", "2000"))
CONCURRENT = int(os.environ.get("BENCH_RUN_WRITES_CONCURRENT", "20"))
_CHILD = "BENCH_RUN_WRITES_CHILD"
PATHS = ("thread pool", "event loop")


def main() -> None:
    """Run in a child process (its own Django settings, on the bench's PostgreSQL)."""
    postgres_ensure(DATABASE_URL)
    env = {**os.environ, **SERVER_ENV, "DATABASE_URL": DATABASE_URL, _CHILD: "1"}
    env.pop("REDIS_URL", None)
    subprocess.run([sys.executable, "-m", "bench.run_writes"], cwd=ROOT, env=env, check=True)


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _measure(
    write: Callable[[int], Awaitable[Any]], runs: list[int], writes: int
) -> tuple[float, float]:
    """CPU ms and wall ms per write: ``writes`` writes spread over ``runs``, each run's one at a time."""
    per_run = writes // len(runs)

    async def one_run(run_id: int) -> None:
        for _ in range(per_run):
            await write(run_id)

    for run_id in runs:  # warm: connections made, statements' code paths loaded
        await write(run_id)
    cpu, wall = _cpu(), time.monotonic()
    await asyncio.gather(*(one_run(run_id) for run_id in runs))
    done = per_run * len(runs)
    return (_cpu() - cpu) * 1000 / done, (time.monotonic() - wall) * 1000 / done


def _run() -> None:
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from bench.screenplays import screenplay_build
    from stories.models import GenerationRun
    from stories.services import (
        RUN_LEASE_OWNER,
        generation_run_checkpoint_async,
        generation_run_lease_renew_async,
    )
    from storyproject import loop_db

    call_command("migrate", verbosity=0)
    user, _ = get_user_model().objects.get_or_create(username="bench-run-writes")
    GenerationRun.objects.filter(user=user).delete()
    runs = [
        GenerationRun.objects.create(
            user=user, status="streaming", model="m", max_tokens=4096, lease_owner=RUN_LEASE_OWNER
        ).pk
        for _ in range(CONCURRENT)
    ]
    content = screenplay_build(personas=["a", "b"], scenes=2, lines=2)
    work = {
        "header": {k: content[k] for k in ("title", "logline", "characters")},
        "scenes": content["scenes"],
    }

    async def checkpoint(run_id: int) -> Any:
        return await generation_run_checkpoint_async(
            run_id=run_id, lease_owner=RUN_LEASE_OWNER, checkpoint=work
        )

    async def renewal(run_id: int) -> Any:
        return await generation_run_lease_renew_async(run_id=run_id, lease_owner=RUN_LEASE_OWNER)

    def _every_loop_is_daphnes(loop: asyncio.AbstractEventLoop) -> bool:
        return True

    def _no_loop_is_daphnes(loop: asyncio.AbstractEventLoop) -> bool:
        return False

    async def measure_all() -> dict[tuple[str, str, int], tuple[float, float]]:
        figures: dict[tuple[str, str, int], tuple[float, float]] = {}
        connections = settings.STORY_LOOP_DB_CONNECTIONS or 16
        for path in PATHS:
            settings.STORY_LOOP_DB_CONNECTIONS = 0 if path == "thread pool" else connections
            loop_db.serving_loop = _every_loop_is_daphnes if path == "event loop" else _no_loop_is_daphnes
            for what, write in (("checkpoint", checkpoint), ("lease renewal", renewal)):
                for at_once in (1, CONCURRENT):
                    figures[(what, path, at_once)] = await _measure(write, runs[:at_once], WRITES)
            await loop_db.pools_close()
        return figures

    figures = asyncio.run(measure_all())
    GenerationRun.objects.filter(user=user).delete()
    lines = [
        "# A running generation's own writes: from the thread pool and from the event loop",
        "",
        *machine_describe(),
        "- command: `make bench` (`python -m bench.run_writes`)",
        f"- {WRITES} writes per line, each run's one after another; a checkpoint of two scenes "
        f"({len(str(work))} characters) or a lease renewal; one run, then {CONCURRENT} at once",
        "- thread pool: the path before (`STORY_LOOP_DB_CONNECTIONS=0`); event loop: storyproject/loop_db.py",
        "",
        "| write | runs at once | thread pool: CPU / wall ms | event loop: CPU / wall ms | CPU, pool / loop |",
        "|---|---:|---|---|---:|",
    ]
    for what in ("checkpoint", "lease renewal"):
        for at_once in (1, CONCURRENT):
            pool_cpu, pool_wall = figures[(what, "thread pool", at_once)]
            loop_cpu, loop_wall = figures[(what, "event loop", at_once)]
            lines.append(
                f"| {what} | {at_once} | {pool_cpu:.3f} / {pool_wall:.3f} | {loop_cpu:.3f} / {loop_wall:.3f} "
                f"| {pool_cpu / loop_cpu:.1f}x |"
            )
    lines += [
        "",
        "CPU is the whole process's (every thread) per write; wall is the time per write with the runs "
        "side by side. The figures of a quiet loop: on a saturated server each trip to the pool also waits "
        "for the GIL behind the loop thread (bench/results/steady.md).",
    ]
    text = "\n".join(lines) + "\n"
    RESULTS.write_text(text)
    print(text)
    print(f"Written to {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    _run() if os.environ.get(_CHILD) else main()
