"""Steady state: K generations streaming at any moment, for a set time (`python -m bench.steady`).

The burst in bench/flow.py starts every generation at the same instant; real writers arrive spread
out. Here K client slots each run one generation after another for ``--seconds``: slot i starts its
first after i/K of one generation's length, so starts are spread evenly and about K streams are open at
any moment, each at the fake model's pace (bench/fake_server.py, as bench.flow paces it). Every
generation opens its own WebSocket, as the create page does. Figures cover the generations started
after the ramp (the first generation length) and before the end; the open-stream count is sampled
every half second over that window.

Per generation: **overhead** = send to `done` minus the model's own stream time; **first token lag** =
client's first `delta` minus the model's first text; **first scene lag** = client's first `scene`
minus the model's writing of the text that ends it; **first scene beyond model** = client's time from
send to first `scene` minus the model's own time to its first scene (all as in bench.flow); each
configuration's note splits the overhead into its two ends: **before the model call** (send to the
fake receiving the request: the socket's session, the admission, the request) and **after its end**
(the fake's last event to `done`: the last read, the check and the save). Server:
CPU (user + system, every server process) over the whole measured run divided by the output tokens
the model streamed in it, each process's peak RSS, and its event loop's lag over the run
(``story_event_loop_lag_seconds`` from /metrics, which the servers serve here: they count every
finished run, from what its save wrote).

`make bench` runs K=200 on one daphne process and K=400 on two processes under `make serve`'s
supervisor (storyproject/serve.py), 60 s each; ``--streams K --seconds S --processes 1,2`` runs K
streams on each process count given (BENCH_DATABASE_URL, BENCH_REDIS_URL as in bench.flow). Results:
bench/results/steady.md.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import httpx
from prometheus_client.parser import text_string_to_metric_families

from bench.flow import (
    DATABASE_URL,
    LINES,
    LOAD_PERSONAS,
    MODEL,
    REDIS_URL,
    SCENES,
    SERVER_ENV,
    TOKENS_PER_SECOND,
    TTFT_MS,
    Fake,
    fake_server,
)
from bench.harness import (
    ROOT,
    daphne_process,
    free_port,
    machine_describe,
    personas_ensure,
    postgres_ensure,
    process_usage,
    redis_reachable,
)
from bench.screenplays import marker
from bench.ws_client import Generation, ws_generate, ws_open

RESULTS = ROOT / "bench" / "results" / "steady.md"
# `make bench`: (streams, server processes); 60 s each.
DEFAULT_CONFIGS = ((200, 1), (400, 2))
DEFAULT_SECONDS = 60.0
_CHILD = "BENCH_STEADY_CHILD"
# `make serve` refuses a configuration that fails `check --deploy`; the bench speaks plain HTTP.
_NO_TLS_CHECKS = "security.W004,security.W008,security.W012,security.W016"
# bench.flow's key is too short for `check --deploy`; the bench and its servers share this one (the
# sessions the bench signs in must be readable by the servers). A benchmark key, secret of nothing.
_SECRET_KEY = "bench-steady-only-key-0123456789-abcdefghijklmnopqrstuvwxyz-not-a-secret"
_METRICS_TOKEN = "bench-steady-metrics-token"


@dataclass
class Window:
    """The steady part of a run: generations started after the ramp and before the end."""

    starts_after: float
    ends_at: float
    open_streams: list[int] = field(default_factory=list)


def main(argv: list[str] | None = None) -> None:
    """Run in a child process (its own Django settings), as bench.flow does."""
    options = _arguments(argv)
    postgres_ensure(DATABASE_URL)
    if problem := redis_reachable(REDIS_URL):
        raise SystemExit(f"bench.steady needs Redis (the channel layer of several processes): {problem}")
    env = {**os.environ, **SERVER_ENV, "DATABASE_URL": DATABASE_URL, "REDIS_URL": REDIS_URL, _CHILD: "1"}
    env["DJANGO_SECRET_KEY"] = _SECRET_KEY
    subprocess.run([sys.executable, "-m", "bench.steady", *_argv(options)], cwd=ROOT, env=env, check=True)


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.steady", description=__doc__.split("\n")[0])
    parser.add_argument("--streams", type=int, help="streams open at any moment (default: 200, then 400)")
    parser.add_argument("--seconds", type=float, default=DEFAULT_SECONDS, help="how long to keep them open")
    parser.add_argument(
        "--processes", default="1", help="server processes, or several runs: 1,2 (2+: under make serve)"
    )
    parser.add_argument("--scenes", type=int, default=SCENES, help=f"scenes a generation (default {SCENES})")
    parser.add_argument("--lines", type=int, default=LINES, help=f"dialogue lines a scene (default {LINES})")
    options = parser.parse_args(argv)
    if not 1 <= options.scenes <= 40 or not 1 <= options.lines <= 40:
        parser.error("--scenes and --lines must be between 1 and 40")
    if options.streams is not None and not 1 <= options.streams <= 1000:
        parser.error("--streams must be between 1 and 1000")
    try:
        options.process_counts = [int(count) for count in options.processes.split(",")]
    except ValueError:
        parser.error("--processes must be a number or a comma-separated list of numbers")
    if not all(1 <= count <= 16 for count in options.process_counts):
        parser.error("--processes must be between 1 and 16")
    return options


def _argv(options: argparse.Namespace) -> list[str]:
    """The command line that reproduces this run (without --streams, --processes is not used)."""
    argv = ["--seconds", f"{options.seconds:g}"]
    if (options.scenes, options.lines) != (SCENES, LINES):
        argv += ["--scenes", str(options.scenes), "--lines", str(options.lines)]
    if options.streams is None:
        return argv
    return [*argv, "--processes", options.processes, "--streams", str(options.streams)]


def _run(options: argparse.Namespace) -> None:
    import django

    django.setup()
    if options.streams:
        configs = [(options.streams, count) for count in options.process_counts]
    else:
        configs = list(DEFAULT_CONFIGS)
    names, sessions = _data_prepare(max(streams for streams, _ in configs))
    lines = [
        "# Steady state: K generations streaming at any moment",
        "",
        *machine_describe(),
        f"- model: bench/fake_server.py, TTFT {TTFT_MS:.0f} ms, {TOKENS_PER_SECOND:.0f} tokens/s; "
        f"{LOAD_PERSONAS} personas, {options.scenes} scenes of {options.lines} lines a generation; one WebSocket "
        "each",
        f"- command: `python -m bench.steady {' '.join(_argv(options))}`",
        f"- load average at the start (1, 5, 15 min): {_load()}: the cores are shared with other work",
        "",
        "Figures of the generations started after the ramp; ms: p50 / p95 / max. CPU per token: every "
        "server process's user + system time over the measured run, divided by the output tokens the model "
        "streamed in it.",
        "",
        "| streams (K) | processes | seconds | open streams (mean / min) | generations | errors | overhead "
        "| first token lag | first scene lag | first scene beyond model | CPU per token (ms) "
        "| CPU (% of a core) | peak RSS (MB) |",
        "|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    notes: list[str] = []
    with fake_server() as fake:
        for streams, processes in configs:
            row, note = _configuration(
                fake, names, sessions, streams, processes, options.seconds, (options.scenes, options.lines)
            )
            lines.append(row)
            notes.append(note)
            print(row, flush=True)
    lines += ["", *notes, "", f"Load average at the end (1, 5, 15 min): {_load()}."]
    RESULTS.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"Written to {RESULTS.relative_to(ROOT)}")


def _data_prepare(writers: int) -> tuple[list[str], list[str]]:
    """Migrate, make the personas and one signed-in writer per stream (idempotent)."""
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client

    from stories.models import GenerationRun, Story

    call_command("migrate", verbosity=0, interactive=False)
    names = personas_ensure(count=LOAD_PERSONAS)
    users = get_user_model().objects
    Story.objects.filter(owner__username__startswith="bench-steady-").delete()
    GenerationRun.objects.filter(user__username__startswith="bench-steady-").delete()
    if connection.vendor == "postgresql":
        # What earlier runs updated and deleted, reclaimed, tables and indexes compacted: a run does not
        # depend on how many ran before it (after a dozen runs the runs table held 36,112 dead rows
        # against 1,116 live ones, in 24 MB).
        with connection.cursor() as cursor:
            cursor.execute("VACUUM FULL ANALYZE")
    sessions = []
    for index in range(writers):
        client = Client()
        client.force_login(users.get_or_create(username=f"bench-steady-{index:03d}")[0])
        sessions.append(client.cookies["sessionid"].value)
    return names, sessions


def _server_env(fake: Fake) -> dict[str, str]:
    return {
        **SERVER_ENV,
        "DATABASE_URL": DATABASE_URL,
        "REDIS_URL": REDIS_URL,
        "ANTHROPIC_API_KEY": "sk-ant-bench-fake-key",
        "ANTHROPIC_BASE_URL": fake.base,
        "STORY_BACKEND": "stories.generation.backends.anthropic.AnthropicBackend",
        "STORY_MODEL": MODEL,
        "STORY_DEFAULT_MODE": "single",
        # A writer per stream: the per-user limits would refuse a load test otherwise.
        "STORY_MAX_ACTIVE_PER_USER": "1000",
        "STORY_GENERATIONS_PER_HOUR": "100000",
        "DJANGO_SILENCED_SYSTEM_CHECKS": _NO_TLS_CHECKS,
        "DJANGO_SECRET_KEY": _SECRET_KEY,
        "METRICS_TOKEN": _METRICS_TOKEN,
    }


@contextmanager
def _servers(env: dict[str, str], processes: int) -> Iterator[tuple[str, list[int]]]:
    """One daphne process, or ``processes`` under the supervisor of `make serve`; (base URL, their pids)."""
    if processes == 1:
        with daphne_process(env=env) as (base, pid):
            yield base, [pid]
        return
    port = free_port()
    command = [sys.executable, "-m", "storyproject.serve", "--port", str(port), "--processes", str(processes)]
    # A scrape reaches one process: with this directory it reports the sum (docs/operations.md).
    metrics_dir = tempfile.TemporaryDirectory(prefix="bench-steady-metrics-")
    env = {**env, "PROMETHEUS_MULTIPROC_DIR": metrics_dir.name}
    supervisor = subprocess.Popen([*command, "-v", "0"], cwd=ROOT, env={**os.environ, **env})
    base = f"http://127.0.0.1:{port}"
    try:
        _wait(lambda: len(_children(supervisor.pid)) == processes and _answers(base), supervisor)
        yield base, _children(supervisor.pid)
    finally:
        supervisor.terminate()
        supervisor.wait(timeout=120)
        metrics_dir.cleanup()


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as children:
            return [int(child) for child in children.read().split()]
    except OSError:
        return []


def _answers(base: str) -> bool:
    try:
        return httpx.get(base + "/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _wait(ready: Callable[[], object], supervisor: subprocess.Popen[bytes], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if supervisor.poll() is not None:
            raise RuntimeError(f"make serve's supervisor exited with code {supervisor.returncode}")
        if ready():
            return
        time.sleep(0.3)
    raise RuntimeError("the servers did not start in time")


def _configuration(
    fake: Fake,
    names: list[str],
    sessions: list[str],
    streams: int,
    processes: int,
    seconds: float,
    shape: tuple[int, int],
) -> tuple[str, str]:
    with _servers(_server_env(fake), processes) as (base, pids):
        # Warm-up, not counted: each process's first generation loads code; it also gives the length.
        warm = [asyncio.run(_one(base, sessions[0], names, shape)) for _ in range(processes * 2)]
        if any(g.error or g.done_at is None for g in warm):
            raise RuntimeError(f"the warm-up generation failed: {warm[0].error}")
        length = min(g.done_at - g.sent_at for g in warm)  # type: ignore[operator]
        fake.clear()
        lag_before = _loop_lag(base)
        before = [process_usage(pid) for pid in pids]
        started = time.monotonic()
        window = Window(starts_after=started + length, ends_at=started + seconds)
        generations = asyncio.run(_steady(base, sessions[:streams], names, length, window, shape))
        wall = time.monotonic() - started
        after = [process_usage(pid) for pid in pids]
        lag = _lag_spread(lag_before, _loop_lag(base))
    records = fake.records()
    cpu = sum(a.cpu_seconds - b.cpu_seconds for a, b in zip(after, before, strict=True))
    tokens = sum(record["output_tokens"] for record in records.values())
    steady = [g for g in generations if window.starts_after <= g.started_at < window.ends_at]
    ok = [g for g in steady if not g.error and g.run_id in records and g.done_at is not None]
    samples = _samples(ok, records)
    open_streams = window.open_streams or [0]
    rss = " + ".join(f"{usage.peak_rss_mb:.0f}" for usage in after)
    row = (
        f"| {streams} | {processes} | {seconds:.0f} | {sum(open_streams) / len(open_streams):.0f} / "
        f"{min(open_streams)} | {len(steady)} | {len(steady) - len(ok)} | {_spread(samples['overhead'])} "
        f"| {_spread(samples['lag'])} | {_spread(samples['scene lag'])} | {_spread(samples['scene'])} "
        f"| {cpu * 1000 / max(tokens, 1):.2f} "
        f"| {cpu / wall * 100:.0f}% | {rss} |"
    )
    first_error = next((g.error for g in generations if g.error), "none")
    note = (
        f"- K={streams} on {processes} process(es): one generation took {length:.1f} s alone; "
        f"{len(generations)} generations in all ({len(steady)} in the steady window), {tokens} output "
        f"tokens, {cpu:.1f} s of server CPU over {wall:.0f} s; before the model call "
        f"{_spread(samples['before model'])} ms, after its end {_spread(samples['after model'])} ms; "
        f"the servers' event loop lag {lag}; first error: {first_error}."
    )
    return row, note


def _samples(ok: list[Generation], records: dict[str, dict[str, float]]) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {
        "overhead": [],
        "lag": [],
        "scene lag": [],
        "scene": [],
        "before model": [],
        "after model": [],
    }
    for g in ok:
        record = records[g.run_id]
        model = record["ended_at"] - record["received_at"]
        samples["before model"].append((record["received_at"] - g.sent_at) * 1000)
        samples["after model"].append(((g.done_at or 0) - record["ended_at"]) * 1000)
        samples["overhead"].append(((g.done_at or 0) - g.sent_at - model) * 1000)
        if g.first_delta_at is not None and record["first_token_at"] is not None:
            samples["lag"].append((g.first_delta_at - record["first_token_at"]) * 1000)
        if g.first_scene_at is not None and record["first_scene_at"] is not None:
            samples["scene lag"].append((g.first_scene_at - record["first_scene_at"]) * 1000)
            model_scene = record["first_scene_at"] - record["received_at"]
            samples["scene"].append((g.first_scene_at - g.sent_at - model_scene) * 1000)
    return samples


async def _steady(
    base: str, sessions: list[str], names: list[str], length: float, window: Window, shape: tuple[int, int]
) -> list[Generation]:
    """``len(sessions)`` slots, starts spread over one generation's length, until the window ends."""
    done: list[Generation] = []
    open_now = [0]

    async def slot(index: int) -> None:
        await asyncio.sleep(index * length / len(sessions))
        while time.monotonic() < window.ends_at:
            open_now[0] += 1
            try:
                done.append(await _one(base, sessions[index], names, shape))
            finally:
                open_now[0] -= 1

    async def sample() -> None:
        while True:
            await asyncio.sleep(0.5)
            if window.starts_after <= time.monotonic() < window.ends_at:
                window.open_streams.append(open_now[0])

    sampler = asyncio.ensure_future(sample())
    try:
        await asyncio.gather(*(slot(index) for index in range(len(sessions))))
    finally:
        sampler.cancel()
    return done


async def _one(base: str, session: str, names: list[str], shape: tuple[int, int]) -> Generation:
    run_id = uuid.uuid4().hex[:12]
    generation = Generation(run_id=run_id, started_at=time.monotonic())
    plot = "An old photograph brings a family's buried promise back into the light. "
    plot += marker(run_id=run_id, personas=names, scenes=shape[0], lines=shape[1])
    try:
        socket = await ws_open(base=base, session_cookie=session)
    except Exception as error:  # counted as an error of that generation
        generation.error = f"connect: {type(error).__name__}: {error}"[:200]
        await asyncio.sleep(1)
        return generation
    async with socket:
        return await ws_generate(socket, generation=generation, plot=plot, personas=names, timeout=180)


def _loop_lag(base: str) -> dict[float, float]:
    """The servers' loop lag histogram from /metrics: observations at or under each bound (s)."""
    response = httpx.get(base + "/metrics", headers={"Authorization": f"Bearer {_METRICS_TOKEN}"}, timeout=30)
    response.raise_for_status()
    return {
        float(sample.labels["le"]): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
        if sample.name == "story_event_loop_lag_seconds_bucket"
    }


def _lag_spread(before: dict[float, float], after: dict[float, float]) -> str:
    """p50 / p95 of the observations between two scrapes, as the histogram's bucket bounds."""
    counts = sorted((bound, after[bound] - before.get(bound, 0.0)) for bound in after)
    total = counts[-1][1] if counts else 0.0
    if not total:
        return "not measured"

    def bound(share: float) -> str:
        limit = next(upper for upper, count in counts if count >= share * total)
        return "over 5 s" if math.isinf(limit) else f"≤ {limit * 1000:g} ms"

    return f"p50 {bound(0.5)}, p95 {bound(0.95)} ({total:.0f} timers, every 0.5 s)"


def _spread(values: list[float]) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    p95 = ordered[max(math.ceil(0.95 * len(ordered)) - 1, 0)]
    return f"{ordered[len(ordered) // 2]:.0f} / {p95:.0f} / {ordered[-1]:.0f}"


def _load() -> str:
    return ", ".join(f"{value:.1f}" for value in os.getloadavg())


if __name__ == "__main__":
    _run(_arguments(sys.argv[1:])) if os.environ.get(_CHILD) == "1" else main(sys.argv[1:])
