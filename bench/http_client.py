"""CPU per network read of a model stream, through the SDK's two HTTP transports (`python -m bench.http_client`).

The model client reads each stream's body through the SDK's HTTP client. "httpx" is the SDK's default
(httpx2 over httpcore2 and anyio: every read enters a cancel scope and resumes and pauses the
transport); "aiohttp" is the SDK's own ``DefaultAioHttpClient`` (the ``anthropic[aiohttp]`` extra: an
asyncio protocol and a C parser), which daphne's event loop uses by default (``STORY_LLM_HTTP_CLIENT``,
stories/generation/backends/anthropic.py). Here, in one process of its own and without daphne: STREAMS
concurrent streamed requests to bench/fake_server.py (TTFT 50 ms, 60 tokens/s, text deltas of 12
characters: about one event per network read, as the API sends them), ROUNDS each, their bodies read raw as the
back-end reads them; the process's CPU time (``time.process_time``) over the whole of it, divided by the
reads and by the events. The two transports take turns, REPEATS times each, in the same run against the
same fake. Results: bench/results/http_client.md.
"""

from __future__ import annotations

import asyncio
import os
import time
from importlib.metadata import version
from pathlib import Path

import anthropic

from bench.fake_server import API_KEY
from bench.flow import DATABASE_URL, SERVER_ENV, fake_server
from bench.harness import ROOT, machine_describe, postgres_ensure

STREAMS = 40
ROUNDS = 2
REPEATS = 2
RESULTS = ROOT / "bench" / "results" / "http_client.md"
_TRANSPORTS = {
    "httpx": anthropic.DefaultAsyncHttpxClient,
    "aiohttp": anthropic.DefaultAioHttpClient,
}
# The fake writes this many scenes of this many lines for these personas (bench/screenplays.py).
_PROMPT = "BENCH[id=http-client;personas=A,B,C;scenes=2;lines=2] Write the screenplay."


async def _streams(transport: str, base: str) -> tuple[float, int, int]:
    """CPU seconds, network reads and events of STREAMS x ROUNDS streamed calls (after one warm-up)."""
    client = anthropic.AsyncAnthropic(
        auth_token=API_KEY, base_url=base, max_retries=0, http_client=_TRANSPORTS[transport]()
    )
    counts = [0, 0]

    async def one_call() -> None:
        async with client.messages.with_streaming_response.create(
            model="claude-sonnet-5-5",
            max_tokens=4000,
            stream=True,
            messages=[{"role": "user", "content": _PROMPT}],
        ) as response:
            async for chunk in response.http_response.aiter_raw():
                counts[0] += 1
                counts[1] += chunk.count(b"\n\n")

    async def slot() -> None:
        for _ in range(ROUNDS):
            await one_call()

    try:
        await one_call()
        counts[:] = [0, 0]
        started = time.process_time()
        await asyncio.gather(*(slot() for _ in range(STREAMS)))
        return time.process_time() - started, counts[0], counts[1]
    finally:
        await client.close()


def main() -> None:
    import django

    # Django only to describe the machine and its versions (PostgreSQL's is asked), as the other benches do.
    postgres_ensure(DATABASE_URL)
    for name, value in {**SERVER_ENV, "DATABASE_URL": DATABASE_URL}.items():
        os.environ.setdefault(name, value)
    django.setup()
    lines = [
        "# CPU per network read of a model stream: the SDK's httpx2 and aiohttp transports",
        "",
        *machine_describe(),
        f"- SDK: anthropic {version('anthropic')}, httpx2 {version('httpx2')}, httpcore2 {version('httpcore2')}, "
        f"aiohttp {version('aiohttp')}",
        f"- model: bench/fake_server.py, TTFT 50 ms, 60 tokens/s, text deltas of 12 characters; {STREAMS} "
        f"streams at once, {ROUNDS} calls each, the transports taking turns {REPEATS} times",
        "- command: `python -m bench.http_client`",
        "",
        "| transport | run | reads | events | CPU (s) | CPU per read (µs) | CPU per event (µs) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    per_read: dict[str, list[float]] = {name: [] for name in _TRANSPORTS}
    with fake_server(ttft_ms=50, tokens_per_second=60, chunk_chars=12) as fake:
        for run in range(1, REPEATS + 1):
            for transport in _TRANSPORTS:
                cpu, reads, events = asyncio.run(_streams(transport, fake.base))
                per_read[transport].append(cpu * 1e6 / reads)
                row = (
                    f"| {transport} | {run} | {reads} | {events} | {cpu:.2f} | {cpu * 1e6 / reads:.0f} "
                    f"| {cpu * 1e6 / events:.0f} |"
                )
                lines.append(row)
                print(row, flush=True)
    httpx_mean = sum(per_read["httpx"]) / REPEATS
    aiohttp_mean = sum(per_read["aiohttp"]) / REPEATS
    lines += [
        "",
        f"CPU per read, mean of the runs: httpx {httpx_mean:.0f} µs, aiohttp {aiohttp_mean:.0f} µs: "
        f"**{httpx_mean / aiohttp_mean:.1f}x** less through aiohttp.",
    ]
    Path(RESULTS).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(lines[-1])
    print(f"Written to {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
