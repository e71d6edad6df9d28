"""Login throttling: after repeated failures, an account and a client address are locked for a while.

Failures are counted in the cache (Redis in production, so every process shares the counts) with
an atomic ``add``/``incr``. Once an account or an address reaches its limit within
``LOGIN_LOCKOUT_SECONDS``, every attempt for it is refused for that long, before the password is
checked, so a correct guess during the lockout gets in no more than a wrong one. A successful login
clears its account's count; an address's count only expires, so that one good account does not
reset the guessing of others from the same address.

While Redis is down the cache answers as an empty one (storyproject/cache.py): logins are then not
throttled rather than refused.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache


@dataclass(frozen=True)
class LoginRefusal:
    message: str
    retry_after: int  # seconds


def login_refusal(*, username: str, address: str) -> LoginRefusal | None:
    """Why a login attempt is refused now (a lockout), or None when it may be checked."""
    keys = [_lock_key("account", username), _lock_key("address", address)]
    locks = cache.get_many(keys)
    for key, subject in zip(keys, ("this account", "your network address"), strict=True):
        if key in locks:
            retry_after = max(1, math.ceil(locks[key] - time.time()))
            minutes = math.ceil(retry_after / 60)
            message = (
                f"Too many failed logins for {subject}. Try again in {minutes} minute{'s' * (minutes != 1)}."
            )
            return LoginRefusal(message=message, retry_after=retry_after)
    return None


def login_failure_record(*, username: str, address: str) -> None:
    """Count a failed attempt against the account and the address; lock either at its limit."""
    _count("account", username, settings.LOGIN_FAILURES_PER_ACCOUNT)
    _count("address", address, settings.LOGIN_FAILURES_PER_ADDRESS)


def login_success_record(*, username: str) -> None:
    cache.delete(_count_key("account", username))


def _count(kind: str, subject: str, limit: int) -> None:
    window = settings.LOGIN_LOCKOUT_SECONDS
    key = _count_key(kind, subject)
    if cache.add(key, 1, window):
        failures = 1
    else:
        try:
            failures = cache.incr(key)
        except ValueError:  # the count expired between add() and incr()
            failures = 1 if cache.add(key, 1, window) else 0
    if failures >= limit:
        cache.set(_lock_key(kind, subject), time.time() + window, window)


def _count_key(kind: str, subject: str) -> str:
    return f"login-failures:{kind}:{_digest(subject)}"


def _lock_key(kind: str, subject: str) -> str:
    return f"login-locked:{kind}:{_digest(subject)}"


def _digest(subject: str) -> str:
    # Usernames are compared case-blind here, so that "Alice" and "ALICE" share one count.
    return hashlib.sha256(subject.casefold().encode("utf-8", "surrogatepass")).hexdigest()[:32]
