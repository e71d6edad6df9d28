"""Small typed readers for settings that come from the environment.

Each one fails loudly with ``ImproperlyConfigured`` on a value it cannot use, so a typo in a
deployment stops the process at start-up instead of surfacing as odd behaviour later.
"""

from __future__ import annotations

import ipaddress
import os
from urllib.parse import ParseResult, parse_qs, unquote, urlparse

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def envbool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be one of 1/0, true/false, yes/no, on/off; got {raw!r}")


def envint(name: str, default: int, *, minimum: int | None = None, maximum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer; got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}; got {value}")
    if maximum is not None and value > maximum:
        raise ImproperlyConfigured(f"{name} must be at most {maximum}; got {value}")
    return value


def envstr(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip()


def envtoken(name: str, *, min_chars: int) -> str:
    """A secret a client sends in an HTTP header ("" when unset): printable ASCII, at least ``min_chars``.

    A header carries nothing else (RFC 9110, field values; Django reads a header's bytes as Latin-1), so
    a token with any other character could never be matched; the value itself is not repeated."""
    value = envstr(name)
    if not value:
        return ""
    wrong = next((place for place, char in enumerate(value, 1) if not " " <= char <= "~"), None)
    if wrong is not None:
        raise ImproperlyConfigured(
            f"{name} must be printable ASCII (letters, digits, punctuation, spaces): a client sends it in an "
            f"HTTP header, which carries no other character, so it could never match; its character "
            f"{wrong} is not (e.g. `openssl rand -hex 16`)"
        )
    if len(value) < min_chars:
        raise ImproperlyConfigured(
            f"{name} must be at least {min_chars} characters (e.g. `openssl rand -hex 16`)"
        )
    return value


def envlist(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def envnetworks(name: str) -> list[str]:
    """A comma-separated list of IP networks (``10.0.0.0/8``, ``::1``), each checked and normalized."""
    networks = []
    for item in envlist(name, []):
        try:
            networks.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            raise ImproperlyConfigured(
                f"{name} must list IP networks such as 10.0.0.0/8; got {item!r}"
            ) from None
    return networks


def redis_url(name: str) -> str:
    """A Redis URL from the environment ("" when unset), checked as redis-py will read it: a
    ``redis://``, ``rediss://`` or ``unix://`` URL, and a database number when the path names one."""
    url = envstr(name)
    if not url:
        return ""
    parsed = _url_parse(url, name)
    if parsed.scheme not in ("redis", "rediss", "unix"):
        raise ImproperlyConfigured(
            f"{name} must start with redis://, rediss:// or unix://; got scheme {parsed.scheme!r}"
        )
    _port(parsed, name)
    database = parsed.path.lstrip("/") if parsed.scheme != "unix" else ""
    if database and not database.isdigit():
        raise ImproperlyConfigured(
            f"{name}'s path must be a database number, such as /0; got /{database[:20]}"
        )
    return url


def _url_parse(url: str, name: str) -> ParseResult:
    # urlparse raises for an unclosed IPv6 bracket ("Invalid IPv6 URL"): a traceback that named no
    # variable. The URL, which may hold a password, is not repeated.
    try:
        return urlparse(url)
    except ValueError as error:
        raise ImproperlyConfigured(f"{name} cannot be read as a URL: {error}") from None


def _port(parsed: ParseResult, name: str) -> int | None:
    try:
        port = parsed.port  # raises for a port that is not a number from 0 to 65535
    except ValueError:
        port = 0
    if port == 0:
        # Port 0 is no server's: DATABASE_URL's became no port at all, so PostgreSQL's default (5432),
        # another server than the one named; redis-py failed at the first command.
        raise ImproperlyConfigured(f"{name}'s port must be a number from 1 to 65535")
    return port


def database_from_url(url: str, *, base_dir: str) -> dict[str, object]:
    """Turn ``DATABASE_URL`` into a ``DATABASES['default']`` entry (SQLite or PostgreSQL)."""
    parsed = _url_parse(url, "DATABASE_URL")
    if parsed.scheme == "sqlite":
        # sqlite:///relative.db and sqlite:////absolute/path.db, as dj-database-url reads them.
        path = unquote(parsed.path[1:]) if parsed.path.startswith("/") else unquote(parsed.path)
        if not path:
            raise ImproperlyConfigured("DATABASE_URL for SQLite needs a file path, e.g. sqlite:///db.sqlite3")
        if "\x00" in path:
            # No file system path holds a NUL: SQLite failed at the first query, after `check` passed.
            raise ImproperlyConfigured("DATABASE_URL's SQLite file path holds a NUL character (%00)")
        if not os.path.isabs(path):
            path = os.path.join(base_dir, path)
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": path,
            # IMMEDIATE: a transaction takes the write lock when it begins, so concurrent writers queue
            # (up to the timeout) instead of failing when a reader upgrades.
            "OPTIONS": {"timeout": 20, "transaction_mode": "IMMEDIATE"},
            # Tests use a file, not the shared in-memory database: in shared-cache mode SQLite reports
            # "table is locked" at once instead of waiting, so concurrent saves could not be tested.
            "TEST": {"NAME": f"{path}.test"},
        }
    if parsed.scheme in {"postgres", "postgresql", "pgsql"}:
        return _postgres_from_url(parsed)
    raise ImproperlyConfigured(
        f"DATABASE_URL must start with sqlite:// or postgres://; got scheme {parsed.scheme!r}"
    )


# libpq's sslmode values (PostgreSQL docs, "Connection Strings", sslmode).
_SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


def _postgres_from_url(parsed: ParseResult) -> dict[str, object]:
    name = unquote(parsed.path.lstrip("/"))
    if not name:
        raise ImproperlyConfigured("DATABASE_URL for PostgreSQL needs a database name")
    port = _port(parsed, "DATABASE_URL")
    query = {key: values[-1] for key, values in parse_qs(parsed.query).items()}
    raw_pool_max = query.pop("pool_max", "20")
    if not raw_pool_max.isdigit() or not 1 <= int(raw_pool_max) <= 1000:
        raise ImproperlyConfigured(
            f"DATABASE_URL's pool_max must be a number from 1 to 1000; got {raw_pool_max!r}"
        )
    if "sslmode" in query and query["sslmode"] not in _SSLMODES:
        raise ImproperlyConfigured(f"DATABASE_URL's sslmode must be one of {', '.join(_SSLMODES)}")
    pool_max = int(raw_pool_max)
    user, password = unquote(parsed.username or ""), unquote(parsed.password or "")
    for part, value in (("database name", name), ("user", user), ("password", password)):
        if "\x00" in value:  # libpq takes none: the first connection failed, after `check` passed
            raise ImproperlyConfigured(f"DATABASE_URL's {part} holds a NUL character (%00)")
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": name,
        "USER": user,
        "PASSWORD": password,
        "HOST": parsed.hostname or "",
        "PORT": str(port or ""),
        # psycopg 3's pool: connections are reused across requests and async-to-sync threads.
        "OPTIONS": {"pool": {"min_size": 1, "max_size": pool_max, "timeout": 10}, **query},
        "CONN_MAX_AGE": 0,
    }
