"""Replaying a finished run to a client that attaches: `python -m bench.run_replay`.

One daphne process (SQLite, the in-process run log, or Redis with REDIS_URL) and the offline model,
unpaced, write a single-mode run of about 4,000 output tokens over /ws/generate/; then a new socket
sends ``attach`` (after 0) and the time from sending it to receiving the terminal event is measured,
REPEATS times, on the client's clock. That is the whole replay a reloaded page waits for: the
ownership check, the log read and every WebSocket frame. Writes bench/results/run_replay.md.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Origin

from bench.harness import ROOT, daphne_running

REPEATS = 20
# Twelve sentences: the offline model writes a scene per sentence, the sentence as its action and
# summary; about 4,000 output tokens in all.
PLOT = " ".join(
    f"In part {n} the keeper of the lighthouse finds another letter in a bottle, reads it twice, "
    "argues with her brother about who could have sent it and why the tide keeps bringing them, "
    "then climbs the stairs to the lamp room to write an answer that she will throw back into the "
    "sea before the storm reaches the rocks below the old harbour wall." * 2
    for n in range(12)
)
_SEED = """
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token
from personas.models import PersonaConfig
user = get_user_model().objects.create_user(username="bench-replay", password="pw-bench-replay")
PersonaConfig.objects.create(name="keeper", display_name="Keeper", config_data={"personality": "Dry."})
print(Token.objects.create(user=user).key)
"""


def _env(database: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("ANTHROPIC_", "STORY_"))}
    env.update(
        DATABASE_URL=f"sqlite:///{database}",
        DJANGO_DEBUG="1",
        STORY_OFFLINE_TOKENS_PER_SECOND="0",
        STORY_DEFAULT_MODE="single",
    )
    return env


async def _measure(base: str, token: str) -> tuple[int, int, list[float]]:
    url = base.replace("http://", "ws://") + "/ws/generate/"
    headers = {"Authorization": f"Token {token}"}
    async with connect(url, origin=Origin(base), additional_headers=headers, max_size=2**22) as socket:
        request = {"type": "generate", "plot": PLOT, "personas": ["keeper"], "max_tokens": 16000}
        await socket.send(json.dumps(request))
        events = [json.loads(raw) async for raw in _until_terminal(socket)]
        run_id, tokens = events[0]["run_id"], events[-1]["usage"]["output_tokens"]
        timings = []
        for _ in range(REPEATS):
            started = time.perf_counter()
            await socket.send(json.dumps({"type": "attach", "run_id": run_id, "after": 0}))
            count = len([raw async for raw in _until_terminal(socket)])
            timings.append((time.perf_counter() - started) * 1000)
            assert count == len(events), (count, len(events))
    return len(events), tokens, timings


async def _until_terminal(socket: ClientConnection) -> AsyncIterator[str | bytes]:
    async for raw in socket:
        yield raw
        if json.loads(raw)["type"] in ("done", "error", "cancelled"):
            return


def main() -> None:
    with tempfile.TemporaryDirectory() as workdir:
        env = _env(Path(workdir) / "db.sqlite3")
        # Migrated and seeded in one process: the database is a new file.
        script = (
            "from django.core.management import call_command\ncall_command('migrate', verbosity=0)\n" + _SEED
        )
        command = [sys.executable, "manage.py", "shell", "-c", script]
        seeded = subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True, text=True)
        token = seeded.stdout.strip().splitlines()[-1]
        with daphne_running(env=env) as base:
            events, tokens, timings = asyncio.run(_measure(base, token))
    log = "Redis Streams" if os.environ.get("REDIS_URL") else "in process"
    p95 = statistics.quantiles(timings, n=20)[18]
    report = "\n".join(
        [
            "# Replaying a finished run on attach",
            "",
            f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
            f"- machine: {platform.machine()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}",
            f"- run: {tokens} output tokens in {events} events (offline model, single mode); log: {log}",
            f"- {REPEATS} attaches (after 0) on one socket, from sending `attach` to the terminal event",
            "",
            "| median ms | p95 ms | max ms |",
            "|---:|---:|---:|",
            f"| {statistics.median(timings):.1f} | {p95:.1f} | {max(timings):.1f} |",
            "",
        ]
    )
    print(report)
    (ROOT / "bench" / "results" / "run_replay.md").write_text(report, "utf-8")


if __name__ == "__main__":
    main()
