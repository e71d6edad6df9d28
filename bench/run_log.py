"""The durable run event log's cost: `python -m bench.run_log`.

A finished single-mode run of about 4,000 output tokens is replayed into the log as its events: the
screenplay's JSON in text deltas of 24 characters (what the SDK hands over, a few tokens each), a
progress event every 40 deltas, a scene event per scene, then saved and done. Measured, for the
in-process log and for Redis Streams (REDIS_URL, else redis://127.0.0.1:6379/0):

- the cost of one append, with one follower waiting on the run (p50, p95, p99 over every event);
- the replay of the finished run to a new follower, from its first event to its terminal one, in the
  process that ran it (its memory) and, with Redis, in another process (a log without the local copy).

Writes bench/results/run_log.md.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import statistics
import time
from datetime import UTC, datetime
from typing import Any

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "storyproject.settings")
django.setup()

from django.test import override_settings  # noqa: E402

from bench.harness import ROOT  # noqa: E402
from bench.screenplays import screenplay_build  # noqa: E402
from stories.runs.log import RunEventLog  # noqa: E402
from stories.runs.memory_log import MemoryRunEventLog  # noqa: E402
from stories.runs.redis_log import RedisRunEventLog  # noqa: E402
from storyproject.tokens import token_estimate  # noqa: E402

REDIS_URL = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
RUNS = 5
CHUNK_CHARS = 24


def run_events(target_tokens: int = 4000) -> list[dict[str, Any]]:
    """The events of a finished run of about ``target_tokens`` output tokens."""
    scenes = 1
    while (
        token_estimate(json.dumps(screenplay_build(personas=["a", "b"], scenes=scenes, lines=6)))
        < target_tokens
    ):
        scenes += 1
    content = screenplay_build(personas=["a", "b"], scenes=scenes, lines=6)
    text = json.dumps(content)
    events: list[dict[str, Any]] = [{"type": "accepted", "run_id": 0, "model": "m", "max_tokens": 8000}]
    for number, start in enumerate(range(0, len(text), CHUNK_CHARS)):
        events.append({"type": "delta", "text": text[start : start + CHUNK_CHARS]})
        if number % 40 == 39:
            events.append({"type": "progress", "output_tokens": number * 6, "elapsed_ms": number * 20})
    events += [{"type": "scene", "index": i, "scene": scene} for i, scene in enumerate(content["scenes"])]
    events += [{"type": "saved", "story_id": 1, "version": 1, "url": "/stories/1/"}, {"type": "done"}]
    return events


async def _append_costs(log: RunEventLog, run_id: int, events: list[dict[str, Any]]) -> list[float]:
    await log.open(run_id)
    follower = asyncio.create_task(_drain(log, run_id))
    await asyncio.sleep(0.01)
    costs = []
    for event in events:
        started = time.perf_counter()
        await log.append(run_id, event)
        costs.append((time.perf_counter() - started) * 1000)
        await asyncio.sleep(0)  # the follower runs between events, as it does live
    await follower
    return costs


async def _drain(log: RunEventLog, run_id: int) -> int:
    count = 0
    async for _event in log.follow(run_id, 0):
        count += 1
    return count


async def _replay_ms(log: RunEventLog, run_id: int, expected: int) -> float:
    started = time.perf_counter()
    count = await _drain(log, run_id)
    assert count == expected, (count, expected)
    return (time.perf_counter() - started) * 1000


def _pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1]


async def _measure(name: str, make: Any, events: list[dict[str, Any]], rows: list[str]) -> None:
    costs: list[float] = []
    local, remote = [], []
    for attempt in range(RUNS):
        log = make()
        run_id = 10_000_000 + attempt
        costs += await _append_costs(log, run_id, events)
        local.append(await _replay_ms(log, run_id, len(events)))
        if isinstance(log, RedisRunEventLog):
            # Another process: no local copy, every event read from the stream.
            remote.append(await _replay_ms(RedisRunEventLog(local=MemoryRunEventLog()), run_id, len(events)))
    rows.append(
        f"| {name} | {len(events)} | {_pct(costs, 50):.3f} | {_pct(costs, 95):.3f} | {_pct(costs, 99):.3f} "
        f"| {statistics.median(local):.1f} | {statistics.median(remote):.1f} |"
        if remote
        else f"| {name} | {len(events)} | {_pct(costs, 50):.3f} | {_pct(costs, 95):.3f} | "
        f"{_pct(costs, 99):.3f} | {statistics.median(local):.1f} | n/a |"
    )


async def _main() -> str:
    events = run_events()
    tokens = token_estimate("".join(e["text"] for e in events if e["type"] == "delta"))
    rows = [
        "| log | events | append p50 ms | append p95 ms | append p99 ms | replay here ms | replay elsewhere ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    await _measure("in process", MemoryRunEventLog, events, rows)
    with override_settings(REDIS_URL=REDIS_URL):
        await _measure("Redis Streams", lambda: RedisRunEventLog(local=MemoryRunEventLog()), events, rows)
    machine = [
        f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {platform.machine()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}",
        f"- run: {tokens} output tokens in {len(events)} events; {RUNS} runs per log; Redis at {REDIS_URL}",
        "- replay: a new follower reading the finished run from seq 1 to its terminal event",
    ]
    return "\n".join(["# The run event log", "", *machine, "", *rows, ""])


def main() -> None:
    report = asyncio.run(_main())
    print(report)
    (ROOT / "bench" / "results" / "run_log.md").write_text(report, "utf-8")


if __name__ == "__main__":
    main()
