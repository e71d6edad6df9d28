"""The base of the project's management commands: a database they cannot use is one line, not a traceback.

An operator's typo in ``DATABASE_URL``, a database server that is down or refuses the credentials, a
database never migrated: every command of the project but ``claude_check`` reads or writes the database,
and each of these surfaced as a page of Django's and psycopg's traceback. Said as a ``CommandError`` it
is one line on standard error and exit status 1, and ``--traceback`` still shows where it came from.

PostgreSQL is reached through psycopg's pool, which retries a connection that fails until its timeout
(10 s), logging each try, and then says only that it got none. A command therefore first connects once
without the pool: a server down, a database or role that does not exist is said at once, in libpq's
words.

Redis only speeds things up (docs/security.md, "Redis down"): a command goes on without it, and what
failed on the way is logged as a server logs it (``storyproject.logs.RepeatedFailure``), but in one line
naming the error, without the traceback, which on a terminal read as a crash; ``--traceback`` shows it.
"""

from __future__ import annotations

import codecs
import contextlib
import io
import logging
import sys
from collections.abc import Iterator
from typing import Any

import psycopg
from django.core.management.base import BaseCommand, CommandError
from django.db import Error as DatabaseError
from django.db import connection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

# Every command's exit statuses, so that a script can tell a refused request from a failure: 2 when
# nothing was done because the input or the configuration was refused (as argparse's own usage errors),
# 1 when the work ran and failed (an outage, a failed run, a file that could not be written).
EXIT_INVALID = 2
EXIT_FAILED = 1


class ProjectCommand(BaseCommand):
    """A ``BaseCommand`` whose database failures end it with one line saying so, and whose Redis
    outages are logged in one line each."""

    # False for a command that never touches the database (claude_check): it runs with it down.
    uses_database = True

    def execute(self, *args: Any, **options: Any) -> str | None:
        stdout_utf8(options.get("stdout") or sys.stdout)
        outages = contextlib.nullcontext() if options.get("traceback") else redis_outages_in_one_line()
        try:
            with outages:
                if self.uses_database:
                    database_connect_once()
                return super().execute(*args, **options)
        except (DatabaseError, psycopg.Error) as error:
            raise CommandError(database_failure(error)) from error


def stdout_utf8(stdout: object) -> None:
    """Write UTF-8, the encoding of Fountain files and of JSON, whatever the locale.

    Standard output takes the locale's encoding: redirected to a file on Windows (cp1252) or under a
    Latin-1 locale, the first Chinese or Arabic name was a UnicodeEncodeError traceback, which ended
    generate_screenplay's run and import_personas' list of what it had imported."""
    if isinstance(stdout, io.TextIOWrapper) and codecs.lookup(stdout.encoding).name != "utf-8":
        stdout.reconfigure(encoding="utf-8")


def database_connect_once() -> None:
    """Connect to a pooled PostgreSQL database once, directly, and close: its failure is raised at once.

    The same parameters as Django's own connections (``get_connection_params``, which leaves the pool's
    options out), with the pool's timeout as libpq's ``connect_timeout`` unless DATABASE_URL sets one.
    """
    pool = connection.settings_dict["OPTIONS"].get("pool") if connection.vendor == "postgresql" else None
    if not pool:
        return
    params = connection.get_connection_params()
    params.setdefault("connect_timeout", pool.get("timeout", 10) if isinstance(pool, dict) else 10)
    psycopg.connect(**params).close()


def database_failure(error: Exception) -> str:
    """What failed, in one line: the driver's first line (libpq's and SQLite's name no password)."""
    text = str(error).strip()
    reason = text.splitlines()[0] if text else type(error).__name__
    return f"the database (DATABASE_URL) failed: {reason}"


class _RedisOutageInOneLine(logging.Filter):
    """A log record carrying a Redis connection failure: its error's text joins the message, in place
    of the traceback (the first handler rewrites the record; the next ones see it rewritten)."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, RedisConnectionError | RedisTimeoutError):
            record.msg, record.args = f"{record.getMessage()}: {error}", None
            record.exc_info = record.exc_text = None
        return True


@contextlib.contextmanager
def redis_outages_in_one_line() -> Iterator[None]:
    """While it lasts, a Redis outage logged by anything (with its traceback) is one line."""
    one_line = _RedisOutageInOneLine()
    handlers = list(logging.getLogger().handlers)
    for handler in handlers:
        handler.addFilter(one_line)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(one_line)
