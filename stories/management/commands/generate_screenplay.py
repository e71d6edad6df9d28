from __future__ import annotations

import argparse
import asyncio
import codecs
import contextlib
import dataclasses
import json
import os
import signal
import stat
import sys
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any, TextIO, cast

from django.conf import settings
from django.core.management.base import CommandError, CommandParser
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

from stories import selectors
from stories.errors import GenerationCancelled, GenerationError
from stories.exports.fountain import fountain_scenes
from stories.generation.events import Event, RunOutcome, events_fold
from stories.generation.pipeline import generation_run
from stories.generation.requests import GenerationRequest, generation_request_parse
from stories.models import ScreenplayVersion
from stories.runs.detach import detached_refusal_line, run_cancel_and_wait, run_detach
from stories.runs.follow import run_events, run_events_follow, run_owned
from stories.runs.runner import run_settled, run_start
from storyproject.commands import EXIT_FAILED, EXIT_INVALID, ProjectCommand
from storyproject.db import db_call
from storyproject.untrusted import text_quoted


class Command(ProjectCommand):
    # The run followed, and the seq of its last event seen (for a Ctrl-C's cancel).
    _run_id: int | None = None
    _last_seq = 0

    help = (
        "Generate a screenplay with the same pipeline as the web page: the screenplay goes to stdout "
        "as it is written (Fountain scene by scene, or the final JSON), progress with tokens and ETA "
        "to stderr. Saves a new story, or a new version of --story. Ctrl-C cancels the run; --detach "
        "leaves it running in the background and prints its id; --attach ID follows a run."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        # --plot (or --plot-file) and --persona are required unless --attach is given (checked in handle).
        plot = parser.add_mutually_exclusive_group()
        plot.add_argument("--plot", metavar="TEXT")
        plot.add_argument("--plot-file", type=Path, metavar="PATH")
        parser.add_argument("--persona", action="append", metavar="NAME", dest="personas")
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
        parser.add_argument(
            "--detach",
            action="store_true",
            help="Start the run in a background process, print its id and exit (follow it with --attach).",
        )
        parser.add_argument(
            "--attach",
            type=int,
            metavar="ID",
            help="Follow run ID of --user from its start (across processes with REDIS_URL; without it, "
            "runs of this process only, or a finished run's end).",
        )
        # The background process of --detach: prints the run's id as its first line, nothing else.
        parser.add_argument("--detached-run", action="store_true", help=argparse.SUPPRESS)

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            self._handle(options)
        except BrokenPipeError:
            # `generate_screenplay ... | head`: the reader of stdout is gone. As Ctrl-C, the run it was
            # writing stops (recorded cancelled); one already saved stays saved.
            raise CommandError(self._pipe_closed_line(), returncode=EXIT_FAILED) from None

    def _pipe_closed_line(self) -> str:
        _stdout_quiet()
        if self._run_id is None:
            return "standard output was closed (its reader ended): no run was started"
        run = selectors.run_get(run_id=self._run_id)
        # --attach only follows the run, which goes on; a run this command started stops with it.
        ended = {"succeeded": "it succeeded", "streaming": f"it goes on (--attach {self._run_id})"}.get(
            run.status, f"it ended {run.status}"
        )
        return f"standard output was closed (its reader ended) while run {self._run_id} was shown: {ended}"

    def _handle(self, options: dict[str, Any]) -> None:
        user = _user(options["user"])
        stderr: TextIO = getattr(self.stderr, "_out", sys.stderr)
        console = Console(file=stderr, highlight=False)
        if options["attach"] is not None:
            _attach_alone(options)
            self._report(
                asyncio.run(self._attach(options["attach"], user, options["format"], console)),
                options,
                console,
            )
            return
        request = _request(options)
        if options["detach"]:
            try:
                run_id = run_detach(options)
            except GenerationError as error:
                raise _failure(error) from None
            self.stdout.write(str(run_id))
            return
        if options["detached_run"]:
            asyncio.run(self._detached(request, user))
            return
        self._report(asyncio.run(self._generate(request, user, options["format"], console)), options, console)

    def _report(self, outcome: RunOutcome, options: dict[str, Any], console: Console) -> None:
        content, where = _screenplay_of(outcome)
        if options["format"] == "json":
            self.stdout.write(json.dumps(content, ensure_ascii=False, indent=2))
        else:
            # The scenes no `scene` event brought: all of them for a run followed after its events
            # were gone (another process's without Redis, or past the log's retention).
            for scene in content["scenes"][self._next_scene :]:
                self.stdout.write(fountain_scenes(scenes=[scene]) + "\n", ending="")
        console.print(where, markup=False)
        dropped = outcome.saved.get("cast_dropped", []) if outcome.saved is not None else []
        for member in dropped:
            console.print(
                f"{member['character_name']} (persona {member['persona']}) left the story's cast: the persona "
                "was deleted while the screenplay was being written; the screenplay keeps the character.",
                markup=False,
            )

    async def _generate(
        self, request: GenerationRequest, user: Any, fmt: str, console: Console
    ) -> RunOutcome:
        terminated = _terminate_cancels(asyncio.current_task())
        try:
            return await self._follow(run_events(generation_run(request=request, user=user)), fmt, console)
        except asyncio.CancelledError:
            # Ctrl-C, or SIGTERM (kill, timeout): the run is this command's, so it stops (recorded
            # cancelled) before the exit.
            if self._run_id is not None:
                await run_cancel_and_wait(run_id=self._run_id, after=self._last_seq)
            how = "terminated" if terminated.is_set() else "Ctrl-C"
            raise CommandError(f"cancelled ({how}): nothing was saved", returncode=EXIT_FAILED) from None

    async def _attach(self, run_id: int, user: Any, fmt: str, console: Console) -> RunOutcome:
        if not await run_owned(run_id=run_id, user_id=user.pk):
            raise CommandError(f"No run {run_id} of {user.username!r}.", returncode=EXIT_INVALID)
        if await db_call(selectors.generation_run_orphaned)(run_id=run_id):
            # Followed in silence until a process resumes it, which may be never if none is up.
            console.print(
                f"Run {run_id} is not running anywhere now (its server process stopped); waiting for a "
                "server to resume it: `make run`, `make serve` and `manage.py recover_runs` do."
            )
        try:
            return await self._follow(run_events_follow(run_id=run_id), fmt, console)
        except asyncio.CancelledError:
            raise CommandError(
                f"stopped following run {run_id}; it goes on (cancel it from the page or the API)",
                returncode=EXIT_FAILED,
            ) from None

    async def _detached(self, request: GenerationRequest, user: Any) -> None:
        """The background process of --detach: start the run, hand its id over, see it to its end."""
        start = await run_start(generation_run(request=request, user=user))
        if start.run_id is None:
            self.stdout.write(detached_refusal_line(start.refusal or {}))
            return
        self.stdout.write(str(start.run_id))
        self.stdout.flush()
        async for _event in run_events_follow(run_id=start.run_id):
            pass
        await run_settled(run_id=start.run_id)

    async def _follow(
        self, events: AsyncGenerator[dict[str, Any], None], fmt: str, console: Console
    ) -> RunOutcome:
        columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn())
        with Progress(*columns, TextColumn("{task.fields[status]}"), console=console) as progress:
            task = progress.add_task("Starting", total=None, status="")
            # Parallel mode finishes scenes in any order; stdout gets them in screenplay order.
            self._pending: dict[int, dict[str, Any]] = {}
            self._next_scene = 0
            try:
                outcome = await events_fold(
                    events, on_event=lambda event: self._show(event, fmt, progress, task)
                )
            except GenerationError as error:
                raise _failure(error) from None
            except GenerationCancelled:
                raise CommandError("cancelled: nothing was saved", returncode=EXIT_FAILED) from None
            # The run's own count, without the last progress event's ETA (which stayed on the finished bar).
            tokens = outcome.done["usage"].get("output_tokens", 0)
            progress.update(
                task,
                description="Saved" if outcome.saved else "Done",
                total=1,
                completed=1,
                status=f"{tokens} tokens",
            )
        return outcome

    def _show(self, event: Event, fmt: str, progress: Progress, task: TaskID) -> None:
        """Show one event as it arrives: the model's name and ETA, each scene in order, progress."""
        seq = cast(dict[str, Any], event).get("seq")
        self._last_seq = seq if isinstance(seq, int) else self._last_seq
        if event["type"] == "accepted":
            self._run_id = event["run_id"]
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


# What starts a run, which --attach (following a run that exists) would leave unused.
_GENERATION_FLAGS = {
    "plot": "--plot",
    "plot_file": "--plot-file",
    "personas": "--persona",
    "title": "--title",
    "story": "--story",
    "model": "--model",
    "max_tokens": "--max-tokens",
    "mode": "--mode",
    "no_save": "--no-save",
    "detach": "--detach",
}


def _attach_alone(options: dict[str, Any]) -> None:
    # `--attach 5 --plot ...` or `--attach 5 --detach` was run as a bare --attach, the rest unsaid.
    given = [
        flag for name, flag in _GENERATION_FLAGS.items() if options.get(name) not in (None, "", False, [])
    ]
    if given:
        raise CommandError(
            f"--attach follows a run that exists and takes no {', '.join(given)}: leave them out, or "
            "leave out --attach to start a run.",
            returncode=EXIT_INVALID,
        )


def _screenplay_of(outcome: RunOutcome) -> tuple[dict[str, Any], str]:
    """The run's screenplay and where it went; a one-line error when it is gone (--attach to a run
    whose story the writer deleted since: the run is kept, its version is not)."""
    gone = CommandError(
        f"run {outcome.run_id} succeeded, but its story was deleted since: there is no screenplay to show.",
        returncode=EXIT_FAILED,
    )
    saved = outcome.saved
    if saved is not None:
        try:
            version = selectors.story_version_saved_get(story_id=saved["story_id"], number=saved["version"])
        except ScreenplayVersion.DoesNotExist:
            raise gone from None
        where = f"Saved story {version.story_id} ({version.story.title!r}), version {version.number}: {saved['url']}"
        return version.content, where
    # An unsaved run keeps its finished screenplay as its raw text (see the pipeline); a saved one has
    # none, so a run followed after its story was deleted has nothing here either.
    try:
        content = json.loads(selectors.run_get(run_id=outcome.run_id).raw_text)
    except ValueError:
        raise gone from None
    return content, f"Not saved (--no-save); run {outcome.run_id} recorded the timings and usage."


def _terminate_cancels(task: asyncio.Task[Any] | None) -> asyncio.Event:
    """Make SIGTERM (``kill``, ``timeout``, a service manager's stop) cancel ``task`` as Ctrl-C does;
    the event it returns is set once it has. Without it the process died at once and left its run
    orphaned, which a server process then resumed, paid for and saved: not what killing it asked."""
    terminated = asyncio.Event()

    def cancel() -> None:
        terminated.set()
        if task is not None:
            task.cancel()

    # Not in the main thread, or no signals here: SIGTERM ends the process as before. asyncio.run's loop
    # removes its signal handlers when it closes.
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, cancel)
    return terminated


def _user(username: str) -> Any:
    user = selectors.user_active_get(username=username)
    if user is None:
        raise CommandError(
            f"No active user named {text_quoted(username)}; pass --user NAME.", returncode=EXIT_INVALID
        )
    return user


def _request(options: dict[str, Any]) -> GenerationRequest:
    if (options["plot"] is None and options["plot_file"] is None) or not options["personas"]:
        raise CommandError(
            "Give --plot (or --plot-file) and at least one --persona, or --attach ID.",
            returncode=EXIT_INVALID,
        )
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
            data = file.read(limit)
    except OSError as error:
        raise CommandError(f"Cannot read {path}: {error.strerror}.", returncode=EXIT_INVALID) from None
    # A byte-order mark (Windows' Notepad writes one) is not the plot's: it was kept as an invisible
    # U+FEFF at the start of the story's plot and of the prompt.
    text = data.removeprefix(codecs.BOM_UTF8)
    try:
        return text.decode("utf-8")
    except UnicodeDecodeError as error:
        if len(data) == limit and error.reason == "unexpected end of data":
            # Cut inside a character at the limit: too long, which the request's check says.
            return text.decode("utf-8", errors="replace")
        byte = error.start + len(data) - len(text) + 1
        raise CommandError(
            f"{path} is not UTF-8 text (byte {byte} is not); save it as UTF-8.",
            returncode=EXIT_INVALID,
        ) from None


def _stdout_quiet() -> None:
    """Point a closed pipe's descriptor at /dev/null, so that Python's flush of stdout at exit does not
    report the same broken pipe again (docs.python.org/3/library/signal.html, "Note on SIGPIPE")."""
    try:
        is_pipe = stat.S_ISFIFO(os.fstat(sys.stdout.fileno()).st_mode)
    except (OSError, ValueError):  # no descriptor: a stream given by call_command
        return
    if is_pipe:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _failure(error: GenerationError) -> CommandError:
    code = EXIT_INVALID if error.code in ("invalid_request", "unknown_personas", "forbidden") else EXIT_FAILED
    retry = " (you can retry)" if error.retryable else ""
    return CommandError(f"{error.code}: {error.message}{retry}", returncode=code)
