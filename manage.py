#!/usr/bin/env python
"""Django's command-line utility for administrative tasks."""

from __future__ import annotations

import os
import sys

# The exit status of a command stopped by Ctrl-C, as generate_screenplay and recover_runs say theirs.
EXIT_INTERRUPTED = 1


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "storyproject.settings")
    try:
        from django.core.management import execute_from_command_line

        execute_from_command_line(sys.argv)
    except KeyboardInterrupt:
        # Ctrl-C that no command handled itself, mostly while Django loads the settings, the apps and
        # the command (seconds on a busy machine): one line, not Python's traceback of the importer.
        sys.stderr.write("interrupted (Ctrl-C)\n")
        sys.exit(EXIT_INTERRUPTED)


if __name__ == "__main__":
    main()
