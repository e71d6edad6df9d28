"""Which HTTP transport the model client reads through, on which event loop.

daphne's loop reads the model through the SDK's aiohttp transport (``STORY_LLM_HTTP_CLIENT``, about half
the CPU per network read); every other loop, a command's ``asyncio.run`` or a blocking call's, keeps the
SDK's default httpx2, which needs no closing when its loop ends. Faults through both: test_faults.py.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

import anthropic
import pytest

from stories.generation.backends.anthropic import anthropic_client, clients_close

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
    assert _transport_on_daphnes_loop() == "_DefaultAioHttpClient"
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
