"""JSON log lines (LOG_FORMAT=json): one object per line, and the run id on every line logged during a run."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import sync_to_async

from stories.models import GenerationRun
from storyproject.logs import JsonFormatter
from tests.fake_anthropic import FakeAnthropic, Reply, screenplay_text
from tests.stories.generation.conftest import generate_message, screenplay, ws_connect, ws_events, ws_generate

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    """What the root logger writes, as JSON lines; the SDK's HTTP client logs each request at INFO."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root, httpx_logger = logging.getLogger(), logging.getLogger("httpx2")
    levels = root.level, httpx_logger.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    httpx_logger.setLevel(logging.INFO)
    yield stream
    root.removeHandler(handler)
    root.setLevel(levels[0])
    httpx_logger.setLevel(levels[1])


@pytest.mark.django_db(transaction=True)
async def test_every_line_logged_during_a_run_carries_its_run_id(
    json_lines: io.StringIO, writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.script(Reply(text=screenplay_text(screenplay(scenes=2))))
    events = await ws_generate(writer)
    assert events[-1]["type"] == "done", events[-1]
    logging.getLogger("stories.test").warning("after the run")

    run = await sync_to_async(GenerationRun.objects.get)()
    lines = [json.loads(line) for line in json_lines.getvalue().splitlines()]
    during = [line for line in lines if line["logger"] == "httpx2"]
    # The SDK's request to the model, logged by a library that knows nothing of runs.
    assert during and all(line["run_id"] == run.pk for line in during), during
    assert "POST" in during[0]["message"] and during[0]["level"] == "INFO"
    [after] = [line for line in lines if line["message"] == "after the run"]
    assert "run_id" not in after
    assert set(after) == {"time", "level", "logger", "message"}
    assert after["time"].endswith("+00:00")


@pytest.mark.django_db(transaction=True)
async def test_a_cancel_with_redis_down_logs_its_lines_with_the_run_id(
    json_lines: io.StringIO, writer: Any, cast: Any, offline: None, settings: Any
) -> None:
    # Was: "passing a cancel on to other processes failed (run 7)" had no run_id: a cancel is asked from
    # the socket's task, not the run's, so a log shipper's search by run id missed it.
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    settings.STORY_OFFLINE_TOKENS_PER_SECOND = 300
    communicator = await ws_connect(writer)
    try:
        await communicator.send_json_to(generate_message(mode="single"))
        accepted = json.loads(await communicator.receive_from(timeout=10))
        await communicator.send_json_to({"type": "cancel"})
        events = await ws_events(communicator)
    finally:
        await communicator.disconnect()
    assert events[-1]["type"] == "cancelled"
    run_id = accepted["run_id"]
    lines = [json.loads(line) for line in json_lines.getvalue().splitlines()]
    about_the_run = [line for line in lines if f"run {run_id}" in line["message"]]
    assert any("cancel" in line["message"] for line in about_the_run), lines
    assert all(line.get("run_id") == run_id for line in about_the_run), about_the_run


def test_log_format_json_makes_every_line_a_json_object_with_the_exception() -> None:
    script = (
        "import logging\n"
        "try:\n    1 / 0\n"
        "except ZeroDivisionError:\n    logging.getLogger('stories.check').exception('it \"broke\"\\nbadly')\n"
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", script],
        cwd=ROOT,
        env={**os.environ, "LOG_FORMAT": "json"},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    [line] = result.stderr.strip().splitlines()
    entry = json.loads(line)
    assert entry["message"] == 'it "broke"\nbadly'
    assert entry["logger"] == "stories.check" and entry["level"] == "ERROR"
    assert "ZeroDivisionError" in entry["exception"]


def test_an_unknown_log_format_stops_the_process() -> None:
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env={**os.environ, "LOG_FORMAT": "xml"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "LOG_FORMAT must be 'plain' or 'json'" in result.stderr
