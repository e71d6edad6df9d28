"""Login throttling: after repeated failures, an account and a client address are locked for a while.

Attempts are counted in the cache (Redis in production, so every process shares the counts) with
an atomic ``add``/``incr``, before their password is checked, so attempts made at once cannot all
slip under the limit. Once an account or an address reaches its limit of failures within
``LOGIN_LOCKOUT_SECONDS``, every attempt for it is refused for that long, before the password is
checked, so a correct guess during the lockout gets in no more than a wrong one. A successful login
clears its account's count and takes itself off its address's, which otherwise only expires, so that
one good account does not reset the guessing of others from the same address.

An account's lock would let anyone lock out a known username by guessing on purpose. So a browser that
has signed in to an account carries a *device cookie* for it (OWASP's "Slow Down Online Guessing Attacks
with Device Cookies", owasp.org/www-community): a signed value naming the account (its digest) and a
random nonce of that browser. An attempt for the account made with its device cookie is counted and
locked per device, not against the account: the account's lock applies to clients it has not seen, so
a guesser locks out only other unknown clients, and the writer's own browser still gets in. A device
cookie that fails ``LOGIN_FAILURES_PER_ACCOUNT`` times is itself locked like an account; it is only as
good as the password behind it. The address's limit applies to every attempt.

While Redis is down the cache answers as an empty one (storyproject/cache.py): logins are then not
throttled rather than refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import secrets
import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.core import signing
from django.core.cache import cache
from django.utils.crypto import constant_time_compare, salted_hmac


@dataclass(frozen=True)
class LoginRefusal:
    message: str
    retry_after: int  # seconds


@dataclass(frozen=True)
class LoginAttempt:
    """An attempt counted before its password is checked: (kind, subject, count after it, limit)."""

    counts: tuple[tuple[str, str, int, int], ...]


_SUBJECTS = {
    "account": "this account",
    "device": "this account from this browser",
    "address": "your network address",
}
DEVICE_COOKIE = "login_device"
_DEVICE_SALT = "accounts.throttle.device"


def login_attempt_begin(*, username: str, address: str, device: str = "") -> LoginRefusal | LoginAttempt:
    """Refuse a locked account (or device) or address; otherwise count the attempt before its password
    is checked. ``device``: the request's device cookie (``DEVICE_COOKIE``) as it came, or "".

    Counting first is what bounds guesses made at once: attempts racing on several processes each take
    their own number from the atomic count, and one past the limit is refused before its password is
    checked, where a count read first and added to after the check let every racing attempt through.
    """
    # Known to the account: counted and locked per device; else against the account's unknown clients.
    kind, subject = ("device", device) if device_known(device, username=username) else ("account", username)
    refusal = _locked(kind=kind, subject=subject, address=address)
    if refusal is not None:
        return refusal
    counts = (
        (kind, subject, _count(kind, subject), settings.LOGIN_FAILURES_PER_ACCOUNT),
        ("address", address, _count("address", address), settings.LOGIN_FAILURES_PER_ADDRESS),
    )
    over = [(kind, subject) for kind, subject, count, limit in counts if count > limit]
    for kind, subject in over:
        _lock(kind, subject)
    # Only an attempt past the limit is refused here: one within it goes on to its check, whatever an
    # attempt racing it has locked meanwhile.
    return (
        (_locked(kind=kind, subject=subject, address=address) or _refusal(over[0][0]))
        if over
        else LoginAttempt(counts)
    )


def login_attempt_failed(attempt: LoginAttempt) -> None:
    """The password was wrong: the attempt stays counted, and an account or address at its limit is locked."""
    for kind, subject, count, limit in attempt.counts:
        if count >= limit:
            _lock(kind, subject)


def login_attempt_succeeded(attempt: LoginAttempt) -> None:
    """Signed in: the account's (or the device's) count is cleared; the address's loses this attempt
    only, so that one good account does not reset the guessing of others from the same address."""
    for kind, subject, _count_after, _limit in attempt.counts:
        if kind in ("account", "device"):
            cache.delete(_count_key(kind, subject))
        else:
            _uncount(kind, subject)


def login_attempt_void(attempt: LoginAttempt) -> None:
    """The attempt was refused for another reason than a wrong password (an inactive account): not a guess."""
    for kind, subject, _count_after, _limit in attempt.counts:
        _uncount(kind, subject)


def device_cookie_value(*, user: AbstractBaseUser) -> str:
    """A new device cookie's value for ``user``'s account: signed, naming the account by digest (the
    cookie does not show the username) and its password by ``_password_stamp``, with a random nonce
    for this browser."""
    return signing.dumps(
        [_digest(user.get_username()), secrets.token_urlsafe(16), _password_stamp(user)],
        salt=_DEVICE_SALT,
        compress=False,
    )


def device_known(device: str, *, username: str) -> bool:
    """Whether ``device`` is a device cookie this site signed for ``username``'s account, within its age,
    since the account's password was last set (and since the account was made: a username taken again
    is another account)."""
    if not device or len(device) > 200:
        return False
    try:
        value: Any = signing.loads(device, salt=_DEVICE_SALT, max_age=settings.LOGIN_DEVICE_COOKIE_SECONDS)
    except signing.BadSignature:  # a forged, altered or expired cookie (SignatureExpired is one)
        return False
    if not (isinstance(value, list) and len(value) == 3 and value[0] == _digest(username)):
        return False  # another account's, or one given before cookies named the password
    user_model = get_user_model()
    try:
        # The lookup ModelBackend signs in with (django.contrib.auth.backends.ModelBackend.authenticate).
        user = user_model._default_manager.get_by_natural_key(username)
    except user_model.DoesNotExist:
        return False
    return isinstance(value[2], str) and constant_time_compare(value[2], _password_stamp(user))


def _password_stamp(user: AbstractBaseUser) -> str:
    """A keyed digest of the account's id and password hash: it changes with the password (a change, a
    reset, set_unusable_password), and a new account of the same username has another."""
    return salted_hmac(_DEVICE_SALT, f"{user.pk}:{user.password}", algorithm="sha256").hexdigest()[:32]


def _locked(*, kind: str, subject: str, address: str) -> LoginRefusal | None:
    keys = [_lock_key(kind, subject), _lock_key("address", address)]
    locks = cache.get_many(keys)
    for key, key_kind in zip(keys, (kind, "address"), strict=True):
        if key in locks:
            return _refusal(key_kind, retry_after=max(1, math.ceil(locks[key] - time.time())))
    return None


def _refusal(kind: str, *, retry_after: int | None = None) -> LoginRefusal:
    retry_after = retry_after or settings.LOGIN_LOCKOUT_SECONDS
    minutes = math.ceil(retry_after / 60)
    message = (
        f"Too many failed logins for {_SUBJECTS[kind]}. Try again in {minutes} minute{'s' * (minutes != 1)}."
    )
    return LoginRefusal(message=message, retry_after=retry_after)


def _count(kind: str, subject: str) -> int:
    """Add one to the subject's count (atomic ``add``/``incr``); the count after it."""
    window = settings.LOGIN_LOCKOUT_SECONDS
    key = _count_key(kind, subject)
    if cache.add(key, 1, window):
        return 1
    try:
        return int(cache.incr(key))
    except ValueError:  # the count expired between add() and incr(), or the cache is down: not counted
        return 1 if cache.add(key, 1, window) else 0


def _uncount(kind: str, subject: str) -> None:
    with contextlib.suppress(ValueError):  # expired meanwhile: nothing to take back
        cache.decr(_count_key(kind, subject))


def _lock(kind: str, subject: str) -> None:
    window = settings.LOGIN_LOCKOUT_SECONDS
    # add, not set: a lock already there keeps its end, so attempts refused during it do not extend it.
    cache.add(_lock_key(kind, subject), time.time() + window, window)


def _count_key(kind: str, subject: str) -> str:
    return f"login-failures:{kind}:{_digest(subject)}"


def _lock_key(kind: str, subject: str) -> str:
    return f"login-locked:{kind}:{_digest(subject)}"


def _digest(subject: str) -> str:
    # Usernames are compared case-blind here, so that "Alice" and "ALICE" share one count.
    return hashlib.sha256(subject.casefold().encode("utf-8", "surrogatepass")).hexdigest()[:32]
