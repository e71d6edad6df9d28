from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command

from stories.generation.models_registry import DEFAULT_MODEL
from storyproject.env import database_from_url, envbool, envint, envlist, envnetworks, envtoken, redis_url


@pytest.mark.parametrize("raw", ["maybe", "2", "yes please"])
def test_envbool_rejects_values_that_are_not_booleans(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv("FLAG", raw)
    with pytest.raises(ImproperlyConfigured, match="FLAG"):
        envbool("FLAG", False)


@pytest.mark.parametrize(("raw", "expected"), [("1", True), ("off", False), ("TRUE", True), ("", False)])
def test_envbool_reads_the_usual_spellings(monkeypatch: pytest.MonkeyPatch, raw: str, expected: bool) -> None:
    monkeypatch.setenv("FLAG", raw)
    assert envbool("FLAG", not expected) is expected


def test_envint_rejects_text_and_values_out_of_range(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("N", "12k")
    with pytest.raises(ImproperlyConfigured, match="integer"):
        envint("N", 1)
    monkeypatch.setenv("N", "10")
    with pytest.raises(ImproperlyConfigured, match="at least 256"):
        envint("N", 1, minimum=256)
    with pytest.raises(ImproperlyConfigured, match="at most 5"):
        envint("N", 1, maximum=5)


def test_envint_uses_the_default_when_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("N", raising=False)
    assert envint("N", 42) == 42


def test_envlist_splits_and_trims(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOSTS", " a.example , b.example,, ")
    assert envlist("HOSTS", []) == ["a.example", "b.example"]


def test_envnetworks_normalizes_networks_and_rejects_anything_else(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NETS", "10.1.2.3/8, ::1 ,192.168.0.7")
    assert envnetworks("NETS") == ["10.0.0.0/8", "::1/128", "192.168.0.7/32"]
    monkeypatch.setenv("NETS", "10.0.0.0/8,intranet")
    with pytest.raises(ImproperlyConfigured, match="'intranet'"):
        envnetworks("NETS")


def test_database_url_reads_postgres_with_pool() -> None:
    db = database_from_url("postgres://me:p%40ss@db.local:6543/story", base_dir="/srv")
    assert db["ENGINE"] == "django.db.backends.postgresql"
    assert (db["NAME"], db["USER"], db["PASSWORD"], db["HOST"], db["PORT"]) == (
        "story",
        "me",
        "p@ss",
        "db.local",
        "6543",
    )
    options = db["OPTIONS"]
    assert isinstance(options, dict) and options["pool"]["max_size"] == 20


def test_database_url_reads_relative_and_absolute_sqlite() -> None:
    assert database_from_url("sqlite:///db.sqlite3", base_dir="/srv")["NAME"] == "/srv/db.sqlite3"
    assert database_from_url("sqlite:////tmp/x.db", base_dir="/srv")["NAME"] == "/tmp/x.db"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://root@localhost/x", "must start with sqlite:// or postgres://"),
        ("postgres://localhost/", "needs a database name"),
        ("sqlite://", "needs a file path"),
        ("sqlite:///%00x", "SQLite file path holds a NUL character"),
        ("postgres://localhost/x%00y", "database name holds a NUL character"),
        ("postgres://localhost:99999/x", "port must be a number from 1 to 65535"),
        # Port 0 became no port, so PostgreSQL's default (5432): another server than the one named.
        ("postgres://localhost:0/x", "DATABASE_URL's port must be a number from 1 to 65535"),
        # A ValueError from urlparse, with a traceback that named no variable.
        ("postgres://u:secret@[::1/x", "DATABASE_URL cannot be read as a URL: Invalid IPv6 URL"),
        ("postgres://localhost/x?pool_max=abc", "pool_max must be a number from 1 to 1000"),
        ("postgres://localhost/x?pool_max=0", "pool_max must be a number from 1 to 1000"),
        ("postgres://localhost/x?sslmode=bogus", "sslmode must be one of disable, allow, prefer"),
    ],
)
def test_database_url_rejects_what_would_fail_later_with_a_clear_message(url: str, message: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=message):
        database_from_url(url, base_dir="/srv")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://127.0.0.1:6379/7", "REDIS_URL must start with redis://, rediss:// or unix://"),
        ("redis://127.0.0.1:6379/abc", "REDIS_URL's path must be a database number"),
        ("redis://127.0.0.1:70000/0", "REDIS_URL's port must be a number from 1 to 65535"),
        ("redis://127.0.0.1:0/0", "REDIS_URL's port must be a number from 1 to 65535"),
        ("redis://[::1/0", "REDIS_URL cannot be read as a URL: Invalid IPv6 URL"),
    ],
)
def test_settings_refuse_a_redis_url_redis_py_cannot_use(url: str, message: str) -> None:
    # It passed start-up, and every generation then failed with "the generation failed unexpectedly".
    assert message in _settings_refusal(REDIS_URL=url)


def test_redis_url_takes_what_redis_py_takes(monkeypatch: pytest.MonkeyPatch) -> None:
    for url in ("redis://127.0.0.1:6379/0", "rediss://:pw@cache.local:6380", "unix:///run/redis.sock?db=2"):
        monkeypatch.setenv("REDIS_URL", url)
        assert redis_url("REDIS_URL") == url


def test_settings_refuse_a_missing_prometheus_multiprocess_directory(tmp_path: Path) -> None:
    refusal = _settings_refusal(PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "missing"))
    assert "PROMETHEUS_MULTIPROC_DIR must name an existing directory" in refusal


def test_an_empty_prometheus_multiprocess_directory_is_unset(tmp_path: Path) -> None:
    # Set but empty (an `Environment=PROMETHEUS_MULTIPROC_DIR=` line), it was unset for this code and
    # multiprocess mode for prometheus-client, which wrote each process's .db files into the current
    # directory (the checkout), a new pair at every start.
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); from stories import metrics"],
        env={
            "DJANGO_SETTINGS_MODULE": "storyproject.settings",
            "PATH": "",
            "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
            "PROMETHEUS_MULTIPROC_DIR": "",
        },
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert list(tmp_path.iterdir()) == []


def _settings_refusal(**environ: str) -> str:
    """What django.setup() prints when it refuses the environment, in a fresh process."""
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        env={"DJANGO_SETTINGS_MODULE": "storyproject.settings", "PATH": "", **environ},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    return result.stderr


def test_settings_refuse_to_start_without_a_secret_key_when_debug_is_off() -> None:
    assert "DJANGO_SECRET_KEY is required" in _settings_refusal(DJANGO_DEBUG="0")


def test_settings_refuse_a_short_metrics_token() -> None:
    assert "METRICS_TOKEN must be at least 16 characters" in _settings_refusal(METRICS_TOKEN="short")


@pytest.mark.parametrize("token", ["tökén-0123456789abcdef", "metrics\ttoken-0123456789"])
def test_settings_refuse_a_metrics_token_no_scrape_could_send(token: str) -> None:
    # A header carries printable ASCII only: Django reads its bytes as Latin-1, so a UTF-8 "ö" arrived
    # as "Ã¶" and the token never matched; every scrape was a 401, with nothing said at start-up.
    refusal = _settings_refusal(METRICS_TOKEN=token)
    assert "METRICS_TOKEN must be printable ASCII" in refusal
    assert token not in refusal  # a secret is not repeated in the log


def test_envtoken_takes_printable_ascii(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKEN", "  a-Z_0.9~+/= !#  ")
    assert envtoken("TOKEN", min_chars=4) == "a-Z_0.9~+/= !#"
    monkeypatch.setenv("TOKEN", "")
    assert envtoken("TOKEN", min_chars=4) == ""


@pytest.mark.parametrize("level", ["loud", "10", "verbose"])
def test_settings_refuse_a_log_level_logging_does_not_know(level: str) -> None:
    # It stopped start-up (and make serve) with logging's "ValueError: Unable to configure root logger",
    # a traceback that did not name the variable.
    refusal = _settings_refusal(DJANGO_LOG_LEVEL=level)
    assert f"DJANGO_LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL; got {level!r}" in refusal
    assert "Unable to configure root logger" not in refusal


def test_settings_refuse_an_http_client_they_do_not_know() -> None:
    assert "STORY_LLM_HTTP_CLIENT must be 'aiohttp' or 'httpx'" in _settings_refusal(
        STORY_LLM_HTTP_CLIENT="curl"
    )


def test_settings_read_the_log_level_in_any_case() -> None:
    result = subprocess.run(
        [sys.executable, "-c", "import django, logging; django.setup(); print(logging.getLogger().level)"],
        env={"DJANGO_SETTINGS_MODULE": "storyproject.settings", "PATH": "", "DJANGO_LOG_LEVEL": " debug "},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "10"


def test_settings_refuse_max_tokens_bounds_that_leave_no_value() -> None:
    # Start-up passed, and every request naming max_tokens was then refused with "max_tokens must be
    # between 20000 and 16000", while the create page offered no length at all.
    refusal = _settings_refusal(STORY_MIN_MAX_TOKENS="20000")
    assert "STORY_MIN_MAX_TOKENS (20000) must not be above STORY_MAX_MAX_TOKENS (16000)" in refusal


@pytest.mark.parametrize(
    ("setting", "maximum"),
    [("DJANGO_DATA_UPLOAD_MAX_BYTES", 1_073_741_824), ("STORY_MAX_PLOT_CHARS", 1_000_000)],
)
def test_settings_refuse_a_size_no_read_can_take(setting: str, maximum: int) -> None:
    # Start-up passed, then `import_personas` (which reads a file up to the upload limit) and
    # `generate_screenplay --plot-file` (up to four bytes a plot character) stopped with Python's
    # "OverflowError: cannot fit 'int' into an index-sized integer" and its traceback.
    refusal = _settings_refusal(**{setting: "99999999999999999999"})
    assert f"{setting} must be at most {maximum}" in refusal


def test_settings_refuse_token_user_caching_without_a_shared_cache() -> None:
    # Each process then cached token users in its own memory: a token revoked from another process (the
    # admin of a second server process, a shell) went on signing requests in for up to five minutes (the entries last 300 s).
    refusal = _settings_refusal(STORY_CACHE_TOKEN_USERS="1")
    assert "STORY_CACHE_TOKEN_USERS needs REDIS_URL" in refusal


def test_settings_refuse_a_max_tokens_bound_no_model_can_write() -> None:
    # Start-up passed with STORY_MAX_MAX_TOKENS=99999999999; a request for 3,000,000,000 tokens was then
    # admitted, and on PostgreSQL its run's record failed ("integer out of range"): llm_unavailable.
    refusal = _settings_refusal(STORY_MAX_MAX_TOKENS="99999999999")
    assert "STORY_MAX_MAX_TOKENS must be at most 128000" in refusal


@pytest.mark.parametrize(
    "setting",
    [
        "STORY_STREAMING_STALE_SECONDS",
        "STORY_LLM_CONNECT_TIMEOUT_SECONDS",
        "STORY_LLM_READ_TIMEOUT_SECONDS",
        "STORY_LLM_RETRY_AFTER_CAP_SECONDS",
    ],
)
def test_settings_refuse_a_duration_too_long_to_be_used(setting: str) -> None:
    # Start-up passed, then every admission (the stale-run cut-off, "now" minus 10**11 s, is before year
    # 1) or every model call (a socket timeout past what a time_t holds) failed with an OverflowError.
    refusal = _settings_refusal(**{setting: "100000000000"})
    assert f"{setting} must be at most " in refusal


def test_manage_check_is_clean(capsys: pytest.CaptureFixture[str]) -> None:
    call_command("check", fail_level="WARNING")
    assert "no issues" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"STORY_MODEL": DEFAULT_MODEL}, "STORY_MODEL"),
        ({"STORY_MODELS": f"offline,{DEFAULT_MODEL}"}, "STORY_MODELS"),
    ],
)
def test_settings_refuse_a_claude_model_without_the_key(environ: dict[str, str], named: str) -> None:
    # It started, and the offline model wrote that model's runs, recorded and priced as Claude's; only
    # /readyz said anything.
    refusal = _settings_refusal(**environ)
    assert f"{named} names the Claude model {DEFAULT_MODEL!r} but ANTHROPIC_API_KEY is not set" in refusal


def test_settings_take_a_claude_model_without_the_key_for_a_back_end_chosen_explicitly() -> None:
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        env={
            "DJANGO_SETTINGS_MODULE": "storyproject.settings",
            "PATH": "",
            "STORY_MODEL": DEFAULT_MODEL,
            "STORY_BACKEND": "stories.generation.backends.offline.OfflineBackend",
        },
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("environ", "limit"),
    [
        (
            {"STORY_IMPORT_MAX_BYTES": "2000000", "API_MAX_BODY_BYTES": "1048576"},
            "API_MAX_BODY_BYTES (1048576)",
        ),
        (
            {"STORY_IMPORT_MAX_BYTES": "500000", "DJANGO_DATA_UPLOAD_MAX_BYTES": "200000"},
            "DJANGO_DATA_UPLOAD_MAX_BYTES (200000)",
        ),
    ],
)
def test_settings_refuse_an_import_limit_above_the_body_limits(environ: dict[str, str], limit: str) -> None:
    # Was only advised against in the docs: a screenplay the import took could not be saved from the
    # editor afterwards (a 413 for its JSON body).
    refusal = _settings_refusal(**environ)
    assert (
        f"STORY_IMPORT_MAX_BYTES ({environ['STORY_IMPORT_MAX_BYTES']}) must not be above {limit}" in refusal
    )
