"""Which HTTP transport the model client reads through, on which event loop.

daphne's loop reads the model through the SDK's aiohttp transport (``STORY_LLM_HTTP_CLIENT``, about half
the CPU per network read); every other loop, a command's ``asyncio.run`` or a blocking call's, keeps the
SDK's default httpx2, which needs no closing when its loop ends. Faults through both: test_faults.py.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from typing import Any

import aiohttp
import anthropic
import httpx2
import pytest
from anthropic._vendor.httpx_aiohttp.transport import AiohttpTransport

from stories.generation.backends import anthropic as backend_module
from stories.generation.backends.anthropic import anthropic_client, clients_close
from stories.generation.backends.http_client import LazyReadTimeout
from tests.fake_anthropic import FakeAnthropic, Reply
from tests.stories.generation.conftest import MODEL

# Run in a fresh interpreter: importing daphne.server installs Twisted's asyncio reactor on its own loop.
_ON_DAPHNES_LOOP = """
import django
django.setup()
import daphne.server
from stories.generation.backends.anthropic import anthropic_client, clients_close

async def transport():
    client = anthropic_client()
    await clients_close()
    return type(client._client).__name__

print(daphne.server.twisted_loop.run_until_complete(transport()))
"""


def _transport_on_daphnes_loop(**env: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", _ON_DAPHNES_LOOP],
        env={
            "DJANGO_SETTINGS_MODULE": "storyproject.settings",
            "ANTHROPIC_API_KEY": "sk-ant-test",
            "PATH": "",
            **env,
        },
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_daphnes_loop_reads_the_model_through_aiohttp_unless_told_otherwise() -> None:
    assert _transport_on_daphnes_loop() == "ModelHttpClient"
    assert _transport_on_daphnes_loop(STORY_LLM_HTTP_CLIENT="httpx") == "AsyncHttpxClientWrapper"


def test_another_loop_keeps_the_sdks_default_client(settings: Any) -> None:
    settings.ANTHROPIC_API_KEY = "sk-ant-test"

    async def client_of_this_loop() -> anthropic.AsyncAnthropic:
        client = anthropic_client()
        assert anthropic_client() is client  # one client per loop
        await clients_close()
        return client

    client = asyncio.run(client_of_this_loop())
    assert not isinstance(client._client, anthropic.DefaultAioHttpClient)
    assert isinstance(client._client, anthropic.DefaultAsyncHttpxClient)


@pytest.mark.parametrize("transport", ["httpx", "aiohttp"])
async def test_closing_a_loops_clients_gives_it_a_new_one(
    settings: Any, monkeypatch: Any, transport: str
) -> None:
    from stories.generation.backends import anthropic as backend

    settings.ANTHROPIC_API_KEY = "sk-ant-test"
    monkeypatch.setattr(backend, "_serving_loop", lambda loop: transport == "aiohttp")
    first = anthropic_client()
    assert isinstance(first._client, anthropic.DefaultAioHttpClient) == (transport == "aiohttp")
    await clients_close()
    assert first._client.is_closed
    second = anthropic_client()
    assert second is not first and not second._client.is_closed
    await clients_close()


def _stream_request() -> dict[str, Any]:
    return {
        "model": MODEL,
        "max_tokens": 200,
        "messages": [{"role": "user", "content": "Write."}],
        "timeout": httpx2.Timeout(connect=2, read=1, write=2, pool=2),
    }


async def _streamed(client: anthropic.AsyncAnthropic, watch: list[Any] | None = None) -> str:
    """The reply's text, read through the SDK's stream; ``watch`` gets the connection's read-timeout
    timer as it stands after each text event."""
    text = ""
    async with await client.messages.create(stream=True, **_stream_request()) as stream:
        async for event in stream:
            if event.type == "content_block_delta" and event.delta.type == "text_delta":
                text += event.delta.text
                if watch is not None:
                    transport = client._client._transport
                    assert isinstance(transport, AiohttpTransport)
                    assert isinstance(transport.client, aiohttp.ClientSession)
                    assert transport.client.connector is not None
                    (protocol,) = transport.client.connector._acquired
                    watch.append((type(protocol), protocol._read_timeout_handle))
    return text


async def test_a_model_stream_through_aiohttp_keeps_one_read_timer_not_one_per_read(
    monkeypatch: Any, fake_anthropic: FakeAnthropic
) -> None:
    # aiohttp cancels its idle-read timer and makes a new one for every network read; the model's
    # connections keep one and move its deadline (stories.generation.backends.http_client).
    monkeypatch.setattr(backend_module, "_serving_loop", lambda loop: True)
    fake_anthropic.script(Reply(text="x" * 240, chunk_chars=12, tokens_per_second=300))
    watch: list[Any] = []
    try:
        text = await _streamed(anthropic_client(), watch)
    finally:
        await clients_close()
    assert text == "x" * 240
    assert {kind for kind, _ in watch} == {LazyReadTimeout}
    timers = {id(handle) for _, handle in watch}
    assert len(watch) == 20 and len(timers) == 1


async def test_the_lazy_read_timer_lets_a_slow_stream_run_and_times_out_a_stalled_one(
    monkeypatch: Any, fake_anthropic: FakeAnthropic
) -> None:
    monkeypatch.setattr(backend_module, "_serving_loop", lambda loop: True)
    # 2.4 s of stream, a chunk every 0.6 s: never 1 s (the read timeout) without a byte.
    fake_anthropic.script(
        Reply(text="y" * 96, chunk_chars=24, tokens_per_second=10),
        Reply(text="z" * 96, chunk_chars=24, stall_after=2, stall_seconds=10),
    )
    try:
        client = anthropic_client()
        assert await _streamed(client) == "y" * 96
        started = time.monotonic()
        with pytest.raises(httpx2.ReadTimeout):  # mid-body: the SDK passes the transport's error on
            await _streamed(client)
        # Timed out after its second of silence, not at the stall's end (10 s; a busy machine may be late).
        assert 1.0 <= time.monotonic() - started < 6
    finally:
        await clients_close()
