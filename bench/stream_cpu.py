"""CPU per streamed output token in the daphne process, before and after: `make bench`
(python -m bench.stream_cpu).

Real parts: daphne serving the project on PostgreSQL (in-memory channel layer: one process), the real
anthropic SDK inside daphne talking to bench/fake_server.py. "before" is daphne serving a git worktree of
the commit before issue 19's streaming work (BENCH_BEFORE_COMMIT, checked out at BENCH_BEFORE_ROOT when
missing); "after" is this checkout as a busy process runs it: paced reads from
STORY_STREAM_PACED_READ_STREAMS streams whatever the load (STORY_STREAM_PACED_READ_BUSY_PERCENT=0), as
it does once its CPU reaches that threshold; "after, default" is this checkout with its defaults, which
at this load (the process under 95 % of a core) reads every event as it comes, for latency. All run in the same
invocation, against the same fake and PostgreSQL server, one after the other; "before" on a copy of the
database migrated back to its own schema (it cannot write the columns added since).

Per variant: one warm-up generation (not counted), then three phases, each read as daphne's user+system
CPU time from /proc around it: ``SEQUENTIAL`` long generations one at a time, ``CONCURRENT`` long ones
at once (py-spy samples daphne meanwhile, from outside, ``--nonblocking``: it stops nothing and adds no
CPU time to daphne), and ``CONCURRENT`` one-scene ones at once. Output tokens are the fake's (text
length / 4). The marginal figure, (long - short CPU) / (long - short tokens), leaves out what a
generation costs whatever its length (admission, contexts, save).

CPU time rather than wall time: the machine is shared, and waiting for a core does not count in CPU time
(it still does a little through caches and frequency). Benchmarks print figures; nothing here asserts.
"""

from __future__ import annotations

import asyncio
import collections
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from bench import harness
from bench.flow import DATABASE_URL, SERVER_ENV, Fake, fake_server
from bench.screenplays import marker
from bench.ws_client import Generation, ws_generate, ws_open
from stories.generation.models_registry import DEFAULT_MODEL

BEFORE_COMMIT = os.environ.get("BENCH_BEFORE_COMMIT", "2510543")
BEFORE_ROOT = Path(
    os.environ.get("BENCH_BEFORE_ROOT", str(harness.ROOT.parent / f"{harness.ROOT.name}-before"))
)
TTFT_MS = float(os.environ.get("BENCH_STREAM_TTFT_MS", "200"))
TOKENS_PER_SECOND = float(os.environ.get("BENCH_STREAM_TOKENS_PER_SECOND", "120"))
CHUNK_CHARS = int(os.environ.get("BENCH_CHUNK_CHARS", "12"))
SEQUENTIAL = int(os.environ.get("BENCH_STREAM_SEQUENTIAL", "2"))
CONCURRENT = int(os.environ.get("BENCH_STREAM_CONCURRENT", "20"))
LONG_SCENES, SHORT_SCENES, LINES, PERSONAS = 8, 1, 4, 3
PROFILE_LINES = 15
_SPY_OPTIONS = ("--format", "raw", "--gil", "--nonblocking", "--rate", "200", "--output")
RESULTS = harness.ROOT / "bench" / "results" / "stream_cpu.md"
# (label, checkout, extra environment of its daphne): see the module docstring.
VARIANTS: tuple[tuple[str, Path, dict[str, str]], ...] = (
    ("before", BEFORE_ROOT, {}),
    ("after", harness.ROOT, {"STORY_STREAM_PACED_READ_BUSY_PERCENT": "0"}),
    ("after, default", harness.ROOT, {}),
)


def main() -> None:
    """Make sure of PostgreSQL and the before checkout, then measure in a child process (its own Django)."""
    harness.postgres_ensure(DATABASE_URL)
    if not (BEFORE_ROOT / "manage.py").exists():
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(BEFORE_ROOT), BEFORE_COMMIT],
            cwd=harness.ROOT,
            check=True,
        )
    env = {**os.environ, **SERVER_ENV, "DATABASE_URL": DATABASE_URL, "BENCH_STREAM_CHILD": "1"}
    env.pop("REDIS_URL", None)
    subprocess.run([sys.executable, "-m", "bench.stream_cpu"], cwd=harness.ROOT, env=env, check=True)


@dataclass
class Phase:
    name: str
    generations: int
    errors: int
    cpu_seconds: float
    split: tuple[float, float, float]  # user, system, the event loop's thread (user + system)
    tokens: int
    delta_frames: int

    def ms_per_kilotoken(self) -> float:
        return self.cpu_seconds * 1e6 / max(self.tokens, 1)


def _run() -> None:
    import django

    django.setup()
    sessions, personas = _writers_prepare()
    databases = {"before": _before_database(), "after": DATABASE_URL}
    lines = [
        "# CPU per streamed output token in the daphne process: before and after",
        "",
        *harness.machine_describe(),
    ]
    lines += [
        f"- before: commit {BEFORE_COMMIT} (main before the streaming work), served from {BEFORE_ROOT}; "
        "after: this checkout as a busy process runs it (paced reads whatever the load: "
        "`STORY_STREAM_PACED_READ_BUSY_PERCENT=0`); after, default: this checkout's defaults (at this "
        "load, the process under 95 % of a core, every event read as it comes); same run, same fake, same "
        "PostgreSQL (before on a copy of the database at its own schema)",
        f"- model: bench/fake_server.py, TTFT {TTFT_MS:.0f} ms, {TOKENS_PER_SECOND:.0f} tokens/s, text deltas "
        f"of {CHUNK_CHARS} characters (about 3 tokens); the real anthropic SDK inside daphne",
        "- command: `make bench` (`python -m bench.stream_cpu`)",
        f"- load average at the start (1, 5, 15 min): {_load()}: the cores are shared with other work. CPU "
        "time (not wall time) is reported, which waiting for a core does not inflate",
        "",
    ]
    results: dict[str, list[Phase]] = {}
    profiles: dict[str, list[str]] = {}
    with fake_server(ttft_ms=TTFT_MS, tokens_per_second=TOKENS_PER_SECOND, chunk_chars=CHUNK_CHARS) as fake:
        for label, root, extra in VARIANTS:
            database = databases["before" if label == "before" else "after"]
            results[label], profiles[label] = _variant(root, fake, sessions, personas, database, extra)
            print(label, results[label], flush=True)
    lines += _table(results) + _profiles(profiles)
    lines.append(f"Load average at the end (1, 5, 15 min): {_load()}.")
    RESULTS.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines), flush=True)
    print(f"Written to {RESULTS.relative_to(harness.ROOT)}")


def _writers_prepare() -> tuple[list[str], list[str]]:
    """Migrate; ``CONCURRENT`` signed-in writers (their session cookies) and the personas (idempotent)."""
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.test import Client

    from stories.models import Story

    call_command("migrate", verbosity=0, interactive=False)
    Story.objects.filter(owner__username__startswith="bench-stream-").delete()
    sessions = []
    for index in range(CONCURRENT):
        client = Client()
        client.force_login(get_user_model().objects.get_or_create(username=f"bench-stream-{index:03d}")[0])
        sessions.append(client.cookies["sessionid"].value)
    return sessions, harness.personas_ensure(count=PERSONAS)


def _before_database() -> str:
    """A copy of the prepared database (writers, sessions, personas) at the before checkout's schema.

    The before code does not know the columns added since (``checkpoint``, ``origin``...), which have
    no default in the database, so it cannot insert into the tables as they are now. The copy is
    migrated back, by this checkout's migrations, to the last migration of each app the before
    checkout has.
    """
    from django.db import connections

    # A template database must have no other connection: this process's pooled ones closed too.
    connections.close_all()
    close_pool = getattr(connections["default"], "close_pool", None)  # PostgreSQL's backend has one
    if close_pool is not None:
        close_pool()
    parsed = urlparse(DATABASE_URL)
    name = parsed.path.lstrip("/")
    copy = f"{name}_before"
    psql = ["psql", "-h", parsed.hostname or "127.0.0.1", "-p", str(parsed.port or 5432)]
    psql += ["-U", parsed.username or "postgres", "-q", "-c"]
    subprocess.run([*psql, f'DROP DATABASE IF EXISTS "{copy}"'], check=True, capture_output=True)
    for attempt in range(20):
        # A connection just closed may take a moment to leave the server, and a template in use fails.
        made = subprocess.run([*psql, f'CREATE DATABASE "{copy}" TEMPLATE "{name}"'], capture_output=True)
        if made.returncode == 0:
            break
        if attempt == 19:
            raise RuntimeError(f"could not copy the database: {made.stderr.decode()[:300]}")
        time.sleep(0.5)
    url = parsed._replace(path=f"/{copy}").geturl()
    for folder in sorted(BEFORE_ROOT.glob("*/migrations")):
        last = max((path.stem for path in folder.glob("[0-9]*.py")), default=None)
        if last is not None:
            subprocess.run(
                [sys.executable, "manage.py", "migrate", "-v", "0", folder.parent.name, last],
                cwd=harness.ROOT,
                env={**os.environ, "DATABASE_URL": url},
                check=True,
            )
    return url


def _variant(
    root: Path, fake: Fake, sessions: list[str], personas: list[str], database_url: str, extra: dict[str, str]
) -> tuple[list[Phase], list[str]]:
    env = {
        **extra,
        "ANTHROPIC_API_KEY": "sk-ant-bench-fake-key",
        "ANTHROPIC_BASE_URL": fake.base,
        "STORY_BACKEND": "stories.generation.backends.anthropic.AnthropicBackend",
        "STORY_MODEL": DEFAULT_MODEL,
        "STORY_MAX_ACTIVE_PER_USER": "1000",
        "STORY_GENERATIONS_PER_HOUR": "100000",
        "STORY_DEFAULT_MODE": "single",
    }
    with harness.daphne_process(env={**SERVER_ENV, "DATABASE_URL": database_url, **env}, root=root) as (
        base,
        pid,
    ):
        asyncio.run(_generations(base, sessions[:1], personas, LONG_SCENES))  # warm-up
        target = Target(fake=fake, pid=pid, base=base, personas=personas)
        phases = [
            _phase(
                f"{SEQUENTIAL} one at a time, {LONG_SCENES} scenes",
                target,
                sessions[:1] * SEQUENTIAL,
                scenes=LONG_SCENES,
                at_once=False,
            )
        ]
        profile = harness.ROOT / "bench" / "results" / f".stream_cpu_{root.name}.txt"
        spy = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "py-spy"),
                "record",
                "--pid",
                str(pid),
                *_SPY_OPTIONS,
                str(profile),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            name = f"{CONCURRENT} at once, {LONG_SCENES} scenes"
            phases.append(_phase(name, target, sessions, scenes=LONG_SCENES, at_once=True))
        finally:
            spy.send_signal(2)  # SIGINT: py-spy writes what it sampled
            spy.wait(timeout=60)
        name = f"{CONCURRENT} at once, {SHORT_SCENES} scene"
        phases.append(_phase(name, target, sessions, scenes=SHORT_SCENES, at_once=True))
    top = _profile_top(profile)
    if os.environ.get("BENCH_STREAM_KEEP_PROFILES"):
        profile.rename(Path(os.environ["BENCH_STREAM_KEEP_PROFILES"]) / profile.name.lstrip("."))
    profile.unlink(missing_ok=True)
    return phases, top


@dataclass(frozen=True)
class Target:
    """The daphne process a phase runs against, and what its generations ask for."""

    fake: Fake
    pid: int
    base: str
    personas: list[str]


def _phase(name: str, target: Target, sessions: list[str], *, scenes: int, at_once: bool) -> Phase:
    fake, base, personas = target.fake, target.base, target.personas
    fake.clear()
    before, split_before = harness.process_usage(target.pid).cpu_seconds, _cpu_split(target.pid)
    if at_once:
        generations = asyncio.run(_generations(base, sessions, personas, scenes))
    else:
        generations = [asyncio.run(_generations(base, [s], personas, scenes))[0] for s in sessions]
    cpu = harness.process_usage(target.pid).cpu_seconds - before
    split = tuple(b - a for a, b in zip(split_before, _cpu_split(target.pid), strict=True))
    records = fake.records()
    return Phase(
        name=name,
        generations=len(generations),
        errors=sum(1 for g in generations if g.error or g.done_at is None),
        cpu_seconds=cpu,
        split=(split[0], split[1], split[2]),
        tokens=sum(record["output_tokens"] for record in records.values()),
        delta_frames=sum(g.delta_frames for g in generations),
    )


def _cpu_split(pid: int) -> tuple[float, float, float]:
    """User and system CPU seconds of the process, and the CPU seconds of its main (event loop) thread."""
    ticks = os.sysconf("SC_CLK_TCK")

    def times(path: str) -> tuple[float, float]:
        fields = Path(path).read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) / ticks, int(fields[12]) / ticks

    user, system = times(f"/proc/{pid}/stat")
    return user, system, sum(times(f"/proc/{pid}/task/{pid}/stat"))


async def _generations(base: str, sessions: list[str], personas: list[str], scenes: int) -> list[Generation]:
    """One generation per session, all at once, each on its own socket."""

    async def one(session: str) -> Generation:
        run_id = uuid.uuid4().hex[:12]
        generation = Generation(run_id=run_id, started_at=time.monotonic())
        tag = marker(run_id=run_id, personas=personas, scenes=scenes, lines=LINES)
        try:
            socket = await ws_open(base=base, session_cookie=session)
        except Exception as error:  # counted as an error of that generation
            generation.error = f"connect: {type(error).__name__}: {error}"[:200]
            return generation
        async with socket:
            plot = f"A buried promise comes back into the light. {tag}"
            return await ws_generate(socket, generation=generation, plot=plot, personas=personas, timeout=300)

    return list(await asyncio.gather(*(one(session) for session in sessions)))


def _table(results: dict[str, list[Phase]]) -> list[str]:
    lines = [
        "## CPU per 1,000 output tokens",
        "",
        "daphne's user+system CPU over each phase, divided by the output tokens the fake model streamed "
        "in it. Marginal: (long - short phase CPU) / (long - short phase tokens), both at "
        f"{CONCURRENT} at once: what one more streamed token costs.",
        "",
        "| phase | variant | generations | errors | CPU (s) | user / system / event-loop thread (s) "
        "| output tokens | `delta` frames | CPU ms / 1,000 tokens |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for index, phase in enumerate(results["before"]):
        for label in results:
            p = results[label][index]
            lines.append(
                f"| {phase.name} | {label} | {p.generations} | {p.errors} | {p.cpu_seconds:.2f} "
                f"| {' / '.join(f'{value:.2f}' for value in p.split)} | {p.tokens} "
                f"| {p.delta_frames} | {p.ms_per_kilotoken():.0f} |"
            )
    others = [label for label in results if label != "before"]
    lines += [
        "",
        f"| figure | before | {' | '.join(others)} | {' | '.join(f'before / {label}' for label in others)} |",
        f"|---|---:|{'---:|' * (2 * len(others))}",
    ]
    figures = {label: _figures(phases) for label, phases in results.items()}
    for name in figures["before"]:
        old = figures["before"][name]
        values = " | ".join(f"{figures[label][name]:.0f}" for label in others)
        ratios = " | ".join(f"{old / max(figures[label][name], 1e-9):.1f}x" for label in others)
        lines.append(f"| {name} | {old:.0f} | {values} | {ratios} |")
    return [*lines, ""]


def _figures(phases: list[Phase]) -> dict[str, float]:
    sequential, concurrent, short = phases
    marginal = (concurrent.cpu_seconds - short.cpu_seconds) * 1e6 / max(concurrent.tokens - short.tokens, 1)
    return {
        "CPU ms / 1,000 tokens, one at a time": sequential.ms_per_kilotoken(),
        f"CPU ms / 1,000 tokens, {CONCURRENT} at once": concurrent.ms_per_kilotoken(),
        "marginal CPU ms / 1,000 tokens": marginal,
        f"`delta` frames per generation ({CONCURRENT} at once, long)": concurrent.delta_frames
        / max(concurrent.generations, 1),
    }


# Where a sample's own frame is, by the path in it: the first area that matches.
_AREAS = (
    ("SDK: SSE decoding, pydantic models", ("anthropic/", "pydantic")),
    ("upstream HTTP (httpx2, httpcore2, anyio, h11)", ("httpx", "httpcore", "anyio/", "h11/", "sniffio")),
    ("WebSocket out (twisted, autobahn, daphne)", ("twisted/", "autobahn/", "daphne/", "txaio")),
    ("Channels, asgiref, Django", ("channels/", "asgiref/", "django/")),
    ("the project (stories, personas, storyproject)", ("stories/", "personas/", "storyproject/")),
    ("database (psycopg)", ("psycopg",)),
    ("thread pool", ("concurrent/futures", "threading.py")),
    ("JSON", ("json/", "jiter")),
    ("event loop (asyncio, selectors)", ("asyncio/", "selectors.py")),
)


def _profile_top(path: Path) -> list[str]:
    """Where daphne spent its samples, by area and by function (own time), from py-spy's raw output."""
    if not path.exists():
        return ["(py-spy wrote no profile)"]
    own: collections.Counter[str] = collections.Counter()
    areas: collections.Counter[str] = collections.Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        leaf = stack.rsplit(";", 1)[-1]
        own[leaf] += int(count)
        areas[next((name for name, marks in _AREAS if any(m in leaf for m in marks)), "other")] += int(count)
    total = max(sum(own.values()), 1)
    return [
        *(f"{count * 100 / total:5.1f}%  {area}" for area, count in areas.most_common()),
        "",
        *(f"{count * 100 / total:5.1f}%  {frame}" for frame, count in own.most_common(PROFILE_LINES)),
    ]


def _profiles(profiles: dict[str, list[str]]) -> list[str]:
    lines = [
        "## Profiles (py-spy, own time, the long phase at once)",
        "",
        "`py-spy record --format raw --gil --nonblocking --rate 200 --pid <daphne>` during the "
        f"{CONCURRENT}-at-once long phase; the top {PROFILE_LINES} functions by samples in the function "
        "itself, after the same samples summed by area (the library the function is in). `--gil`: only "
        "samples holding the GIL, so Python at work, not the event loop waiting in select; "
        "`untilConcludes` is twisted writing to a socket (the WebSocket frames).",
        "",
    ]
    for label, top in profiles.items():
        lines += [f"### {label}", "", "```", *top, "```", ""]
    return lines


def _load() -> str:
    return ", ".join(f"{value:.1f}" for value in os.getloadavg())


if __name__ == "__main__":
    _run() if os.environ.get("BENCH_STREAM_CHILD") else main()
