"""Resume the generation runs a stopped server left behind; mark failed only what cannot be resumed."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from django.core.management.base import CommandError, CommandParser

from stories.generation.handover import runs_hand_over
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
        handed_over: dict[str, int] = {}
        try:
            counts = asyncio.run(_resumed(run_ids, handed_over)) if run_ids else {}
        except KeyboardInterrupt:
            raise CommandError(
                f"interrupted (Ctrl-C): {handed_over.get('handed_over', 0)} run(s) handed back unfinished, "
                "for a server process or the next recover_runs to resume; "
                f"{handed_over.get('cancelled', 0)} that could not be resumed cancelled."
            ) from None
        finished, failed = counts.get("finished", 0), counts.get("failed", 0)
        self.stdout.write(
            f"{len(run_ids)} orphaned run(s): {finished} resumed and finished, {failed} failed "
            f"(nothing to resume from, or the resume failed), {counts.get('cancelled', 0)} cancelled (as "
            f"their writer asked), {counts.get('skipped', 0)} taken by another process."
        )


async def _resumed(run_ids: list[int], handed_over: dict[str, int]) -> dict[str, int]:
    """The runs resumed to their end; on Ctrl-C, those still going handed back (counted in ``handed_over``).

    On Ctrl-C asyncio.run cancels this task, then every task left, and each run cancelled so would be
    recorded cancelled, which its writer never asked for. Handed over as a stopping server process hands
    its runs (stories.generation.handover), each is orphaned again at once, its finished work kept.
    """
    try:
        return await runs_resume_drain(run_ids=run_ids)
    except asyncio.CancelledError:
        handed_over.update(await runs_hand_over())
        raise
