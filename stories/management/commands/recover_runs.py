"""Mark generation runs left in "streaming" by a stopped server as failed ("interrupted")."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from stories.services import generation_runs_recover


class Command(BaseCommand):
    help = (
        "Mark runs still 'streaming' as failed with error_code 'interrupted'. Run it before starting the "
        "server; with several server processes, pass --older-than so live runs are left alone."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--older-than",
            type=int,
            default=0,
            metavar="SECONDS",
            help="only runs started at least this many seconds ago (default 0: all of them)",
        )

    def handle(self, *args: Any, older_than: int, **options: Any) -> None:
        if older_than < 0:
            raise CommandError("--older-than must be 0 or more seconds")
        count = generation_runs_recover(older_than_seconds=older_than)
        self.stdout.write(f"{count} interrupted run(s) marked failed.")
