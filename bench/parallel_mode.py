"""Single-pass streaming against parallel mode (outline, then every scene at once), same screenplays.

`make bench` runs it (or `python -m bench.parallel_mode`). In a child process with its own SQLite file
database, it runs the real pipeline (stories.generation.pipeline.generation_run) in-process against
tests/fake_anthropic.py through the real SDK, with the fake model paced like Claude: TTFT 800 ms, then
60 output tokens a second, and the fake server's prompt cache on (a prefix marked cache_control is
written once, then read; no prefix under the model's minimum, from the model registry, is cached).
The fake server runs in a process of its own, started afresh for each run, so each run pays its own
cache writes and the server's threads do not compete with the pipeline for the interpreter.

For screenplays of about 1,000, 4,000 and 8,000 output tokens it reports, per mode: wall time to
`done`, time to the first complete scene, input/output/cache tokens as the server reported them, and
dollars from the model registry (stories/generation/models_registry.py). Parallel mode runs with the screenplay cut into 6 and into 12 scenes
at the default concurrency of 6 (one wave of scene calls, and two), and with BENCH_PARALLEL_ALL=1 also
12 scenes 12 at once.
Results: bench/results/parallel.md.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stories.generation.models_registry import DEFAULT_MODEL, MODELS

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "parallel.md"
MODEL = DEFAULT_MODEL
SIZES = (1000, 4000, 8000)
SCENE_COUNTS = (6, 12)
TTFT = float(os.environ.get("BENCH_TTFT", "0.8"))
TOKENS_PER_SECOND = float(os.environ.get("BENCH_TOKENS_PER_SECOND", "60"))
PERSONAS = ("iris-vale", "tom-okafor", "june-marsh")
FAKE_KEY = "sk-ant-bench-parallel-fake"


@dataclass
class Measure:
    mode: str
    target_tokens: int
    scenes: int
    wall_s: float
    first_scene_s: float
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    dollars: float
    calls: int
    concurrency: int = 0


def main() -> None:
    """Run the benchmark in a child process, so its Django settings do not leak into other benches."""
    database = Path(tempfile.gettempdir()) / "bench_parallel.sqlite3"
    database.unlink(missing_ok=True)
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "storyproject.settings",
        "DATABASE_URL": f"sqlite:///{database}",
        "REDIS_URL": "",
        "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": "bench-only-secret-key-not-used-anywhere-else",
        "DJANGO_LOG_LEVEL": "WARNING",
        "ANTHROPIC_API_KEY": "set-at-run-time",
        "STORY_MODEL": MODEL,
        "STORY_MODELS": MODEL,
        "STORY_BACKEND": "stories.generation.backends.anthropic.AnthropicBackend",
        "STORY_GENERATIONS_PER_HOUR": "1000",
        "PYTHONWARNINGS": "ignore::DeprecationWarning",
        "BENCH_PARALLEL_CHILD": "1",
    }
    subprocess.run([sys.executable, "-m", "bench.parallel_mode"], cwd=ROOT, env=env, check=True)


def _run() -> None:
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    user = _fixtures()
    settings.ANTHROPIC_API_KEY = FAKE_KEY
    measures: list[Measure] = []
    configured = settings.STORY_PARALLEL_CONCURRENCY
    try:
        # Untimed: the first run pays for imports, the SDK client and the database's first queries.
        asyncio.run(_measure(user, mode="single", size=200, scenes=2, pace=False))
        for size in SIZES:
            for mode, scenes, concurrency in _variants(configured):
                settings.STORY_PARALLEL_CONCURRENCY = concurrency
                measure = asyncio.run(_measure(user, mode=mode, size=size, scenes=scenes))
                measure.concurrency = concurrency
                measures.append(measure)
                print(_row(measure), flush=True)
    finally:
        settings.STORY_PARALLEL_CONCURRENCY = configured
    report = _report(measures, concurrency=configured)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(report, encoding="utf-8")
    print(report)
    print(f"Written to {RESULTS.relative_to(ROOT)}")


def _variants(configured: int) -> list[tuple[str, int, int]]:
    """(mode, scenes, concurrency): single-pass, then parallel in one wave and two waves; with
    BENCH_PARALLEL_ALL=1 also 12 scenes 12 at once (left out by default to keep `make bench` under
    15 minutes on 2 cores)."""
    variants = [
        ("single", SCENE_COUNTS[0], configured),
        *[("parallel", scenes, configured) for scenes in SCENE_COUNTS],
    ]
    if os.environ.get("BENCH_PARALLEL_ALL") == "1":
        variants.append(("parallel", SCENE_COUNTS[-1], SCENE_COUNTS[-1]))
    return variants


def _fixtures() -> Any:
    from django.contrib.auth import get_user_model

    from personas.models import PersonaConfig

    backstory = (
        "Grew up above a bakery in a harbour town, the youngest of four, and learned early that the "
        "quiet one in the room hears everything. Left at eighteen with a borrowed suitcase and a name "
        "that was not quite hers, worked nights in a telegraph office, then years on the river boats. "
    ) * 4
    for name in PERSONAS:
        PersonaConfig.objects.update_or_create(
            name=name,
            defaults={
                "display_name": name.replace("-", " ").title(),
                "config_data": {
                    "description": f"{name.replace('-', ' ').title()}, a witness with a long memory.",
                    "personality": "Patient, dry, observant; slow to anger and slower to forgive. " * 3,
                    "voice": "Short sentences. Understatement. Never raises the voice; lowers it instead.",
                    "backstory": backstory,
                    "example_lines": ["You kept this for ten years.", "Some stories are safer unfinished."],
                },
            },
        )
    user, _ = get_user_model().objects.get_or_create(username="bench-parallel")
    return user


def _screenplay(*, size: int, scenes: int) -> dict[str, Any]:
    """A screenplay of ``scenes`` scenes whose compact JSON is about ``size`` tokens."""
    from bench.screenplays import screenplay_build

    lines = 1
    while True:
        screenplay = screenplay_build(personas=list(PERSONAS), scenes=scenes, lines=lines)
        if len(json.dumps(screenplay)) / 4 >= size:
            return screenplay
        lines += 1


def _serve_fake(connection: Any, screenplay: dict[str, Any], pace: bool) -> None:
    """A fake Anthropic server in its own process (its threads do not compete with the pipeline's)."""
    from tests.fake_anthropic import FakeAnthropic
    from tests.fake_screenwriter import FakeScreenwriter

    writer = FakeScreenwriter(
        screenplay,
        ttft=TTFT if pace else 0.0,
        tokens_per_second=TOKENS_PER_SECOND if pace else None,
        chunk_chars=24,
        indent=None,
    )
    fake = FakeAnthropic(
        api_key=FAKE_KEY, default=writer, prompt_cache=True, cache_min_tokens=MODELS[MODEL].min_cache_tokens
    )
    connection.send(fake.base_url)
    connection.recv()
    connection.send(len(fake.requests))
    fake.close()


async def _measure(user: Any, *, mode: str, size: int, scenes: int, pace: bool = True) -> Measure:
    from django.conf import settings

    screenplay = _screenplay(size=size, scenes=scenes)
    ours, theirs = multiprocessing.Pipe()
    server = multiprocessing.get_context("spawn").Process(target=_serve_fake, args=(theirs, screenplay, pace))
    server.start()
    try:
        settings.ANTHROPIC_BASE_URL = ours.recv()
        measure = await _generate(user, mode=mode, size=size, scenes=scenes)
        ours.send("stop")
        measure.calls = ours.recv()
    finally:
        server.join(timeout=10)
        if server.is_alive():
            server.kill()
    return measure


async def _generate(user: Any, *, mode: str, size: int, scenes: int) -> Measure:
    from stories.generation.pipeline import generation_run
    from stories.generation.requests import GenerationRequest
    from stories.pricing import usage_cost_usd

    request = GenerationRequest(
        plot="An old photograph brings a family's buried promise back into the light.",
        personas=list(PERSONAS),
        model=MODEL,
        max_tokens=16_000,
        mode=mode,
    )
    started = time.monotonic()
    first_scene = None
    final: dict[str, Any] = {}
    async for event in generation_run(request=request, user=user):
        if event["type"] == "scene" and first_scene is None:
            first_scene = time.monotonic() - started
        if event["type"] in ("done", "error", "cancelled"):
            final = event
    wall = time.monotonic() - started
    if final.get("type") != "done":
        raise RuntimeError(f"{mode} run at {size} tokens did not finish: {final}")
    usage = final["usage"]
    dollars = usage_cost_usd(model=MODEL, **usage)
    return Measure(
        mode=mode,
        target_tokens=size,
        scenes=scenes,
        wall_s=wall,
        first_scene_s=first_scene or wall,
        input_tokens=usage["input_tokens"],
        output_tokens=usage["output_tokens"],
        cache_read_tokens=usage["cache_read_tokens"],
        cache_write_tokens=usage["cache_write_tokens"],
        dollars=float(dollars or 0),
        calls=0,
    )


def _row(m: Measure) -> str:
    label = "single-pass" if m.mode == "single" else f"parallel, {m.scenes} scenes, {m.concurrency} at once"
    return (
        f"| ~{m.target_tokens:,} | {label} | {m.calls} | {m.wall_s:.1f} | {m.first_scene_s:.1f} | "
        f"{m.input_tokens:,} | {m.output_tokens:,} | {m.cache_read_tokens:,} | {m.cache_write_tokens:,} | "
        f"{m.dollars:.4f} |"
    )


def _report(measures: list[Measure], *, concurrency: int) -> str:
    lines = [
        "# Parallel mode: single-pass streaming against outline + scenes at once",
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.machine()}, {os.cpu_count()} cores "
        f"(shared), Python {platform.python_version()}, with `python -m bench.parallel_mode`.",
        f"Fake model: TTFT {TTFT * 1000:.0f} ms, {TOKENS_PER_SECOND:.0f} output tokens/s, prompt cache "
        f"on (min {MODELS[MODEL].min_cache_tokens:,} tokens), a fresh server and cache for each run. Model prices: {MODEL}. Default parallel "
        f"concurrency: {concurrency}. One run per row (the fake's pacing is deterministic).",
        "",
        "| output tokens | mode | calls | wall s | first scene s | input | output | cache read | "
        "cache write | dollars |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *[_row(m) for m in measures],
        "",
        "| output tokens | parallel scenes | at once | wall time vs single | dollars vs single |",
        "|---|---|---|---|---|",
    ]
    for size in SIZES:
        single = next(m for m in measures if m.target_tokens == size and m.mode == "single")
        for m in measures:
            if m.target_tokens == size and m.mode == "parallel":
                ratio_time = m.wall_s / single.wall_s
                ratio_cost = m.dollars / single.dollars if single.dollars else float("nan")
                lines.append(
                    f"| ~{size:,} | {m.scenes} | {m.concurrency} | {ratio_time:.2f}x | {ratio_cost:.2f}x |"
                )
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    # `python -m bench.parallel_mode` sets up the child process, which runs the measurements.
    _run() if os.environ.get("BENCH_PARALLEL_CHILD") else main()
