"""The base of the project's management commands: a database they cannot use is one line, not a traceback.

An operator's typo in ``DATABASE_URL``, a database server that is down or refuses the credentials, a
database never migrated: every command of the project reads or writes the database, and each of these
surfaced as a page of Django's and psycopg's traceback. Said as a ``CommandError`` it is one line on
standard error and exit status 1, and ``--traceback`` still shows where it came from.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import Error as DatabaseError


class ProjectCommand(BaseCommand):
    """A ``BaseCommand`` whose database failures end it with one line saying so."""

    def execute(self, *args: Any, **options: Any) -> str | None:
        try:
            return super().execute(*args, **options)
        except DatabaseError as error:
            raise CommandError(database_failure(error)) from error


def database_failure(error: DatabaseError) -> str:
    """What failed, in one line: the driver's first line (libpq's and SQLite's name no password)."""
    text = str(error).strip()
    reason = text.splitlines()[0] if text else type(error).__name__
    return f"the database (DATABASE_URL) failed: {reason}"
