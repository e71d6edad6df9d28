"""Resume the generation runs a stopped server left behind; mark failed only what cannot be resumed."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from django.core.management.base import CommandParser

from stories.generation.resume import runs_resume_drain
from stories.selectors import generation_runs_orphaned
from storyproject.commands import ProjectCommand

MAX_LIMIT = 10_000


def _limit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a whole number") from None
    if not 1 <= value <= MAX_LIMIT:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_LIMIT}")
    return value


class Command(ProjectCommand):
    help = (
        "Resume every orphaned run (still 'streaming', its lease expired: its process died) to its end, "
        "here: finished scenes are kept and only the rest is written. A run with nothing to resume "
        "from is marked failed with error_code 'interrupted'. Runs whose process is alive are left alone."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--limit",
            type=_limit,
            default=100,
            metavar="N",
            help=f"resume at most this many runs, side by side (default 100, at most {MAX_LIMIT})",
        )

    def handle(self, *args: Any, limit: int, **options: Any) -> None:
        run_ids = generation_runs_orphaned(limit=limit)
        counts = asyncio.run(runs_resume_drain(run_ids=run_ids)) if run_ids else {}
        finished, failed = counts.get("finished", 0), counts.get("failed", 0)
        self.stdout.write(
            f"{len(run_ids)} orphaned run(s): {finished} resumed and finished, {failed} failed "
            f"(nothing to resume from, or the resume failed), {counts.get('skipped', 0)} taken by "
            "another process."
        )
