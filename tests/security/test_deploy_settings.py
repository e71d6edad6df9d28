from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _production_env(**extra: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DJANGO_", "DATABASE_URL", "REDIS_URL", "ANTHROPIC_"))
    }
    env.update(
        DJANGO_DEBUG="0",
        DJANGO_SECRET_KEY=secrets.token_urlsafe(50),
        DJANGO_ALLOWED_HOSTS="studio.example",
        DJANGO_SETTINGS_MODULE="storyproject.settings",
        **extra,
    )
    return env


def _manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def test_check_deploy_reports_nothing_with_production_settings() -> None:
    result = _manage("check", "--deploy", "--fail-level", "WARNING", env=_production_env())
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout


def test_check_deploy_flags_production_without_https() -> None:
    # The test above can only pass because the HTTPS settings are on: turning them off must show.
    result = _manage(
        "check", "--deploy", "--fail-level", "WARNING", env=_production_env(DJANGO_SECURE_SSL="0")
    )
    assert result.returncode != 0
    assert "security.W004" in result.stderr + result.stdout  # no HSTS
    assert "security.W012" in result.stderr + result.stdout  # session cookie not secure


def test_production_responses_carry_hsts_secure_cookies_and_redirect_to_https() -> None:
    script = (
        "import django; django.setup()\n"
        "from django.test import Client\n"
        "from django.test.utils import setup_test_environment; setup_test_environment()\n"
        # Production serves a collectstatic manifest; this check needs none.
        "from django.test import override_settings\n"
        "override_settings(STORAGES={'staticfiles': {'BACKEND': "
        "'django.contrib.staticfiles.storage.StaticFilesStorage'}}).enable()\n"
        "c = Client(SERVER_NAME='studio.example')\n"
        "r = c.get('/admin/login/')\n"
        "print('redirect', r.status_code, r.get('Location'))\n"
        "r = c.get('/admin/login/', secure=True)\n"
        "print('hsts', r.get('Strict-Transport-Security'))\n"
        "print('csp', 'frame-ancestors' in r.get('Content-Security-Policy', ''))\n"
        "print('csrf-secure', bool(r.cookies['csrftoken']['secure']))\n"
        "from django.conf import settings; print('session-secure', settings.SESSION_COOKIE_SECURE)\n"
    )
    env = _production_env(DATABASE_URL="sqlite:///:memory:")
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "redirect 301 https://studio.example/admin/login/" in out
    assert "hsts max-age=31536000; includeSubDomains; preload" in out
    assert "csp True" in out
    assert "csrf-secure True" in out
    assert "session-secure True" in out
