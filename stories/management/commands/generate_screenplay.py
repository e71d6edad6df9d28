from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any, TextIO

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

from stories import selectors
from stories.errors import GenerationCancelled, GenerationError
from stories.exports.fountain import fountain_scenes
from stories.generation.events import Event, RunOutcome, events_fold
from stories.generation.pipeline import generation_run
from stories.generation.requests import GenerationRequest, generation_request_parse

# An error exit status per failure kind, so scripts can tell a bad request from an outage.
EXIT_INVALID = 2
EXIT_FAILED = 1


class Command(BaseCommand):
    help = (
        "Generate a screenplay with the same pipeline as the web page: the screenplay goes to stdout "
        "as it is written (Fountain scene by scene, or the final JSON), progress with tokens and ETA "
        "to stderr. Saves a new story, or a new version of --story."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        plot = parser.add_mutually_exclusive_group(required=True)
        plot.add_argument("--plot", metavar="TEXT")
        plot.add_argument("--plot-file", type=Path, metavar="PATH")
        parser.add_argument("--persona", action="append", required=True, metavar="NAME", dest="personas")
        parser.add_argument("--title", default="")
        parser.add_argument("--story", type=int, metavar="ID", help="Add a version to this story of yours.")
        parser.add_argument("--model", help="Default: the configured model.")
        parser.add_argument("--max-tokens", type=int, help="Per model call.")
        parser.add_argument(
            "--mode",
            choices=["single", "parallel"],
            help="single: one streamed call; parallel: an outline, then every scene at once. "
            "Default: the STORY_DEFAULT_MODE setting.",
        )
        parser.add_argument(
            "--user", default="writer", metavar="NAME", help="Owner of the story (default: writer)."
        )
        parser.add_argument("--format", choices=["fountain", "json"], default="fountain")
        parser.add_argument(
            "--no-save", action="store_true", help="Write and record the run, but save no story or version."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        user = _user(options["user"])
        request = _request(options)
        stderr: TextIO = getattr(self.stderr, "_out", sys.stderr)
        console = Console(file=stderr, highlight=False)
        outcome = asyncio.run(self._generate(request, user, options["format"], console))
        if outcome.saved is not None:
            saved = outcome.saved
            version = selectors.story_version_saved_get(story_id=saved["story_id"], number=saved["version"])
            content = version.content
            where = (
                f"Saved story {version.story_id} ({version.story.title!r}), "
                f"version {version.number}: {saved['url']}"
            )
        else:
            # An unsaved run keeps its finished screenplay as its raw text (see the pipeline).
            content = json.loads(selectors.run_get(run_id=outcome.run_id).raw_text)
            where = f"Not saved (--no-save); run {outcome.run_id} recorded the timings and usage."
        if options["format"] == "json":
            self.stdout.write(json.dumps(content, ensure_ascii=False, indent=2))
        console.print(where, markup=False)

    async def _generate(
        self, request: GenerationRequest, user: Any, fmt: str, console: Console
    ) -> RunOutcome:
        columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn())
        with Progress(*columns, TextColumn("{task.fields[status]}"), console=console) as progress:
            task = progress.add_task("Starting", total=None, status="")
            # Parallel mode finishes scenes in any order; stdout gets them in screenplay order.
            self._pending: dict[int, dict[str, Any]] = {}
            self._next_scene = 0
            try:
                outcome = await events_fold(
                    generation_run(request=request, user=user),
                    on_event=lambda event: self._show(event, fmt, progress, task),
                )
            except GenerationError as error:
                raise _failure(error) from None
            except GenerationCancelled:
                raise CommandError("cancelled: nothing was saved", returncode=EXIT_FAILED) from None
            progress.update(task, description="Saved" if outcome.saved else "Done", total=1, completed=1)
        return outcome

    def _show(self, event: Event, fmt: str, progress: Progress, task: TaskID) -> None:
        """Show one event as it arrives: the model's name and ETA, each scene in order, progress."""
        if event["type"] == "accepted":
            about = f"about {event['estimated_seconds']:.0f} s"
            progress.update(task, description=f"Writing with {event['model_name']}", status=about)
        elif event["type"] == "scene" and fmt == "fountain":
            self._pending[event["index"]] = event["scene"]
            while self._next_scene in self._pending:
                scene = self._pending.pop(self._next_scene)
                self._next_scene += 1
                # Scenes are paragraphs apart, like the paragraphs inside them.
                self.stdout.write(fountain_scenes(scenes=[scene]) + "\n", ending="")
            self.stdout.flush()
        elif event["type"] == "progress":
            eta = event.get("eta_seconds")
            eta_text = f", ETA {eta:.0f} s" if eta is not None else ""
            progress.update(task, status=f"{event['output_tokens']} tokens{eta_text}")


def _user(username: str) -> Any:
    user = selectors.user_active_get(username=username)
    if user is None:
        raise CommandError(f"No active user named {username!r}; pass --user NAME.", returncode=EXIT_INVALID)
    return user


def _request(options: dict[str, Any]) -> GenerationRequest:
    plot = options["plot"]
    if options["plot_file"] is not None:
        plot = _plot_file(options["plot_file"])
    data: dict[str, Any] = {"plot": plot, "personas": options["personas"], "title": options["title"]}
    options.setdefault("mode", None)
    for key, option in (
        ("story_id", "story"),
        ("model", "model"),
        ("max_tokens", "max_tokens"),
        ("mode", "mode"),
    ):
        if options[option] is not None:
            data[key] = options[option]
    try:
        request = generation_request_parse(data)
    except GenerationError as error:
        raise CommandError(f"{error.code}: {error.message}", returncode=EXIT_INVALID) from None
    return dataclasses.replace(request, save=not options["no_save"])


def _plot_file(path: Path) -> str:
    # Read a little past the limit so an oversized plot is reported as such, not silently cut.
    limit = settings.STORY_MAX_PLOT_CHARS * 4 + 1
    try:
        with path.open("rb") as file:
            return file.read(limit).decode("utf-8", errors="replace")
    except OSError as error:
        raise CommandError(f"Cannot read {path}: {error.strerror}.", returncode=EXIT_INVALID) from None


def _failure(error: GenerationError) -> CommandError:
    code = EXIT_INVALID if error.code in ("invalid_request", "unknown_personas", "forbidden") else EXIT_FAILED
    retry = " (you can retry)" if error.retryable else ""
    return CommandError(f"{error.code}: {error.message}{retry}", returncode=code)
