"""The whole flow, old app against ours, and ours under load: `make bench` (python -m bench.flow).

Real parts: daphne serving the project on PostgreSQL (and Redis when it answers), the real anthropic
SDK inside daphne talking to bench/fake_server.py, a model paced at TTFT 800 ms and 60 tokens/s
(BENCH_TTFT_MS, BENCH_TOKENS_PER_SECOND, BENCH_CHUNK_CHARS). The fake server records when each stream
started, wrote its first text and its first whole scene, and ended, so the model's own time is known
exactly and subtracted from what the client saw.

Sections, each a table in bench/results/flow.md:
1. Old flow against new, N = 1, 5, 12 personas. Old: N sequential GETs of
   /api/personas/{name}/context/ on a daphne with Django's cache off (the old app had none), one
   blocking non-streaming model call of the whole screenplay, then the old app's separate writes
   (story, version, each cast row, run: one autocommit statement each). Nothing is visible until it
   all ends. New: one WebSocket generation, from the handshake to `done`.
2. Overhead at 1, 50 and 200 concurrent generations on one daphne process, then 200 over two daphne
   processes (clients alternate between their ports) sharing PostgreSQL and the Redis channel layer.
3. Save: stories.services.screenplay_version_create called directly on PostgreSQL.

Benchmarks print figures; nothing here asserts a timing.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from bench.harness import (
    ROOT,
    daphne_process,
    machine_describe,
    personas_ensure,
    postgres_ensure,
    process_usage,
    redis_reachable,
)
from bench.screenplays import marker, screenplay_build
from bench.ws_client import Generation, ws_generate, ws_open
from stories.generation.models_registry import DEFAULT_MODEL

DATABASE_URL = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/story_bench")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/1")
CACHE_KEY_PREFIX = os.environ.get("BENCH_CACHE_KEY_PREFIX", "bench")
TTFT_MS = float(os.environ.get("BENCH_TTFT_MS", "800"))
TOKENS_PER_SECOND = float(os.environ.get("BENCH_TOKENS_PER_SECOND", "60"))
CHUNK_CHARS = int(os.environ.get("BENCH_CHUNK_CHARS", "12"))
FLOW_REPEATS = int(os.environ.get("BENCH_FLOW_REPEATS", "2"))
SINGLE_REPEATS = int(os.environ.get("BENCH_SINGLE_REPEATS", "10"))
SAVE_REPEATS = int(os.environ.get("BENCH_SAVE_REPEATS", "30"))
# Scenes and dialogue lines per scene of the screenplay the fake model writes (about 155 tokens a scene
# after a header of about 70 tokens plus 40 a character): short under load, longer old against new.
SCENES, LINES = 2, 2
FLOW_SCENES = int(os.environ.get("BENCH_FLOW_SCENES", "4"))
LOAD_PERSONAS = 3
LEVELS = ((1, SINGLE_REPEATS), (50, 2), (200, 1))
WRITERS = 200
RESULTS = ROOT / "bench" / "results" / "flow.md"
# The figures the targets are checked against, filled in as the sections run.
FIGURES: dict[str, Any] = {}
CLIENT_LAGS: list[float] = []
LAG_NOTES: list[str] = []
MODEL = DEFAULT_MODEL
SECRET_KEY = "bench-only-secret-key-not-used-anywhere-else"
SERVER_ENV = {
    "DATABASE_URL": DATABASE_URL,
    "CACHE_KEY_PREFIX": CACHE_KEY_PREFIX,
    "DJANGO_DEBUG": "0",
    "DJANGO_SECURE_SSL": "0",
    "DJANGO_SECRET_KEY": SECRET_KEY,
    "DJANGO_LOG_LEVEL": "WARNING",
    "DJANGO_SETTINGS_MODULE": "storyproject.settings",
}


def main() -> None:
    """Run in a child process (its own Django settings); Redis-dependent parts only when Redis answers."""
    postgres_ensure(DATABASE_URL)
    problem = redis_reachable(REDIS_URL)
    env = {**os.environ, **SERVER_ENV, "BENCH_REDIS_PROBLEM": problem}
    env.pop("REDIS_URL", None)
    if not problem:
        env["REDIS_URL"] = REDIS_URL
    subprocess.run([sys.executable, "-m", "bench.flow"], cwd=ROOT, env=env, check=True)
    if problem:
        raise SystemExit(f"bench.flow: the two-process run needs Redis: {problem}")


@dataclass(frozen=True)
class Setup:
    personas: list[str]
    token: str  # the first writer's API token, for the old flow's REST calls
    writer_ids: list[int]
    sessions: list[str]  # one session cookie per writer


def _run() -> None:
    import django

    django.setup()
    setup = _data_prepare()
    redis_problem = os.environ.get("BENCH_REDIS_PROBLEM", "")
    sections = ["# The whole flow: old app against ours, and ours under load", "", *machine_describe()]
    sections += [
        f"- database: PostgreSQL; cache and channel layer: "
        f"{'Redis' if not redis_problem else 'local memory (Redis unreachable)'}",
        f"- model: bench/fake_server.py, TTFT {TTFT_MS:.0f} ms, {TOKENS_PER_SECOND:.0f} tokens/s, "
        f"text deltas of {CHUNK_CHARS} characters; the real anthropic SDK inside daphne",
        "- command: `make bench` (`python -m bench.flow`)",
        f"- load average at the start (1, 5, 15 min): {_load()}: the cores are shared with other work, "
        "so every figure includes waiting for a core",
        "",
    ]
    sections += _save_section(setup)
    _print_section(sections)
    with fake_server() as fake:
        flow, load = _daphne_sections(setup, fake, redis_problem)
        sections += flow + load
    sections += _targets()
    sections.append(f"Load average at the end (1, 5, 15 min): {_load()}.")
    report = "\n".join(sections) + "\n"
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(report, encoding="utf-8")
    print(f"Written to {RESULTS.relative_to(ROOT)}")


def _targets() -> list[str]:
    """The issue's targets against this run's figures: met or missed, never asserted."""

    def verdict(value: float, limit: float) -> str:
        return f"{value:.0f} ms: {'met' if value <= limit else 'missed'}"

    figures = FIGURES
    rows = [
        (
            "first visible scene within the model's own time + 10 ms (p95, one stream)",
            verdict(figures.get("1x1 scene p95", math.inf), 10),
        ),
        (
            "first model token to the client within 10 ms (p95, one stream)",
            verdict(figures.get("1x1 lag p95", math.inf), 10),
        ),
        (
            "first scene on screen within 10 ms of the model writing it (p95, one stream)",
            verdict(figures.get("1x1 scene lag p95", math.inf), 10),
        ),
        ("overhead ≤ 30 ms (p95, one stream)", verdict(figures.get("1x1 overhead p95", math.inf), 30)),
        (
            "overhead ≤ 100 ms (p95, 200 concurrent, one process)",
            verdict(figures.get("200x1 overhead p95", math.inf), 100),
        ),
        (
            "overhead at 200 concurrent over two processes (p95, for comparison)",
            verdict(figures.get("200x2 overhead p95", math.inf), 100),
        ),
    ]
    story, version = (sorted(figures.get(f"save queries {kind}", set())) for kind in ("story", "version"))
    constant = len(story) == 1 and len(version) == 1
    rows.append(
        (
            "save: constant query count whatever the scenes and cast",
            f"new story {'/'.join(map(str, story))}, new version {'/'.join(map(str, version))} "
            f"(with BEGIN and COMMIT): {'met' if constant else 'missed'}",
        )
    )
    rows.append(("save < 15 ms (p95, worst size)", verdict(figures.get("save p95", math.inf), 15)))
    return [
        "## Targets",
        "",
        "| target | this run |",
        "|---|---|",
        *(f"| {name} | {value} |" for name, value in rows),
        "",
    ]


def _load() -> str:
    return ", ".join(f"{value:.1f}" for value in os.getloadavg())


def _print_section(lines: list[str]) -> None:
    print("\n".join(lines), flush=True)


def _data_prepare() -> Setup:
    """Migrate, clear the previous run's bench stories, make the personas and the writers (idempotent)."""
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.test import Client
    from rest_framework.authtoken.models import Token

    from stories.models import GenerationRun, Story

    call_command("migrate", verbosity=0, interactive=False)
    personas = personas_ensure(count=30)
    users = get_user_model().objects
    Story.objects.filter(owner__username__startswith="bench-writer-").delete()
    GenerationRun.objects.filter(user__username__startswith="bench-writer-").delete()
    writers = [users.get_or_create(username=f"bench-writer-{index:03d}")[0] for index in range(WRITERS)]
    sessions = []
    for writer in writers:
        client = Client()
        client.force_login(writer)
        sessions.append(client.cookies["sessionid"].value)
    token, _ = Token.objects.get_or_create(user=writers[0])
    return Setup(personas=personas, token=token.key, writer_ids=[w.pk for w in writers], sessions=sessions)


# --- The fake model server -------------------------------------------------------------------


@dataclass(frozen=True)
class Fake:
    base: str

    def records(self) -> dict[str, dict[str, Any]]:
        """The fake's records by bench run id: first start, first text, first scene, last end, requests."""
        merged: dict[str, dict[str, Any]] = {}
        for record in httpx.get(self.base + "/_bench/records", timeout=30).json():
            seen = merged.get(record["id"])
            if seen is None:
                merged[record["id"]] = {**record, "requests": 1}
                continue
            seen["requests"] += 1
            seen["received_at"] = min(seen["received_at"], record["received_at"])
            for key in ("ended_at", "first_token_at", "first_scene_at"):
                values = [v for v in (seen[key], record[key]) if v is not None]
                pick = max if key == "ended_at" else min
                seen[key] = pick(values) if values else None
        return merged

    def clear(self) -> None:
        httpx.delete(self.base + "/_bench/records", timeout=30)


@contextmanager
def fake_server(
    *, ttft_ms: float = TTFT_MS, tokens_per_second: float = TOKENS_PER_SECOND, chunk_chars: int = CHUNK_CHARS
) -> Iterator[Fake]:
    command = [
        sys.executable,
        "-m",
        "bench.fake_server",
        "--ttft-ms",
        str(ttft_ms),
        "--tokens-per-second",
        str(tokens_per_second),
        "--chunk-chars",
        str(chunk_chars),
    ]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline() if process.stdout else ""
        if not line.startswith("READY "):
            raise RuntimeError(f"the fake model server did not start: {line!r}")
        yield Fake(base=f"http://127.0.0.1:{int(line.split()[1])}")
    finally:
        process.terminate()
        process.wait(timeout=10)


def _new_env(fake: Fake) -> dict[str, str]:
    env = {
        **SERVER_ENV,
        "ANTHROPIC_API_KEY": "sk-ant-bench-fake-key",
        "ANTHROPIC_BASE_URL": fake.base,
        "STORY_BACKEND": "stories.generation.backends.anthropic.AnthropicBackend",
        "STORY_MODEL": MODEL,
        # The per-user limits would refuse a load test; the writers are many, and the limits raised.
        "STORY_MAX_ACTIVE_PER_USER": "1000",
        "STORY_GENERATIONS_PER_HOUR": "100000",
        # This bench measures the single-pass flow; parallel mode has its own (bench/parallel_mode.py).
        "STORY_DEFAULT_MODE": "single",
    }
    if os.environ.get("REDIS_URL"):
        env["REDIS_URL"] = os.environ["REDIS_URL"]
    return env


def _daphne_sections(setup: Setup, fake: Fake, redis_problem: str) -> tuple[list[str], list[str]]:
    new_env = _new_env(fake)
    old_env = {**new_env, "DJANGO_SETTINGS_MODULE": "bench.settings_nocache"}
    with daphne_process(env=old_env) as (old_base, _old_pid), daphne_process(env=new_env) as (base, pid):
        flow = _flow_section(setup, fake, old_base=old_base, new_base=base)
    _print_section(flow)
    load_notes: list[str] = []
    load = [
        "## Overhead under load",
        "",
        "Per generation: **overhead** = client's send-to-`done` time minus the model's stream time seen by "
        "the fake server; **first token lag** = client's first `delta` minus the fake's first text "
        "written; **first scene lag** = client's first `scene` minus the fake's writing of the text that "
        "ends the first scene (both CLOCK_MONOTONIC); **before model** = send to the fake receiving the "
        "request (admission, run row, contexts, prompt, SDK); **after model** = stream end to `done` (parse, "
        "validation, save); **first scene beyond model** = client's time from send to first `scene` minus "
        "the model's time from request to the first scene's end (so it includes before model). "
        f"Each generation: {LOAD_PERSONAS} personas, {SCENES} scenes. All clients connect first, then "
        "send `generate` at the same instant (a burst). CPU is daphne's user+system time over the level's "
        "wall time; peak RSS is VmHWM (since the process started). ms: p50 / p95 / max.",
        "",
        "| concurrent | daphne processes | generations | errors | overhead | first token lag "
        "| first scene lag | before model | after model | first scene beyond model | daphne CPU "
        "| peak RSS (MB) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    with daphne_process(env=new_env) as (base, pid):
        load_notes.append(_cold_note(setup, fake, base))
        for concurrency, rounds in LEVELS:
            load.append(_level_row(setup, fake, [(base, pid)], concurrency, rounds))
            print(load[-1], flush=True)
    if redis_problem:
        load.append(f"| 200 | 2 | - | - | not run: {redis_problem} ||||||||")
    else:
        with daphne_process(env=new_env) as first, daphne_process(env=new_env) as second:
            for server_base, _ in (first, second):
                _cold_note(setup, fake, server_base)
            load.append(_level_row(setup, fake, [first, second], 200, 1))
            print(load[-1], flush=True)
    return flow, [*load, "", *load_notes, *LAG_NOTES, ""]


def _cold_note(setup: Setup, fake: Fake, base: str) -> str:
    """One generation on a fresh process, not counted: what the first writer after a restart waits."""
    generation = asyncio.run(_new_flow(base, setup, setup.personas[:LOAD_PERSONAS]))
    record = fake.records().get(generation.run_id)
    if generation.error or record is None or generation.done_at is None:
        return f"- The first generation after start failed: {generation.error}"
    overhead = (generation.done_at - generation.sent_at) - (record["ended_at"] - record["received_at"])
    before = record["received_at"] - generation.sent_at
    return (
        f"- The first generation of a fresh daphne process is left out of the table (warm-up): its overhead "
        f"was {overhead * 1000:.0f} ms, {before * 1000:.0f} ms of it before the model request."
    )


# --- 1. Old flow against new -------------------------------------------------------------------


def _flow_section(setup: Setup, fake: Fake, *, old_base: str, new_base: str) -> list[str]:
    import anthropic

    client = anthropic.Anthropic(api_key="sk-ant-bench-fake-key", base_url=fake.base, max_retries=0)
    rows = []
    with httpx.Client(base_url=old_base, headers={"Authorization": f"Token {setup.token}"}) as http:
        # Warm-up, not counted: each process's first request and first generation load code.
        _old_flow(http, client, setup, setup.personas[:1])
        asyncio.run(_new_flow(new_base, setup, setup.personas[:1]))
        for count in (1, 5, 12):
            names = setup.personas[:count]
            old = [_old_flow(http, client, setup, names) for _ in range(FLOW_REPEATS)]
            new = [asyncio.run(_new_flow(new_base, setup, names, FLOW_SCENES)) for _ in range(FLOW_REPEATS)]
            records = fake.records()
            model_first_scene = [
                (records[g.run_id]["first_scene_at"] - records[g.run_id]["received_at"]) * 1000 for g in new
            ]
            errors = [g.error for g in new if g.error]
            if errors:
                raise RuntimeError(f"a new-flow generation failed: {errors[0]}")
            rows.append(
                {
                    "n": count,
                    "old": statistics.median(old),
                    "first": statistics.median([(g.first_scene_at - g.started_at) * 1000 for g in new]),  # type: ignore[operator]
                    "total": statistics.median([(g.done_at - g.started_at) * 1000 for g in new]),  # type: ignore[operator]
                    "model_first_scene": statistics.median(model_first_scene),
                }
            )
    lines = [
        "## Old flow against new",
        "",
        f"Medians of {FLOW_REPEATS} runs per N, one at a time; the model writes {FLOW_SCENES} scenes. Old: N "
        "sequential GETs of /api/personas/{name}/context/ (cache off), one blocking non-streaming model "
        "call, then separate autocommit writes (story, version, each cast row, run); nothing is visible "
        "until the end, so its first visible scene is its total. New: one WebSocket generation, timed "
        "from the handshake.",
        "",
        "| N personas | old: first visible = total (ms) | new: first scene (ms) | model's own time to first "
        "scene (ms) | new: total (ms) | first visible new / old | total new / old |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['n']} | {row['old']:.0f} | {row['first']:.0f} | {row['model_first_scene']:.0f} "
            f"| {row['total']:.0f} | {row['first'] / row['old']:.2f} | {row['total'] / row['old']:.2f} |"
        )
    return [*lines, ""]


def _plot(run_id: str, names: list[str], scenes: int = SCENES) -> str:
    tag = marker(run_id=run_id, personas=names, scenes=scenes, lines=LINES)
    return f"An old photograph brings a family's buried promise back into the light. {tag}"


def _old_flow(http: httpx.Client, client: Any, setup: Setup, names: list[str]) -> float:
    """The old app, step by step; returns its total in ms (nothing was visible before)."""
    from personas.models import PersonaConfig
    from stories.models import GenerationRun, ScreenplayVersion, Story, StoryCast

    started = time.monotonic()
    contexts = []
    for name in names:
        response = http.get(f"/api/personas/{name}/context/")
        response.raise_for_status()
        contexts.append(response.json())
    # The old app built the prompt in the browser and made one blocking call of max_tokens 4096.
    system = "Write a screenplay as JSON.\n\n" + "\n\n".join(c["context"] for c in contexts)
    plot = _plot(uuid.uuid4().hex[:12], names, FLOW_SCENES)
    message = client.messages.create(
        model=MODEL, max_tokens=4096, system=system, messages=[{"role": "user", "content": plot}]
    )
    screenplay = json.loads(message.content[0].text)
    # Its auto-save: separate writes, each its own autocommit statement.
    user_id = setup.writer_ids[0]
    story = Story.objects.create(owner_id=user_id, title=screenplay["title"], plot=plot)
    ScreenplayVersion.objects.create(story=story, number=1, content=screenplay, model=MODEL, max_tokens=4096)
    for order, character in enumerate(screenplay["characters"]):
        persona = PersonaConfig.objects.get(name=character["persona"])
        StoryCast.objects.create(story=story, persona=persona, character_name=character["name"], order=order)
    GenerationRun.objects.create(
        user_id=user_id,
        story=story,
        model=MODEL,
        max_tokens=4096,
        persona_names=names,
        status=GenerationRun.Status.SUCCEEDED,
    )
    return (time.monotonic() - started) * 1000


async def _new_flow(base: str, setup: Setup, names: list[str], scenes: int = SCENES) -> Generation:
    run_id = uuid.uuid4().hex[:12]
    generation = Generation(run_id=run_id, started_at=time.monotonic())
    socket = await ws_open(base=base, session_cookie=setup.sessions[0])
    async with socket:
        return await ws_generate(
            socket, generation=generation, plot=_plot(run_id, names, scenes), personas=names, timeout=120
        )


# --- 2. Overhead under load ------------------------------------------------------------------


def _level_row(
    setup: Setup, fake: Fake, servers: Sequence[tuple[str, int]], concurrency: int, rounds: int
) -> str:
    names = setup.personas[:LOAD_PERSONAS]
    fake.clear()
    CLIENT_LAGS.clear()
    before = [process_usage(pid) for _, pid in servers]
    started = time.monotonic()
    generations: list[Generation] = []
    for _ in range(rounds):
        generations += asyncio.run(_burst([base for base, _ in servers], setup, names, concurrency))
    wall = time.monotonic() - started
    after = [process_usage(pid) for _, pid in servers]
    records = fake.records()
    ok = [g for g in generations if not g.error and g.run_id in records and g.done_at is not None]
    errors = len(generations) - len(ok)
    samples: dict[str, list[float]] = {
        "overhead": [],
        "lag": [],
        "scene lag": [],
        "before": [],
        "after": [],
        "scene": [],
    }
    for g in ok:
        record = records[g.run_id]
        samples["overhead"].append(
            ((g.done_at - g.sent_at) - (record["ended_at"] - record["received_at"])) * 1000  # type: ignore[operator]
        )
        samples["lag"].append((g.first_delta_at - record["first_token_at"]) * 1000)
        scene_lag = g.first_scene_at - record["first_scene_at"]
        samples["scene lag"].append(scene_lag * 1000)
        samples["before"].append((record["received_at"] - g.sent_at) * 1000)
        samples["after"].append((g.done_at - record["ended_at"]) * 1000)
        samples["scene"].append(
            ((g.first_scene_at - g.sent_at) - (record["first_scene_at"] - record["received_at"])) * 1000  # type: ignore[operator]
        )
    cpu = sum(a.cpu_seconds - b.cpu_seconds for a, b in zip(after, before, strict=True))
    rss = " + ".join(f"{a.peak_rss_mb:.0f}" for a in after)
    first_error = next((g.error for g in generations if g.error), "")
    if first_error:
        print(f"  first error at {concurrency} concurrent: {first_error}", flush=True)
    late = sorted(
        (r["first_token_at"] - r["received_at"]) * 1000 - TTFT_MS
        for r in records.values()
        if r["first_token_at"] is not None
    )
    LAG_NOTES.append(
        f"- {concurrency} concurrent on {len(servers)} process(es): the client's own event loop woke up "
        f"{_spread(sorted(CLIENT_LAGS))} ms late (p50 / p95 / max), the fake model's first text was "
        f"{_spread(late)} ms later than its TTFT; both are part of the figures above."
    )
    key = f"{concurrency}x{len(servers)}"
    for name in ("overhead", "lag", "scene lag", "scene"):
        FIGURES[f"{key} {name} p95"] = _rank(sorted(samples[name]), 0.95) if samples[name] else math.inf
    FIGURES[f"{key} errors"] = errors
    cells = [_spread(samples[key]) for key in ("overhead", "lag", "scene lag", "before", "after", "scene")]
    return (
        f"| {concurrency} | {len(servers)} | {len(generations)} | {errors} | {' | '.join(cells)} "
        f"| {cpu:.1f} s ({cpu / wall * 100:.0f}% of a core, {cpu * 1000 / max(len(generations), 1):.0f} ms "
        f"a generation) | {rss} |"
    )


async def _burst(bases: list[str], setup: Setup, names: list[str], concurrency: int) -> list[Generation]:
    """Open ``concurrency`` signed-in sockets (a few at a time), then start every generation at once."""
    gate = asyncio.Semaphore(20)
    generations = [Generation(run_id=uuid.uuid4().hex[:12]) for _ in range(concurrency)]

    async def opened(index: int) -> Any:
        async with gate:
            generations[index].started_at = time.monotonic()
            try:
                return await ws_open(base=bases[index % len(bases)], session_cookie=setup.sessions[index])
            except Exception as error:  # counted as an error of that generation
                generations[index].error = f"connect: {type(error).__name__}: {error}"[:200]
                return None

    sockets = await asyncio.gather(*(opened(i) for i in range(concurrency)))
    monitor = asyncio.ensure_future(_loop_lag(CLIENT_LAGS))

    async def run(index: int) -> Generation:
        socket, generation = sockets[index], generations[index]
        if socket is None:
            return generation
        try:
            return await ws_generate(
                socket,
                generation=generation,
                plot=_plot(generation.run_id, names),
                personas=names,
                timeout=180,
            )
        finally:
            await socket.close()

    try:
        return list(await asyncio.gather(*(run(i) for i in range(concurrency))))
    finally:
        monitor.cancel()


async def _loop_lag(lags: list[float]) -> None:
    """How late this client's own event loop wakes up: its share of every client-side time."""
    while True:
        asked = time.monotonic()
        await asyncio.sleep(0.05)
        lags.append((time.monotonic() - asked - 0.05) * 1000)


def _spread(values: list[float]) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    return f"{ordered[len(ordered) // 2]:.0f} / {_rank(ordered, 0.95):.0f} / {ordered[-1]:.0f}"


def _rank(ordered: list[float], fraction: float) -> float:
    """Nearest-rank percentile of sorted values."""
    return ordered[max(math.ceil(fraction * len(ordered)) - 1, 0)]


# --- 3. Save ---------------------------------------------------------------------------------


def _save_section(setup: Setup) -> list[str]:
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from stories.generation.validation import screenplay_validate
    from stories.services import (
        RunRecord,
        ScreenplayDraft,
        generation_run_start,
        screenplay_version_create,
    )

    user = get_user_model().objects.get(pk=setup.writer_ids[-1])
    lines = [
        "## Save: one transaction, on PostgreSQL",
        "",
        f"stories.services.screenplay_version_create called directly, {SAVE_REPEATS} times per size; "
        "queries counted with CaptureQueriesContext on the first call, times of the others (ms). A new "
        "story, then a new version of that story (which recasts it).",
        "",
        "| scenes | cast | queries: new story | queries: new version | new story p50 / p95 / max "
        "| new version p50 / p95 / max |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    lines[2] += " " + _floor(user.pk)
    for scenes in (5, 40, 150):
        for cast in (2, 10, 30):
            names = setup.personas[:cast]
            content = screenplay_build(personas=names, scenes=scenes, lines=4)
            entries = screenplay_validate(content=content, persona_names=names)
            counts: dict[str, int] = {}
            times: dict[str, list[float]] = {"story": [], "version": []}
            for repeat in range(SAVE_REPEATS + 1):
                story_id = None
                for kind in ("story", "version"):
                    run = generation_run_start(
                        user_id=user.pk, model=MODEL, max_tokens=4096, persona_names=names, story_id=story_id
                    )
                    draft = ScreenplayDraft(
                        title="Bench",
                        plot="Bench plot",
                        content=content,
                        model=MODEL,
                        max_tokens=4096,
                        cast=entries,
                        story_id=story_id,
                    )

                    def save(draft: ScreenplayDraft = draft, run_id: int = run.pk) -> Any:
                        return screenplay_version_create(
                            user_id=user.pk, draft=draft, run_id=run_id, record=RunRecord()
                        )

                    if repeat == 0:
                        with CaptureQueriesContext(connection) as queries:
                            version = save()
                        counts[kind] = len(queries)
                    else:
                        version, elapsed = _timed(save)
                        times[kind].append(elapsed)
                    story_id = version.story_id
            for kind, count in counts.items():
                FIGURES.setdefault(f"save queries {kind}", set()).add(count)
            worst = max(_rank(sorted(times["story"]), 0.95), _rank(sorted(times["version"]), 0.95))
            FIGURES["save p95"] = max(FIGURES.get("save p95", 0.0), worst)
            lines.append(
                f"| {scenes} | {cast} | {counts['story']} | {counts['version']} "
                f"| {_spread_fine(times['story'])} | {_spread_fine(times['version'])} |"
            )
    return [*lines, ""]


def _floor(user_id: int) -> str:
    """What any save costs on this machine now: one round trip, and the smallest durable transaction."""
    from django.db import connection, transaction
    from django.db.models import F

    from stories.models import GenerationRun

    run = GenerationRun.objects.create(user_id=user_id, model=MODEL, max_tokens=256)

    def select_one() -> None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")

    def write_one() -> None:
        with transaction.atomic():
            GenerationRun.objects.filter(pk=run.pk).update(output_tokens=F("output_tokens") + 1)

    trips = sorted(_timed(select_one)[1] for _ in range(SAVE_REPEATS))
    writes = sorted(_timed(write_one)[1] for _ in range(SAVE_REPEATS))
    return (
        f"The floor during this run: one round trip (SELECT 1) {trips[len(trips) // 2]:.2f} / "
        f"{_rank(trips, 0.95):.2f} ms (p50 / p95); the smallest durable transaction (BEGIN, a one-row "
        f"UPDATE, COMMIT with its WAL flush) {writes[len(writes) // 2]:.2f} / {_rank(writes, 0.95):.2f} ms."
    )


def _timed(call: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    result = call()
    return result, (time.perf_counter() - started) * 1000


def _spread_fine(values: list[float]) -> str:
    ordered = sorted(values)
    return f"{ordered[len(ordered) // 2]:.1f} / {_rank(ordered, 0.95):.1f} / {ordered[-1]:.1f}"


if __name__ == "__main__":
    # Run from a shell, `python -m bench.flow` sets up its child process as `make bench` does; main()
    # marks the child by BENCH_REDIS_PROBLEM (empty when Redis answers).
    _run() if "BENCH_REDIS_PROBLEM" in os.environ else main()
