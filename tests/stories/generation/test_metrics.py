"""/metrics as Prometheus meets it: refused without its token or from the wrong network, and its
counters moving after real generations (the offline back-end, and the real SDK against the fake API)."""

from __future__ import annotations

import asyncio
import time
from io import StringIO
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from prometheus_client.parser import text_string_to_metric_families
from rest_framework.test import APIClient

from stories.metrics import TOKEN_KINDS, loop_lag_watch_start, retried_errors
from stories.models import GenerationRun
from stories.pricing import usage_cost_usd
from stories.services import RunRecord, generation_run_admit, generation_run_finish, generation_run_release
from tests.fake_anthropic import FakeAnthropic, Reply, screenplay_text
from tests.stories.generation.conftest import MODEL, generate_message, screenplay, ws_connect, ws_generate

pytestmark = pytest.mark.django_db(transaction=True)
TOKEN = "metrics-token-0123456789abcdef"
GENERATE = "/api/ai/generate-screenplay/"


@pytest.fixture
def metrics_on(settings: Any) -> None:
    settings.METRICS_TOKEN = TOKEN


def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics, by name and sorted labels."""
    response = Client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def _generate(api_user: Any) -> Any:
    client = APIClient()
    client.force_authenticate(api_user)
    body = generate_message()
    del body["type"]
    return client.post(GENERATE, body, format="json")


def test_metrics_are_not_found_while_no_token_or_network_is_set(settings: Any) -> None:
    settings.METRICS_TOKEN = ""
    settings.METRICS_ALLOWED_NETWORKS = []
    assert Client().get("/metrics").status_code == 404
    assert Client().get("/metrics", HTTP_AUTHORIZATION="Bearer anything").status_code == 404


@pytest.mark.parametrize(
    "header", [None, "Bearer wrong-token-0123456789", f"Token {TOKEN}", TOKEN, "Bearer "]
)
def test_metrics_are_refused_without_the_bearer_token(metrics_on: None, header: str | None) -> None:
    headers = {} if header is None else {"Authorization": header}
    response = Client().get("/metrics", headers=headers)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert b"story_generations" not in response.content


def test_metrics_are_refused_outside_the_allowed_networks(settings: Any) -> None:
    settings.METRICS_ALLOWED_NETWORKS = ["10.0.0.0/8"]
    assert Client(REMOTE_ADDR="192.168.1.5").get("/metrics").status_code == 403
    assert Client(REMOTE_ADDR="10.1.2.3").get("/metrics").status_code == 200
    # With a token as well, both must hold.
    settings.METRICS_TOKEN = TOKEN
    assert Client(REMOTE_ADDR="10.1.2.3").get("/metrics").status_code == 401
    assert (
        Client(REMOTE_ADDR="192.168.1.5").get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code
        == 403
    )


def test_an_ipv4_scraper_reaching_a_dual_stack_server_is_allowed_by_its_ipv4_network(settings: Any) -> None:
    # make serve --host :: takes IPv4 connections on its IPv6 socket: daphne sees ::ffff:10.1.2.3.
    settings.METRICS_ALLOWED_NETWORKS = ["10.0.0.0/8"]
    assert Client(REMOTE_ADDR="::ffff:10.1.2.3").get("/metrics").status_code == 200
    assert Client(REMOTE_ADDR="::ffff:192.168.1.5").get("/metrics").status_code == 403


def test_a_generation_moves_the_counters_histograms_and_tokens(
    metrics_on: None, writer: Any, cast: Any, offline: None
) -> None:
    before = scrape()
    response = _generate(writer)
    assert response.status_code == 201, response.content
    after = scrape()
    labels = {"status": "succeeded", "model": "offline", "mode": "single"}
    assert (
        value(after, "story_generations_total", **labels)
        == value(before, "story_generations_total", **labels) + 1
    )
    for stage in ("context", "prompt", "ttft", "llm", "save", "total"):
        count = "story_generation_stage_seconds_count"
        assert (
            value(after, count, stage=stage, mode="single")
            == value(before, count, stage=stage, mode="single") + 1
        )
    output = response.json()["usage"]["output_tokens"]
    tokens = "story_generation_tokens_total"
    assert output > 0
    assert (
        value(after, tokens, model="offline", kind="output")
        - value(before, tokens, model="offline", kind="output")
        == output
    )
    assert value(after, "story_generations_active") == 0


def test_a_failed_generation_is_counted_as_failed(
    metrics_on: None, settings: Any, writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    settings.STORY_LLM_MAX_RETRIES = 0
    fake_anthropic.script(Reply(status=529, error_type="overloaded_error", headers={"retry-after-ms": "1"}))
    before = scrape()
    assert _generate(writer).status_code == 503
    after = scrape()
    labels = {"status": "failed", "model": MODEL, "mode": "single"}
    assert (
        value(after, "story_generations_total", **labels)
        == value(before, "story_generations_total", **labels) + 1
    )
    assert value(after, "story_generations_total", status="succeeded", model=MODEL, mode="single") == value(
        before, "story_generations_total", status="succeeded", model=MODEL, mode="single"
    )


def test_a_single_pass_runs_own_retries_are_counted_by_code(
    metrics_on: None, writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    fast = {"retry-after-ms": "1"}
    fake_anthropic.script(
        Reply(status=529, error_type="overloaded_error", headers=fast),
        Reply(status=429, error_type="rate_limit_error", headers=fast),
        Reply(text=screenplay_text(screenplay(scenes=2))),
    )
    before = scrape()
    response = _generate(writer)
    assert response.status_code == 201, response.content
    after = scrape()
    retries = "story_model_call_retries_total"
    for code in ("llm_overloaded", "llm_rate_limited"):
        assert value(after, retries, code=code) == value(before, retries, code=code) + 1
    assert GenerationRun.objects.get().details["retries"] == ["llm_overloaded", "llm_rate_limited"]


def test_a_run_that_recover_runs_closes_as_interrupted_is_counted(metrics_on: None, writer: Any) -> None:
    # A run its dead process left streaming, which cannot be resumed (no checkpoint): closed failed.
    GenerationRun.objects.create(user=writer, status="streaming", model=MODEL, max_tokens=1024)
    labels = {"status": "failed", "model": MODEL, "mode": "single"}
    before = value(scrape(), "story_generations_total", **labels)
    call_command("recover_runs", stdout=StringIO())
    assert GenerationRun.objects.get().error_code == "interrupted"
    assert value(scrape(), "story_generations_total", **labels) == before + 1


def test_a_claude_run_adds_its_tokens_and_cost_at_the_registry_prices(
    metrics_on: None, writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.script(Reply(text=screenplay_text(screenplay(scenes=2))))
    before = scrape()
    response = _generate(writer)
    assert response.status_code == 201, response.content
    after = scrape()
    run = GenerationRun.objects.get()
    usage = {kind: getattr(run, kind) for kind in TOKEN_KINDS}
    expected = usage_cost_usd(model=MODEL, **usage)
    assert expected is not None and expected > 0
    cost = "story_generation_cost_usd_total"
    assert value(after, cost, model=MODEL) - value(before, cost, model=MODEL) == pytest.approx(
        float(expected)
    )
    tokens = "story_generation_tokens_total"
    for kind, count in usage.items():
        label = kind.removesuffix("_tokens")
        assert (
            value(after, tokens, model=MODEL, kind=label) - value(before, tokens, model=MODEL, kind=label)
            == count
        )


async def test_open_sockets_and_active_runs_are_gauges(
    metrics_on: None, writer: Any, cast: Any, offline: None
) -> None:
    before = value(await sync_to_async(scrape)(), "story_websockets_open")
    communicator = await ws_connect(writer)
    try:
        # The socket is accepted before its standing is read and counted: the gauge follows at once.
        assert await _gauge_reaches("story_websockets_open", before + 1)
    finally:
        await communicator.disconnect()
    assert await _gauge_reaches("story_websockets_open", before)


async def _gauge_reaches(name: str, expected: float, timeout: float = 5.0) -> bool:
    """Whether the scraped gauge ``name`` shows ``expected`` within ``timeout`` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while value(await sync_to_async(scrape)(), name) != expected:
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def test_a_streaming_run_is_active_until_it_finishes(
    metrics_on: None, settings: Any, writer: Any, cast: Any, offline: None
) -> None:
    settings.STORY_OFFLINE_TOKENS_PER_SECOND = 200
    communicator = await ws_connect(writer)
    try:
        await communicator.send_json_to(generate_message())
        await communicator.receive_from(timeout=10)  # the run has started
        assert value(await sync_to_async(scrape)(), "story_generations_active") == 1
        await communicator.send_json_to({"type": "cancel"})
    finally:
        await communicator.disconnect()
    await ws_generate(writer)  # a run that finishes, so the cancelled one has surely been closed
    samples = await sync_to_async(scrape)()
    assert value(samples, "story_generations_active") == 0
    assert value(samples, "story_generations_total", status="cancelled", model="offline", mode="single") >= 1


def test_retried_errors_are_the_failed_calls_followed_by_another_attempt() -> None:
    calls = [
        {"task": "outline", "index": None, "attempt": 0, "status": "ok"},
        {"task": "scene", "index": 0, "attempt": 0, "status": "llm_overloaded"},
        {"task": "scene", "index": 0, "attempt": 1, "status": "invalid_output"},
        {"task": "scene", "index": 0, "attempt": 2, "status": "ok"},
        {"task": "scene", "index": 1, "attempt": 0, "status": "llm_rate_limited"},
        {"task": "scene", "index": 1, "attempt": 1, "status": "llm_unavailable"},  # the last try: not retried
        {"task": "scene", "index": 2, "attempt": 0, "status": "cancelled"},
    ]
    assert retried_errors(calls=calls) == ["llm_overloaded", "invalid_output", "llm_rate_limited"]


def _lag_counts(samples: dict[Any, float]) -> tuple[float, float]:
    """The loop lag histogram's observations: all of them, and those over a quarter of a second."""
    total = value(samples, "story_event_loop_lag_seconds_count")
    return total, total - value(samples, "story_event_loop_lag_seconds_bucket", le="0.25")


async def test_a_stalled_event_loop_shows_in_the_loop_lag_histogram(
    metrics_on: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("stories.metrics.LOOP_LAG_INTERVAL_SECONDS", 0.05)
    before = _lag_counts(await sync_to_async(scrape)())
    assert loop_lag_watch_start()
    assert not loop_lag_watch_start()  # one watcher a loop
    try:
        await asyncio.sleep(0.2)  # a few timers on time
        time.sleep(0.4)  # the loop held, as a saturated process holds it
        await asyncio.sleep(0.2)
        after = _lag_counts(await sync_to_async(scrape)())
    finally:
        for task in asyncio.all_tasks():
            if task.get_name() == "loop-lag-watch":
                task.cancel()
    late = after[1] - before[1]
    assert late >= 1  # the timer the stall held up
    assert after[0] - before[0] - late >= 3  # the others, on time


async def test_the_loop_lag_is_not_measured_while_metrics_are_off(settings: Any) -> None:
    settings.METRICS_TOKEN = ""
    settings.METRICS_ALLOWED_NETWORKS = []
    assert not loop_lag_watch_start()
    assert not [task for task in asyncio.all_tasks() if task.get_name() == "loop-lag-watch"]


def test_a_run_closed_by_its_own_process_is_counted_without_reading_it_back(
    metrics_on: None, writer: Any
) -> None:
    # The measures just written (and the model and mode its admission recorded) are counted as they
    # are: closing the run is its one UPDATE, with no query of the run after it.
    run = generation_run_admit(
        user_id=writer.pk, model=MODEL, max_tokens=1024, persona_names=[], story_id=None, mode="parallel"
    )
    record = RunRecord(total_ms=1234, usage={"input_tokens": 10, "output_tokens": 7})
    labels = {"status": "failed", "model": MODEL, "mode": "parallel"}
    before = scrape()
    try:
        with CaptureQueriesContext(connection) as captured:
            assert generation_run_finish(
                run_id=run.pk, status="failed", record=record, error_code="llm_error"
            )
    finally:
        generation_run_release(run_id=run.pk)
    asked = [query["sql"].split()[0] for query in captured.captured_queries]
    # On PostgreSQL the UPDATE's wait for a lock held elsewhere is bounded first (SET LOCAL lock_timeout).
    assert asked == (
        ["BEGIN", "SET", "UPDATE", "COMMIT"] if connection.vendor == "postgresql" else ["UPDATE"]
    )
    after = scrape()
    assert (
        value(after, "story_generations_total", **labels)
        == value(before, "story_generations_total", **labels) + 1
    )
    total = "story_generation_stage_seconds_sum"
    assert value(after, total, stage="total", mode="parallel") - value(
        before, total, stage="total", mode="parallel"
    ) == pytest.approx(1.234)
    tokens = "story_generation_tokens_total"
    assert (
        value(after, tokens, model=MODEL, kind="output") - value(before, tokens, model=MODEL, kind="output")
        == 7
    )
