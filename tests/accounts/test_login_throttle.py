"""Login throttling: repeated failures lock an account and an address, with a clear message (issue 13)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


@dataclass(frozen=True)
class _Attempt:
    """What a login POST answered, and whether its client came out of it signed in."""

    status_code: int
    content: bytes
    headers: Mapping[str, str]
    client_signed_in: bool


def _login(
    username: str, password: str, *, address: str = "10.0.0.1", url: str = "/accounts/login/"
) -> _Attempt:
    client = Client(REMOTE_ADDR=address)
    response = client.post(url, {"username": username, "password": password})
    signed_in = "_auth_user_id" in client.session
    return _Attempt(response.status_code, response.content, response.headers, client_signed_in=signed_in)


@pytest.fixture(autouse=True)
def _limits(settings: Any) -> None:
    settings.LOGIN_FAILURES_PER_ACCOUNT = 3
    settings.LOGIN_FAILURES_PER_ADDRESS = 5
    settings.LOGIN_LOCKOUT_SECONDS = 900


def test_failures_lock_the_account_even_for_the_right_password(writer: Any, user_factory: Any) -> None:
    for index in range(3):
        assert _login("writer", "wrong", address=f"10.0.1.{index}").status_code == 200
    refused = _login("writer", "pw-writer", address="10.0.2.1")
    assert refused.status_code == 429
    assert not refused.client_signed_in
    assert "Too many failed logins for this account. Try again in 15 minutes." in refused.content.decode()
    assert 890 <= int(refused.headers["Retry-After"]) <= 900
    # Another account from the same address is not affected, and the count ignores case.
    user_factory("other")
    assert _login("other", "pw-other", address="10.0.2.1").client_signed_in
    assert _login("WRITER", "pw-writer", address="10.0.3.1").status_code == 429


def test_failures_lock_the_address_for_every_account(writer: Any) -> None:
    for index in range(5):
        assert _login(f"nobody-{index}", "guess").status_code == 200
    refused = _login("writer", "pw-writer")
    assert refused.status_code == 429
    assert not refused.client_signed_in
    assert "Too many failed logins for your network address." in refused.content.decode()
    assert _login("writer", "pw-writer", address="10.9.9.9").client_signed_in


def test_a_successful_login_clears_the_accounts_count(writer: Any) -> None:
    for _ in range(2):
        _login("writer", "wrong", address="10.0.4.1")
    assert _login("writer", "pw-writer", address="10.0.4.2").client_signed_in
    for _ in range(2):
        _login("writer", "wrong", address="10.0.4.3")
    assert _login("writer", "pw-writer", address="10.0.4.4").client_signed_in


def test_the_lockout_ends_when_its_time_has_passed(writer: Any, settings: Any) -> None:
    settings.LOGIN_LOCKOUT_SECONDS = 1
    for _ in range(3):
        _login("writer", "wrong")
    assert _login("writer", "pw-writer").status_code == 429
    time.sleep(1.2)
    assert _login("writer", "pw-writer").client_signed_in


def test_the_admin_login_takes_the_same_throttle(user_factory: Any) -> None:
    user_factory("boss", is_staff=True)
    for _ in range(3):
        assert _login("boss", "wrong", url="/admin/login/").status_code == 200
    refused = _login("boss", "pw-boss", url="/admin/login/")
    assert not refused.client_signed_in
    assert "Too many failed logins for this account." in refused.content.decode()


def test_a_writer_turned_away_by_the_admin_login_is_not_locked_out_of_the_site(writer: Any) -> None:
    # The admin refuses a writer's right password ("a staff account"): that was counted as a wrong guess,
    # so a writer who tried /admin/ three times was then told "Too many failed logins" on the site.
    for _ in range(3):
        refused = _login("writer", "pw-writer", url="/admin/login/")
        assert refused.status_code == 200 and not refused.client_signed_in
        assert "correct username and password for a staff account" in refused.content.decode()
    assert _login("writer", "pw-writer").client_signed_in
    # Wrong passwords at the admin login are still guesses.
    for _ in range(3):
        _login("writer", "wrong", url="/admin/login/")
    assert _login("writer", "pw-writer").status_code == 429


_ARRIVED: list[str] = []
_TOGETHER = threading.Barrier(6, timeout=1.0)


class PasswordCheckThatWaits:
    """An authentication back-end whose check is slow enough for attempts to overlap, as a real
    password hash's is: each waits until all six attempts are checking at once, or for one second."""

    def authenticate(self, request: Any, username: str | None = None, password: str | None = None) -> None:
        _ARRIVED.append(username or "")
        with contextlib.suppress(threading.BrokenBarrierError):
            _TOGETHER.wait()
        return None


def test_guesses_made_at_once_are_bounded_by_the_limit(settings: Any) -> None:
    # Six wrong guesses sent together, with a limit of three: the count was read before any guess and
    # added to after its check, so all six were checked.
    settings.AUTHENTICATION_BACKENDS = [f"{__name__}.PasswordCheckThatWaits"]
    _ARRIVED.clear()
    _TOGETHER.reset()

    def guess(n: int) -> int:  # the status only: reading the test client's session would write it
        client = Client(REMOTE_ADDR=f"10.0.5.{n}")
        return client.post("/accounts/login/", {"username": "writer", "password": f"guess-{n}"}).status_code

    with ThreadPoolExecutor(max_workers=6) as pool:
        statuses = list(pool.map(guess, range(6)))
    assert len(_ARRIVED) == 3
    assert sorted(statuses) == [200, 200, 200, 429, 429, 429]
    assert _login("writer", "another guess", address="10.0.5.9").status_code == 429


def test_logins_go_on_unthrottled_while_the_cache_is_down(writer: Any, settings: Any) -> None:
    # Each attempt is counted before its check: with Redis down the count must be skipped, not fail
    # the login (docs/security.md: "logins are then not throttled").
    settings.CACHES = {
        "default": {
            "BACKEND": "storyproject.cache.FailSoftRedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",  # nothing listens on port 1
            "OPTIONS": {"socket_connect_timeout": 0.2, "socket_timeout": 0.2},
        }
    }
    for _ in range(4):
        assert _login("writer", "wrong").status_code == 200
    assert _login("writer", "pw-writer").client_signed_in


def _signed_in_browser(username: str, password: str, *, address: str) -> Client:
    """A browser that has signed in once (and so holds the account's device cookie), then signed out."""
    browser = Client(REMOTE_ADDR=address)
    response = browser.post("/accounts/login/", {"username": username, "password": password})
    assert response.status_code == 302
    cookie = response.cookies["login_device"]
    assert cookie["httponly"] and cookie["samesite"] == "Lax"
    assert username not in cookie.value  # the account is named by a digest only
    browser.post("/accounts/logout/")
    return browser


def _browser_login(browser: Client, username: str, password: str) -> _Attempt:
    response = browser.post("/accounts/login/", {"username": username, "password": password})
    signed_in = "_auth_user_id" in browser.session
    return _Attempt(response.status_code, response.content, response.headers, client_signed_in=signed_in)


def test_a_guesser_cannot_lock_the_writer_out_of_their_own_browser(writer: Any) -> None:
    # Anyone who knows a username could lock its writer out for 15 minutes by guessing on purpose. The
    # writer's browser, which has signed in before, gets past the account's lock; the guesser's do not.
    browser = _signed_in_browser("writer", "pw-writer", address="10.0.6.1")
    assert int(browser.cookies["login_device"]["max-age"]) == 180 * 86_400
    for index in range(4):
        _login("writer", "wrong", address=f"10.0.7.{index}")
    assert _login("writer", "pw-writer", address="10.0.7.9").status_code == 429
    assert _browser_login(browser, "writer", "pw-writer").client_signed_in


def test_a_known_browser_is_locked_by_its_own_failures(writer: Any) -> None:
    browser = _signed_in_browser("writer", "pw-writer", address="10.0.8.1")
    for _ in range(3):
        assert _browser_login(browser, "writer", "wrong").status_code == 200
    refused = _browser_login(browser, "writer", "pw-writer")
    assert refused.status_code == 429 and not refused.client_signed_in
    assert "Too many failed logins for this account from this browser." in refused.content.decode()
    # The account itself is not locked for other clients by those failures.
    assert _login("writer", "pw-writer", address="10.0.8.2").client_signed_in


def test_a_device_cookie_opens_only_its_own_accounts_lock(writer: Any, user_factory: Any) -> None:
    user_factory("other")
    browser = _signed_in_browser("other", "pw-other", address="10.0.9.1")
    for index in range(3):
        _login("writer", "wrong", address=f"10.0.9.{index + 10}")
    assert _browser_login(browser, "writer", "pw-writer").status_code == 429
    # Nor does an altered cookie.
    tampered = Client(REMOTE_ADDR="10.0.9.30")
    value = browser.cookies["login_device"].value
    tampered.cookies["login_device"] = value[:-2] + ("AA" if not value.endswith("AA") else "BB")
    assert _browser_login(tampered, "writer", "pw-writer").status_code == 429


def test_an_expired_device_cookie_is_an_unknown_browser(writer: Any, settings: Any) -> None:
    settings.LOGIN_DEVICE_COOKIE_SECONDS = 60
    browser = _signed_in_browser("writer", "pw-writer", address="10.0.10.1")
    for index in range(3):
        _login("writer", "wrong", address=f"10.0.10.{index + 10}")
    settings.LOGIN_DEVICE_COOKIE_SECONDS = 1
    time.sleep(2.1)  # the signature's timestamp has whole-second resolution
    assert _browser_login(browser, "writer", "pw-writer").status_code == 429


def test_the_admin_login_gives_and_honours_the_device_cookie(user_factory: Any) -> None:
    user_factory("boss", is_staff=True)
    browser = Client(REMOTE_ADDR="10.0.11.1")
    response = browser.post("/admin/login/", {"username": "boss", "password": "pw-boss"})
    assert response.status_code == 302 and "login_device" in response.cookies
    browser.post("/admin/logout/")
    for index in range(3):
        _login("boss", "wrong", address=f"10.0.11.{index + 10}", url="/admin/login/")
    again = browser.post("/admin/login/", {"username": "boss", "password": "pw-boss"})
    assert again.status_code == 302 and "_auth_user_id" in browser.session


def test_a_login_without_a_password_is_no_success_for_the_throttle(writer: Any) -> None:
    # A POST naming the account with the password left blank checks no password. It was taken for a
    # successful login: it cleared the account's count (a guesser sending one between guesses never
    # reached the lock) and gave a device cookie for the account, which then got past its lock.
    guesser = Client(REMOTE_ADDR="10.0.15.1")
    blank = guesser.post("/accounts/login/", {"username": "writer", "password": ""})
    assert blank.status_code == 200 and "login_device" not in blank.cookies
    for index in range(2):
        _login("writer", "wrong", address=f"10.0.15.{index + 10}")
    _login("writer", "", address="10.0.15.20")
    _login("writer", "wrong", address="10.0.15.21")
    assert _login("writer", "pw-writer", address="10.0.15.30").status_code == 429
    assert _browser_login(guesser, "writer", "pw-writer").status_code == 429


def test_a_password_changed_elsewhere_retires_the_device_cookies_given_before(writer: Any) -> None:
    # Someone who knew the old password kept a browser that signed in with it: once the password is
    # changed (here by an admin's reset), that browser is an unknown one and the account's lock holds it.
    browser = _signed_in_browser("writer", "pw-writer", address="10.0.12.1")
    assert len(browser.cookies["login_device"].value) <= 200
    writer.set_password("new-secret-1")
    writer.save()
    for index in range(3):
        _login("writer", "wrong", address=f"10.0.12.{index + 10}")
    refused = _browser_login(browser, "writer", "new-secret-1")
    assert refused.status_code == 429 and not refused.client_signed_in


def test_a_username_taken_again_is_another_account_for_the_device_cookie(
    writer: Any, user_factory: Any
) -> None:
    browser = _signed_in_browser("writer", "pw-writer", address="10.0.13.1")
    writer.delete()
    user_factory("writer")  # someone else, the same username and (here) the same password
    for index in range(3):
        _login("writer", "wrong", address=f"10.0.13.{index + 10}")
    assert _browser_login(browser, "writer", "pw-writer").status_code == 429


def test_the_writers_own_password_change_keeps_their_browser_known(writer: Any) -> None:
    browser = Client(REMOTE_ADDR="10.0.14.1")
    assert _browser_login(browser, "writer", "pw-writer").client_signed_in
    changed = browser.post(
        "/account/password/",
        {"old_password": "pw-writer", "new_password1": "Fresh-secret-92", "new_password2": "Fresh-secret-92"},
    )
    assert changed.status_code == 302 and "login_device" in changed.cookies
    browser.post("/accounts/logout/")
    for index in range(3):
        _login("writer", "wrong", address=f"10.0.14.{index + 10}")
    assert _browser_login(browser, "writer", "Fresh-secret-92").client_signed_in
