#!/usr/bin/env python
"""Django's command-line utility for administrative tasks."""

from __future__ import annotations

import os
import sys

# The exit status of a command stopped by Ctrl-C, as generate_screenplay and recover_runs say theirs.
EXIT_INTERRUPTED = 1
# The exit status of a command refused for a bad setting: nothing was done, as for any refused input
# or configuration (storyproject.commands.EXIT_INVALID; make serve's refusals too).
EXIT_IMPROPERLY_CONFIGURED = 2
# The exit status of a command whose database failed (storyproject.commands.EXIT_FAILED).
EXIT_DATABASE_FAILED = 1
# Django's own commands that open the database before anything else. The project's own commands say a
# database they cannot use in one line, at once (storyproject.commands); these do too, rather than
# after the connection pool's 10 s of retries, with its warnings and a traceback.
DJANGO_DATABASE_COMMANDS = frozenset(
    {
        "changepassword",
        "createcachetable",
        "createsuperuser",
        "dumpdata",
        "flush",
        "loaddata",
        "migrate",
        "remove_stale_contenttypes",
        "showmigrations",
        "sqlflush",
        "sqlsequencereset",
    }
)


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "storyproject.settings")
    import psycopg
    from django.core.exceptions import ImproperlyConfigured
    from django.db import Error as DatabaseError

    try:
        from django.core.management import execute_from_command_line

        if _opens_the_database_first(sys.argv):
            _database_connect_once()
        execute_from_command_line(sys.argv)
    except (DatabaseError, psycopg.Error) as error:
        # A database failure that reached here (not a project command's: those say it themselves).
        if "--traceback" in sys.argv:
            raise
        from storyproject.commands import database_failure

        sys.stderr.write(f"CommandError: {database_failure(error)}\n")
        sys.exit(EXIT_DATABASE_FAILED)
    except ImproperlyConfigured as error:
        # A setting the environment gives a bad value (storyproject/env.py names it): one line, as a
        # CommandError is, not Django's traceback through the settings' import; --traceback shows it.
        if "--traceback" in sys.argv:
            raise
        sys.stderr.write(f"ImproperlyConfigured: {error}\n")
        sys.exit(EXIT_IMPROPERLY_CONFIGURED)
    except KeyboardInterrupt:
        # Ctrl-C that no command handled itself, mostly while Django loads the settings, the apps and
        # the command (seconds on a busy machine): one line, not Python's traceback of the importer.
        sys.stderr.write("interrupted (Ctrl-C)\n")
        sys.exit(EXIT_INTERRUPTED)


def _opens_the_database_first(argv: list[str]) -> bool:
    asked = set(argv[2:])
    return (
        len(argv) > 1 and argv[1] in DJANGO_DATABASE_COMMANDS and not asked & {"-h", "--help", "--traceback"}
    )


def _database_connect_once() -> None:
    """One direct connection (storyproject.commands.database_connect_once): libpq says why at once."""
    import django

    django.setup()
    from storyproject.commands import database_connect_once

    database_connect_once()


if __name__ == "__main__":
    main()
