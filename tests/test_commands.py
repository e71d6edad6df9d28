"""The project's management commands as an operator meets them when the database cannot be used."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import get_commands, load_command_class

from storyproject.commands import ProjectCommand

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
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path}/missing/db.sqlite3"}
    env.pop("REDIS_URL", None)
    result = subprocess.run(
        [sys.executable, "manage.py", *arguments],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "CommandError: the database (DATABASE_URL) failed: unable to open database file"
    )
    assert "Traceback" not in result.stderr
