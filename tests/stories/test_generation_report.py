from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

from stories.models import GenerationRun
from stories.selectors import generation_report_get

SONNET = "claude-sonnet-5-5"


def _run(user: Any, **fields: Any) -> GenerationRun:
    defaults = {
        "user": user,
        "status": "succeeded",
        "model": SONNET,
        "max_tokens": 4096,
        "persona_names": ["a"],
    }
    return GenerationRun.objects.create(**{**defaults, **fields})


@pytest.fixture
def runs(writer: Any) -> None:
    # Twenty succeeded runs with known timings: run i has ttft 10*i, llm 100*i, context i ms.
    for i in range(1, 21):
        _run(
            writer,
            context_ms=i,
            prompt_ms=2,
            ttft_ms=10 * i,
            llm_ms=100 * i,
            save_ms=5,
            total_ms=101 * i + 7,
            input_tokens=1000,
            output_tokens=500,
            cache_read_tokens=3000,
        )
    # A failed run: paid for (its tokens count) but not part of the stage figures.
    _run(writer, status="failed", ttft_ms=99_999, total_ms=99_999, input_tokens=1000, cache_write_tokens=3000)
    # A run still streaming is not finished: left out of everything.
    _run(writer, status="streaming", ttft_ms=1, input_tokens=10**6)


def _report(*args: str) -> dict[str, Any]:
    out = io.StringIO()
    call_command("generation_report", "--json", *args, stdout=out)
    return json.loads(out.getvalue())


@pytest.mark.django_db
def test_stage_figures_are_measured_from_succeeded_runs(runs: None) -> None:
    report = _report()
    assert report["runs"] == 21
    assert report["by_status"] == {"failed": 1, "succeeded": 20}
    stages = {stage["stage"]: stage for stage in report["stages"]}
    assert stages["ttft_ms"] == {
        "stage": "ttft_ms",
        "count": 20,
        "median_ms": 105,  # (100 + 110) / 2
        "p95_ms": 190,  # nearest rank: the 19th of 20
        "max_ms": 200,
        "share": pytest.approx(2100 / 21350),
    }
    assert stages["context_ms"]["median_ms"] == 10.5
    assert stages["prompt_ms"]["median_ms"] == 2
    assert stages["llm_ms"]["share"] == pytest.approx(21000 / 21350)
    assert stages["total_ms"]["share"] == 1
    assert (stages["total_ms"]["p95_ms"], stages["total_ms"]["max_ms"]) == (101 * 19 + 7, 101 * 20 + 7)


@pytest.mark.django_db
def test_tokens_cost_and_cache_hit_rate_cover_every_finished_run(runs: None) -> None:
    report = _report()
    assert report["tokens"] == {
        "input_tokens": 21_000,
        "output_tokens": 10_000,
        "cache_read_tokens": 60_000,
        "cache_write_tokens": 3_000,
    }
    assert report["tokens_per_run"]["output_tokens"] == pytest.approx(10_000 / 21)
    # Sonnet 5.5: $2 input, $10 output, $0.10 cache read, $2.50 cache write per million tokens.
    assert report["cost_usd"] == pytest.approx(20 * 0.0073 + 0.0095)
    assert report["cost_per_run_usd"] == pytest.approx((20 * 0.0073 + 0.0095) / 21)
    assert report["cache_hit_rate"] == pytest.approx(60_000 / 84_000)


@pytest.mark.django_db
def test_the_table_shows_each_stage_and_the_hit_rate(runs: None) -> None:
    out = io.StringIO()
    call_command("generation_report", stdout=out)
    lines = out.getvalue().splitlines()
    assert lines[0] == "Runs: 21 (1 failed, 20 succeeded)"
    assert [line.split()[-5:] for line in lines if line.startswith("time to first token")] == [
        ["20", "105", "190", "200", "9.8%"]
    ]
    assert "Prompt cache hit rate: 71.4%" in lines


@pytest.mark.django_db
def test_since_and_model_select_the_runs(writer: Any) -> None:
    old = _run(writer, total_ms=5000, model="claude-haiku-5-5")
    GenerationRun.objects.filter(pk=old.pk).update(created_at=datetime(2026, 1, 1, tzinfo=UTC))
    _run(writer, total_ms=100, model="mystery-model", output_tokens=7)
    assert _report("--since", "2026-02-01")["runs"] == 1
    assert _report("--since", "2025-12-31T23:00")["runs"] == 2
    mystery = _report("--model", "mystery-model")
    assert (mystery["runs"], mystery["unpriced_runs"], mystery["cost_usd"]) == (1, 1, None)
    assert _report("--model", "claude-haiku-5-5")["stages"][-1]["max_ms"] == 5000


@pytest.mark.django_db
def test_no_runs_is_an_empty_report_not_an_error() -> None:
    report = _report()
    assert report["runs"] == 0 and report["cache_hit_rate"] is None
    assert all(stage["count"] == 0 and stage["median_ms"] is None for stage in report["stages"])


@pytest.mark.django_db
def test_a_bad_since_is_a_clear_error() -> None:
    with pytest.raises(CommandError, match="is not a date"):
        call_command("generation_report", "--since", "yesterday")
    with pytest.raises(CommandError, match="is not a date"):
        call_command("generation_report", "--since", "2026-13-45")


@pytest.mark.django_db
def test_a_since_before_year_one_in_utc_is_a_clear_error() -> None:
    # 0001-01-01 at 00:00 an hour east of UTC is in year 0 in UTC: an OverflowError and a traceback.
    with pytest.raises(CommandError, match="out of range"):
        call_command("generation_report", "--since", "0001-01-01T00:00+01:00")
    assert _report("--since", "0001-01-01T00:00-01:00")["runs"] == 0


def test_a_long_bad_since_is_quoted_short() -> None:
    with pytest.raises(CommandError) as failure:
        call_command("generation_report", "--since", "y" * 5000)
    assert str(failure.value) == (
        "--since '"
        + "y" * 80
        + "…' (5000 characters) is not a date (YYYY-MM-DD) or date-time (YYYY-MM-DDTHH:MM)."
    )


@pytest.mark.django_db
def test_a_model_no_run_used_and_nobody_knows_is_a_clear_error(writer: Any) -> None:
    _run(writer, model="mystery-model")
    _run(writer)
    # A typo would otherwise print an empty report, read as "no runs".
    with pytest.raises(
        CommandError, match=r"--model 'claude-sonet-5-5'.*runs: claude-sonnet-5-5, mystery-model\)"
    ):
        call_command("generation_report", "--model", "claude-sonet-5-5")
    # A known model without runs (yet, or since the date) has its true, empty report.
    assert _report("--model", "claude-haiku-5-5")["runs"] == 0
    assert _report("--model", "offline")["runs"] == 0
    assert _report("--model", "mystery-model", "--since", "2099-01-01")["runs"] == 0


def _report_queries(runs: int, user: Any) -> list[str]:
    GenerationRun.objects.filter(status="succeeded").delete()
    GenerationRun.objects.bulk_create(
        GenerationRun(
            user=user,
            status="succeeded",
            model=SONNET,
            max_tokens=4096,
            persona_names=["a"],
            context_ms=i,
            ttft_ms=i,
            llm_ms=i,
            total_ms=3 * i,
            input_tokens=i,
        )
        for i in range(1, runs + 1)
    )
    with CaptureQueriesContext(connection) as captured:
        report = generation_report_get()
    assert report.runs == runs and report.stages[2].max_ms == runs
    return [query["sql"] for query in captured.captured_queries]


@pytest.mark.django_db
def test_the_report_aggregates_in_the_database_rather_than_reading_every_run(writer: Any) -> None:
    # It read every finished run (its timings and usage) into memory to count, sum and sort them in
    # Python. Now each query aggregates (counts, sums, maxima), groups by model and status, or picks
    # the few rows a median and a 95th percentile need by their rank: the same queries for 5 runs as
    # for 60, none of them a row per run.
    few, many = _report_queries(5, writer), _report_queries(60, writer)
    assert len(few) == len(many)
    for sql in many:
        assert any(part in sql for part in ("COUNT(", "SUM(", "MAX(", "ROW_NUMBER()")), sql


@pytest.mark.django_db
def test_an_odd_number_of_runs_has_the_middle_one_as_median(writer: Any) -> None:
    _report_queries(5, writer)
    stage = generation_report_get().stages[0]
    assert (stage.count, stage.median_ms, stage.p95_ms, stage.max_ms) == (5, 3, 5, 5)
    assert stage.share == pytest.approx(1 / 3)
