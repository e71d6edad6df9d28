from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, time
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.management.base import CommandError, CommandParser
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from stories.generation.models_registry import model_get
from stories.selectors import GenerationReport, generation_report_get, generation_run_models
from storyproject.commands import EXIT_INVALID, ProjectCommand
from storyproject.untrusted import text_quoted

_STAGE_LABELS = {
    "context_ms": "persona contexts",
    "prompt_ms": "prompt",
    "ttft_ms": "time to first token",
    "llm_ms": "model (whole stream)",
    "save_ms": "save",
    "total_ms": "total",
}


class Command(ProjectCommand):
    help = (
        "Measured generation timings per stage (count, median, p95, max, share of total), tokens and "
        "cost per run, and the prompt cache hit rate, from recorded runs. Definitions: docs/exports.md."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--since", metavar="DATE", help="ISO date or date-time, e.g. 2026-11-01.")
        parser.add_argument("--model", metavar="NAME", help="Only runs of this model.")
        parser.add_argument("--json", action="store_true", help="Print the report as JSON.")

    def handle(self, *args: Any, **options: Any) -> None:
        since, model = _since(options["since"]), options["model"]
        report = generation_report_get(since=since, model=model)
        if model and not report.runs:
            _refuse_unknown_model(model)
        if options["json"]:
            self.stdout.write(json.dumps(dataclasses.asdict(report), default=_json_default, indent=2))
        else:
            self.stdout.write("\n".join(_table(report)))


def _since(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        moment = parse_datetime(value)
        day = None if moment else parse_date(value)
    except ValueError:
        moment = day = None
    if day is not None:
        moment = datetime.combine(day, time.min)
    if moment is None:
        raise CommandError(
            f"--since {text_quoted(value)} is not a date (YYYY-MM-DD) or date-time (YYYY-MM-DDTHH:MM).",
            returncode=EXIT_INVALID,
        )
    try:
        # In UTC, as the database compares it: a moment in year 0 there cannot be a datetime.
        return timezone.make_aware(moment, UTC) if timezone.is_naive(moment) else moment.astimezone(UTC)
    except OverflowError:
        raise CommandError(
            f"--since {text_quoted(value)} is out of range once in UTC.", returncode=EXIT_INVALID
        ) from None


def _refuse_unknown_model(model: str) -> None:
    # A model no run used and that is not Claude's nor the offline one is most likely a typo: an
    # empty report would read as "no runs" (a known model's empty report is its true answer).
    models = generation_run_models()
    if model in models or model == settings.OFFLINE_MODEL or model_get(model) is not None:
        return
    raise CommandError(
        f"--model {text_quoted(model)}: no recorded run used it, and it is not a known model "
        f"(models with runs: {', '.join(models) if models else 'none yet'}).",
        returncode=EXIT_INVALID,
    )


def _json_default(value: object) -> object:
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(type(value).__name__)


def _table(report: GenerationReport) -> list[str]:
    statuses = ", ".join(f"{count} {status}" for status, count in report.by_status.items())
    lines = [f"Runs: {report.runs}" + (f" ({statuses})" if statuses else ""), ""]
    lines.append(f"{'stage':<22}{'count':>7}{'median ms':>12}{'p95 ms':>10}{'max ms':>10}{'share':>8}")
    for stage in report.stages:
        lines.append(
            f"{_STAGE_LABELS[stage.stage]:<22}{stage.count:>7}{_number(stage.median_ms):>12}"
            f"{_number(stage.p95_ms):>10}{_number(stage.max_ms):>10}{_percent(stage.share):>8}"
        )
    lines += ["", "Tokens per run (mean):"]
    for field, mean in report.tokens_per_run.items():
        lines.append(f"  {field.removesuffix('_tokens').replace('_', ' '):<12}{mean:>12.1f}")
    lines.append("")
    lines.append(f"Cost: {_dollars(report.cost_usd)} in all, {_dollars(report.cost_per_run_usd)} per run")
    if report.unpriced_runs:
        lines.append(
            f"  {report.unpriced_runs} run(s) of models without a price in the model registry are not counted"
        )
    if report.estimated_runs:
        lines.append(
            f"  {report.estimated_runs} run(s) were cut off before the final usage: "
            "their output tokens are estimated from the text received"
        )
    lines.append(f"Prompt cache hit rate: {_percent(report.cache_hit_rate)}")
    return lines


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}" if value != int(value) else str(int(value))


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _dollars(value: Decimal | None) -> str:
    return "-" if value is None else f"${value:.4f}"
