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


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "storyproject.settings")
    from django.core.exceptions import ImproperlyConfigured

    try:
        from django.core.management import execute_from_command_line

        execute_from_command_line(sys.argv)
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


if __name__ == "__main__":
    main()
