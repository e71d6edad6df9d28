"""``manage.py generate_screenplay --detach`` and Ctrl-C: a run that outlives its command, or stops with it.

``--detach`` starts the same command again as a background process of its own session (so the
terminal's Ctrl-C and hang-up do not reach it) with ``--detached-run``; that process starts the run,
writes its id (or ``error <the refusal's event as JSON>``) as its first line of output and then sees
the run to its end, followed by nobody. The first process prints the id and exits, or raises the
refusal as the GenerationError it stands for (the command says it, with the same exit status as
without ``--detach``).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from contextlib import aclosing, suppress
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import CommandError

from stories.errors import GenerationError
from stories.runs.follow import run_events_follow
from stories.runs.log import TERMINAL
from stories.runs.runner import run_cancel

# How long Ctrl-C waits for the cancelled run's ``cancelled`` before the command exits anyway.
CANCEL_WAIT_SECONDS = 5.0
# How long --detach waits for the background process to have its run admitted.
START_WAIT_SECONDS = 60.0

# The options given again to the background process, as (option name, command-line flag).
_VALUE_OPTIONS = (
    ("plot", "--plot"),
    ("plot_file", "--plot-file"),
    ("title", "--title"),
    ("story", "--story"),
    ("model", "--model"),
    ("max_tokens", "--max-tokens"),
    ("mode", "--mode"),
    ("user", "--user"),
)


def run_detach(options: dict[str, Any]) -> int:
    """Start the run in a background process; its id once admitted. A refusal raises its
    GenerationError; a background process that says nothing of the kind, CommandError."""
    # No shell: the arguments are this command's own options, passed on as a list.
    child = subprocess.Popen(  # noqa: S603
        [sys.executable, str(Path(settings.BASE_DIR) / "manage.py"), "generate_screenplay", *_argv(options)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env=os.environ.copy(),
        text=True,
    )
    assert child.stdout is not None
    try:
        first = child.stdout.readline().strip()
    finally:
        child.stdout.close()
    if first.isdigit():
        return int(first)
    with suppress(subprocess.TimeoutExpired):
        child.wait(timeout=START_WAIT_SECONDS)
    refusal = _refusal(first)
    if refusal is None:
        raise CommandError("the background run did not start", returncode=1)
    raise refusal


def detached_refusal_line(refusal: dict[str, Any]) -> str:
    """What the background process writes for a refusal (an ``error`` event of no run)."""
    return f"error {json.dumps(refusal)}"


def _refusal(line: str) -> GenerationError | None:
    if not line.startswith("error "):
        return None
    try:
        return GenerationError.from_event(json.loads(line.removeprefix("error ")))
    except (ValueError, KeyError, TypeError):
        return None  # not an error event (a refusal by cancel, or not JSON at all)


def _argv(options: dict[str, Any]) -> list[str]:
    # `--flag=value`, one argument each: as two, a value starting with "-" (a title "-Redux-", the
    # persona key "-villain") is read by argparse as an option, and the background process refused it.
    argv: list[str] = []
    for name, flag in _VALUE_OPTIONS:
        if options.get(name) not in (None, ""):
            argv.append(f"{flag}={options[name]}")
    for persona in options.get("personas") or []:
        argv.append(f"--persona={persona}")
    if options.get("no_save"):
        argv.append("--no-save")
    return [*argv, "--detached-run"]


async def run_cancel_and_wait(*, run_id: int, after: int) -> None:
    """Cancel the run and wait (a few seconds at most) until it is recorded as ended."""
    await run_cancel(run_id=run_id)
    with suppress(TimeoutError):
        await asyncio.wait_for(_ended(run_id, after), timeout=CANCEL_WAIT_SECONDS)


async def _ended(run_id: int, after: int) -> None:
    async with aclosing(run_events_follow(run_id=run_id, after=after)) as events:
        async for event in events:
            if event["type"] in TERMINAL:
                return
