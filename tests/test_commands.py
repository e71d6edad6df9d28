"""The project's management commands as an operator meets them when the database cannot be used."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command, get_commands, load_command_class
from django.core.management.base import CommandError
from django.db import connection

from storyproject.commands import EXIT_FAILED, EXIT_INVALID, ProjectCommand

ROOT = Path(__file__).resolve().parent.parent
PROJECT_APPS = ("stories", "personas", "accounts")


def _project_commands() -> dict[str, str]:
    return {name: app for name, app in get_commands().items() if app in PROJECT_APPS}


def test_every_command_of_the_project_says_a_database_failure_in_one_line() -> None:
    commands = _project_commands()
    assert {"generate_screenplay", "import_personas", "load_demo", "recover_runs"} <= set(commands)
    for name, app in commands.items():
        assert isinstance(load_command_class(app, name), ProjectCommand), name


@pytest.mark.parametrize(
    "arguments",
    [
        ["generation_report"],
        ["load_demo"],
        [
            "generate_screenplay",
            "--plot",
            "A lighthouse keeper reads a storm.",
            "--persona",
            "noir-detective",
        ],
    ],
)
def test_a_command_on_a_database_it_cannot_open_exits_1_with_one_line_and_no_traceback(
    tmp_path: Path, arguments: list[str]
) -> None:
    result = _manage_on(f"sqlite:///{tmp_path}/missing/db.sqlite3", arguments)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "CommandError: the database (DATABASE_URL) failed: unable to open database file"
    )
    assert "Traceback" not in result.stderr


def _manage_on(database_url: str, arguments: list[str]) -> subprocess.CompletedProcess[str]:
    """``manage.py arguments`` in a process of its own on ``database_url``, without Redis."""
    env = {**os.environ, "DATABASE_URL": database_url}
    env.pop("REDIS_URL", None)
    return subprocess.run(
        [sys.executable, "manage.py", *arguments],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("arguments", [["generation_report"], ["load_demo"], ["recover_runs"]])
def test_a_postgresql_server_that_refuses_is_one_line_naming_why_at_once(arguments: list[str]) -> None:
    # Was: psycopg's pool retried for its 10 s timeout, logging two lines a try (some 16 lines), then
    # the command said only "couldn't get a connection after 10.00 sec", never why (a server down, a
    # database or role that does not exist), which only the warnings above it had said.
    result = _manage_on("postgres://postgres@127.0.0.1:1/story", arguments)  # nothing on port 1
    assert result.returncode == 1
    # Said by the one direct try, not by the pool (no warnings, no wait for its timeout).
    assert result.stderr.strip() == (
        "CommandError: the database (DATABASE_URL) failed: connection failed: connection to server at "
        '"127.0.0.1", port 1 failed: Connection refused'
    )


@pytest.mark.parametrize("arguments", [["migrate"], ["showmigrations"], ["createsuperuser", "--noinput"]])
def test_djangos_own_commands_on_a_database_they_cannot_use_say_why_in_one_line(
    tmp_path: Path, arguments: list[str]
) -> None:
    # Was: the pool's warnings for 10 s, then some 60 lines of traceback ending in "couldn't get a
    # connection after 10.00 sec" (`manage.py migrate`, the first step of every deployment).
    result = _manage_on("postgres://postgres@127.0.0.1:5432/story_no_such_database", arguments)
    assert (result.returncode, result.stderr.strip()) == (
        1,
        "CommandError: the database (DATABASE_URL) failed: connection failed: connection to server at "
        '"127.0.0.1", port 5432 failed: FATAL:  database "story_no_such_database" does not exist',
    )
    result = _manage_on(f"sqlite:///{tmp_path}/missing/db.sqlite3", arguments)
    assert (result.returncode, result.stderr.strip()) == (
        1,
        "CommandError: the database (DATABASE_URL) failed: unable to open database file",
    )


def test_claude_check_does_not_need_the_database() -> None:
    env = {**os.environ, "DATABASE_URL": "postgres://postgres@127.0.0.1:1/story", "ANTHROPIC_API_KEY": ""}
    result = subprocess.run(
        [sys.executable, "manage.py", "claude_check"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stderr.strip() == "CommandError: ANTHROPIC_API_KEY is not set: there is nothing to check"


@pytest.mark.parametrize(
    ("setting", "said"),
    [
        (
            {"DJANGO_DEBUG": "maybe"},
            "DJANGO_DEBUG must be one of 1/0, true/false, yes/no, on/off; got 'maybe'",
        ),
        (
            {"DJANGO_DEBUG": "0", "DJANGO_SECRET_KEY": ""},
            "DJANGO_SECRET_KEY is required when DJANGO_DEBUG is off",
        ),
        ({"STORY_MAX_TOKENS": "lots"}, "STORY_MAX_TOKENS must be an integer; got 'lots'"),
    ],
)
def test_a_bad_setting_is_one_line_naming_it_not_a_traceback(setting: dict[str, str], said: str) -> None:
    # Was: every manage.py command (`make run`'s migrate first) printed some 20 lines of Django's
    # traceback through the settings' import, the variable named only on the last one.
    result = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--check"],
        cwd=ROOT,
        env={**os.environ, **setting},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2  # refused, nothing done (as make serve's refusals)
    assert result.stderr == f"ImproperlyConfigured: {said}\n"


def test_ctrl_c_while_a_command_loads_is_one_line_and_status_1_not_a_traceback() -> None:
    # Was: Ctrl-C in the seconds Django takes to load a command (5 s and more on a busy machine, before
    # generate_screenplay's own Ctrl-C handling is reached) printed a KeyboardInterrupt traceback of
    # some 40 lines through Django's and the importer's frames.
    driver = (
        "import os, runpy, signal, sys\n"
        "class CtrlC:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'stories.management.commands.generation_report':\n"
        "            os.kill(os.getpid(), signal.SIGINT)\n"
        "sys.meta_path.insert(0, CtrlC())\n"
        "sys.argv = ['manage.py', 'generation_report']\n"
        "runpy.run_path('manage.py', run_name='__main__')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", driver],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        # A terminal's foreground job: Ctrl-C's SIGINT not ignored.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert result.stderr == "interrupted (Ctrl-C)\n"
    assert result.returncode == 1


def _database_url() -> str:
    """The test database, for a command run in another process."""
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    return f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


@pytest.mark.django_db(transaction=True)
def test_generate_screenplay_with_redis_down_goes_on_and_says_each_outage_in_one_line(
    writer: Any, persona_factory: Any
) -> None:
    # Redis only speeds things up (docs/security.md, "Redis down"): the run is saved. Its outage was
    # logged as two chained tracebacks per part that uses Redis (the run events' writer, the cancel
    # watcher), some 100 lines of Python on a terminal for a run that went well.
    persona_factory("noir-detective")
    env = {key: value for key, value in os.environ.items() if key not in ("ANTHROPIC_API_KEY", "STORY_MODEL")}
    env.update(
        DATABASE_URL=_database_url(),
        REDIS_URL="redis://127.0.0.1:1/0",  # nothing listens on port 1
        STORY_OFFLINE_TOKENS_PER_SECOND="0",
    )
    result = subprocess.run(
        [
            sys.executable,
            "manage.py",
            "generate_screenplay",
            "--plot",
            "A storm.",
            "--persona",
            "noir-detective",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "Saved story" in result.stderr
    assert "Traceback" not in result.stderr
    outages = [line for line in result.stderr.splitlines() if "Redis failed" in line]
    assert outages, result.stderr
    assert all("Error 111 connecting to 127.0.0.1:1" in line for line in outages), outages


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("arguments", "said"),
    [
        (["import_personas", "/nonexistent/cast.json"], "Nothing imported: cannot read"),
        (["export_personas", "ghost"], "No persona named: 'ghost'"),
        (["generation_report", "--since", "yesterday"], "is not a date"),
        (["load_demo"], "DJANGO_DEBUG is off"),
        (["claude_check"], "ANTHROPIC_API_KEY is not set"),
    ],
)
def test_a_command_that_refuses_its_input_or_configuration_exits_2_as_generate_screenplay_does(
    settings: Any, arguments: list[str], said: str
) -> None:
    # Was 1, as for a failure, where generate_screenplay said a refused request with 2: a script could
    # not tell "nothing was done, fix the command line" from "it ran and failed" (docs/contributing.md).
    settings.DEBUG, settings.ANTHROPIC_API_KEY = False, ""
    with pytest.raises(CommandError, match=said) as refused:
        call_command(*arguments, stdout=io.StringIO())
    assert refused.value.returncode == EXIT_INVALID == 2


@pytest.mark.django_db
def test_a_command_whose_work_fails_exits_1(persona_factory: Any, tmp_path: Path) -> None:
    persona_factory("halcyon")
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("taken")
    with pytest.raises(CommandError, match="Could not write to") as failed:
        call_command("export_personas", "halcyon", "--out", str(not_a_folder), stdout=io.StringIO())
    assert failed.value.returncode == EXIT_FAILED == 1


def test_import_personas_help_names_every_kind_of_file_it_reads() -> None:
    # It read zips (the admin's export of several personas) and said only "JSON or PNG".
    command = load_command_class("personas", "import_personas")
    text = " ".join(command.create_parser("manage.py", "import_personas").format_help().split())
    assert "a zip of such files" in text
    assert "exit status 2" in text


@pytest.mark.django_db
def test_import_personas_lists_names_in_another_script_whatever_the_locale(tmp_path: Path) -> None:
    # Standard output in the locale's encoding (cp1252 for a file on Windows, Latin-1 here): the personas
    # were imported, then their list was a UnicodeEncodeError traceback and exit status 1.
    cards = tmp_path / "cast.json"
    cards.write_text('[{"name": "poet", "display_name": "松尾 葵", "config_data": {"voice": "Soft."}}]')
    raw = io.BytesIO()
    out = io.TextIOWrapper(raw, encoding="latin-1")
    call_command("import_personas", str(cards), stdout=out)
    out.flush()
    assert "created poet (松尾 葵)" in raw.getvalue().decode("utf-8")
