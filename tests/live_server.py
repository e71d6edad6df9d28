"""Real daphne processes for the tests that need a server as clients meet it (browser, several processes)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def redis_url() -> str:
    """The Redis of the tests that need one across processes: the suite's, else the local default."""
    return os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_up(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"daphne exited with {process.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url + "/accounts/login/", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.2)
    raise RuntimeError(f"daphne did not answer within 30 s:\n{log.read_text()}")


def daphne_start(*, env: dict[str, str], log: Path) -> tuple[str, subprocess.Popen[bytes]]:
    """A daphne serving the project with ``env``, up and answering; its URL and process."""
    port = free_port()
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("daphne")),
                "-b",
                "127.0.0.1",
                "-p",
                str(port),
                "storyproject.asgi:application",
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url, process, log)
    except BaseException:
        daphne_stop(process)
        raise
    return url, process


def daphne_stop(process: subprocess.Popen[bytes]) -> None:
    """Stop it as a deploy would (SIGTERM), killing it only if it has not gone within 10 s."""
    process.terminate()
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10)
    if process.poll() is None:
        process.kill()
        process.wait()


def server_env(*, database: Path, **settings: str) -> dict[str, str]:
    """This environment without the app's own settings, on a SQLite file, with ``settings`` added."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("ANTHROPIC_", "STORY_", "REDIS_", "DATABASE_", "CACHE_"))
    }
    env.update(
        DATABASE_URL=f"sqlite:///{database}",
        DJANGO_SETTINGS_MODULE="storyproject.settings",
        DJANGO_DEBUG="1",
        PYTHONUNBUFFERED="1",
        **settings,
    )
    return env


_WRITER_SEED = """
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token
from personas.models import PersonaConfig
user = get_user_model().objects.create_user(username="writer", password="pw-writer")
for name, shown in (("noir-detective", "Sam Spade"), ("femme-fatale", "Brigid")):
    PersonaConfig.objects.create(name=name, display_name=shown, config_data={"personality": "Sharp.", "voice": "Dry."})
print(Token.objects.create(user=user).key)
"""


def writer_seeded(env: dict[str, str]) -> str:
    """The database of ``env`` migrated, with a writer and two personas; the writer's API token."""
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True
    )
    seeded = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", _WRITER_SEED],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return seeded.stdout.strip().splitlines()[-1]
