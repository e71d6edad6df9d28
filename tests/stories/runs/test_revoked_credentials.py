"""A run nobody follows stops when the credential that started it is revoked (docs/security.md).

A ``"wait": false`` run goes on without its request; before, only a socket or an event stream that
followed it with that credential cancelled it, so a script's run went on spending after its writer
signed out, lost their token, their password or their account.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.contrib.sessions.models import Session
from django.test import Client
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from stories.generation import pipeline
from stories.models import GenerationRun, ScreenplayVersion
from tests.fake_anthropic import FakeAnthropic
from tests.stories.generation.conftest import generate_message, ws_connect
from tests.stories.runs.conftest import script_slow

pytestmark = pytest.mark.django_db(transaction=True)

PLOT = {"plot": "A statue, a lie, a fog.", "personas": ["noir-detective", "femme-fatale"], "wait": False}


def _slow(fake: FakeAnthropic, *, runs: int) -> None:
    for _ in range(runs):
        script_slow(fake, tokens_per_second=20)


async def _token_client(user: Any) -> tuple[APIClient, Token]:
    token = await Token.objects.acreate(user=user)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client, token


async def _session_client(user: Any) -> Client:
    client = Client()
    assert await sync_to_async(client.login)(username=user.username, password="pw-" + user.username)
    return client


async def _started(client: Any) -> int:
    """A run started by ``client`` with ``"wait": false``, now streaming, that nobody follows."""
    response = await sync_to_async(client.post)(
        "/api/ai/generate-screenplay/", PLOT, content_type="application/json"
    )
    assert response.status_code == 202, response.content
    run_id = int(response.json()["run_id"])
    await asyncio.sleep(0.3)  # it has begun to stream
    assert (await GenerationRun.objects.aget(pk=run_id)).status == "streaming"
    return run_id


async def _status_after(run_id: int, *, seconds: float = 5.0) -> str:
    """The run's status once it ended, or "streaming" if it still runs after ``seconds``."""
    for _ in range(int(seconds / 0.05)):
        status = (await GenerationRun.objects.aget(pk=run_id)).status
        if status != "streaming":
            return str(status)
        await asyncio.sleep(0.05)
    return "streaming"


async def _cancel(run_id: int) -> None:
    """End a run a test left going (its writer's own cancel)."""
    run = await GenerationRun.objects.select_related("user").aget(pk=run_id)
    client = APIClient()
    client.force_authenticate(run.user)
    await sync_to_async(client.post)(f"/api/runs/{run_id}/cancel/")
    await _status_after(run_id)


async def test_a_logout_cancels_the_run_that_session_started(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    _slow(fake_anthropic, runs=2)
    session = await _session_client(writer)
    script, _ = await _token_client(writer)
    by_session, by_token = await _started(session), await _started(script)
    try:
        assert (await sync_to_async(session.post)("/accounts/logout/")).status_code == 302
        assert await _status_after(by_session) == "cancelled"
        # The token still holds: its run goes on.
        assert (await GenerationRun.objects.aget(pk=by_token)).status == "streaming"
    finally:
        await _cancel(by_token)
    assert not await ScreenplayVersion.objects.aexists()


@pytest.mark.parametrize("action", ["/account/token/revoke/", "/account/token/"])
async def test_revoking_or_replacing_the_token_on_the_account_page_cancels_its_run(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic, action: str
) -> None:
    _slow(fake_anthropic, runs=2)
    script, _ = await _token_client(writer)
    session = await _session_client(writer)
    by_token, by_session = await _started(script), await _started(session)
    try:
        response = await sync_to_async(session.post)(action)
        assert response.status_code in (200, 302)
        assert await _status_after(by_token) == "cancelled"
        assert (await GenerationRun.objects.aget(pk=by_session)).status == "streaming"
    finally:
        await _cancel(by_session)


async def test_deleting_a_token_in_the_admin_cancels_its_run(
    writer: Any, user_factory: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    _slow(fake_anthropic, runs=1)
    root = await sync_to_async(user_factory)("root", is_staff=True, is_superuser=True)
    admin = await _session_client(root)
    script, _ = await _token_client(writer)
    run_id = await _started(script)
    deleted = await sync_to_async(admin.post)(
        f"/admin/authtoken/tokenproxy/{writer.pk}/delete/", {"post": "yes"}
    )
    assert deleted.status_code == 302
    assert await _status_after(run_id) == "cancelled"


async def test_a_deactivated_writer_has_every_run_cancelled(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    _slow(fake_anthropic, runs=2)
    script, _ = await _token_client(writer)
    session = await _session_client(writer)
    runs = [await _started(script), await _started(session)]
    writer.is_active = False
    await writer.asave()
    assert [await _status_after(run_id) for run_id in runs] == ["cancelled", "cancelled"]


async def test_a_password_change_cancels_the_runs_sessions_started_not_the_tokens(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    # Every session of the writer stops holding (the one that made the change gets a new key): the
    # runs they started are cancelled. An API token does not depend on the password: its run goes on.
    _slow(fake_anthropic, runs=2)
    script, _ = await _token_client(writer)
    elsewhere, here = await _session_client(writer), await _session_client(writer)
    by_token, by_elsewhere = await _started(script), await _started(elsewhere)
    try:
        new = "a-new-and-long-password-2026"
        changed = await sync_to_async(here.post)(
            "/account/password/",
            {"old_password": "pw-writer", "new_password1": new, "new_password2": new},
        )
        assert changed.status_code == 302, changed.content
        assert await _status_after(by_elsewhere) == "cancelled"
        assert (await GenerationRun.objects.aget(pk=by_token)).status == "streaming"
    finally:
        await _cancel(by_token)


async def test_a_deleted_writers_runs_are_stopped(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    _slow(fake_anthropic, runs=1)
    script, _ = await _token_client(writer)
    run_id = await _started(script)
    await get_user_model().objects.filter(pk=writer.pk).adelete()
    for _ in range(100):
        if not fake_anthropic.requests or await sync_to_async(fake_anthropic.wait_for_disconnect)(
            fake_anthropic.requests[0], 0.05
        ):
            break
    else:
        pytest.fail(f"run {run_id}'s model call still went on after its writer was deleted")


async def test_signing_in_as_someone_else_in_the_same_browser_cancels_the_run_of_the_session_it_ends(
    writer: Any, other_writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    # Django's login flushes the session of another user without a logout signal: the row goes, and
    # with it the credential that started the first writer's run.
    _slow(fake_anthropic, runs=1)
    browser = await _session_client(writer)
    run_id = await _started(browser)
    signed_in = await sync_to_async(browser.post)(
        "/accounts/login/", {"username": other_writer.username, "password": "pw-" + other_writer.username}
    )
    assert signed_in.status_code == 302
    assert await _status_after(run_id) == "cancelled"


async def test_a_session_deleted_in_the_admin_or_cleared_cancels_the_run_it_started(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    _slow(fake_anthropic, runs=1)
    browser = await _session_client(writer)
    run_id = await _started(browser)
    await Session.objects.filter(session_key=browser.session.session_key).adelete()
    assert await _status_after(run_id) == "cancelled"


@pytest.fixture
def sign_out_in_admission(monkeypatch: pytest.MonkeyPatch) -> Callable[[Callable[[], None]], None]:
    """Arm a sign-out that commits inside the run's admission, after the request's credential was
    checked and before the run is recorded: the window the revocation's cancel cannot see into."""

    def arm(sign_out: Callable[[], None]) -> None:
        admit = pipeline.generation_run_admit

        def signed_out_then_admitted(**fields: Any) -> GenerationRun:
            sign_out()
            return admit(**fields)

        monkeypatch.setattr(pipeline, "generation_run_admit", signed_out_then_admitted)

    return arm


async def _cancelled_before_the_model(fake_anthropic: FakeAnthropic) -> None:
    run = await GenerationRun.objects.aget()
    assert run.status == "cancelled"
    assert fake_anthropic.requests == []  # nothing was paid for
    assert not await ScreenplayVersion.objects.aexists()


async def test_a_logout_between_the_requests_sign_in_and_its_runs_record_cancels_the_run(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic, sign_out_in_admission: Any
) -> None:
    # Was: the logout's cancel looked for the session's runs before this one was recorded and found
    # none; the run then went on, and was paid for, for a session that no longer signed anyone in.
    _slow(fake_anthropic, runs=1)
    browser = await _session_client(writer)
    sign_out_in_admission(lambda: Session.objects.filter(session_key=browser.session.session_key).delete())
    response = await sync_to_async(browser.post)(
        "/api/ai/generate-screenplay/", PLOT, content_type="application/json"
    )
    assert response.status_code == 401, response.content
    assert response.json()["code"] == "unauthenticated"
    await _cancelled_before_the_model(fake_anthropic)


async def test_a_token_revoked_between_the_requests_sign_in_and_its_runs_record_cancels_the_run(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic, sign_out_in_admission: Any
) -> None:
    _slow(fake_anthropic, runs=1)
    script, token = await _token_client(writer)
    sign_out_in_admission(lambda: Token.objects.filter(key=token.key).delete())
    response = await sync_to_async(script.post)(
        "/api/ai/generate-screenplay/", {**PLOT, "wait": True}, content_type="application/json"
    )
    assert response.status_code == 401, response.content
    await _cancelled_before_the_model(fake_anthropic)


async def test_a_logout_between_the_sockets_check_and_its_runs_record_cancels_the_run(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic, sign_out_in_admission: Any
) -> None:
    # The socket's own check of its sign-in (in the admission's trip) passed just before the logout.
    _slow(fake_anthropic, runs=1)
    communicator = await ws_connect(writer)
    sign_out_in_admission(lambda: Session.objects.filter(expire_date__isnull=False).delete())
    try:
        await communicator.send_json_to(generate_message())
        refusal = json.loads(await communicator.receive_from(timeout=10))
        assert (refusal["type"], refusal["code"]) == ("error", "unauthenticated")
        assert (await communicator.receive_output(timeout=5))["code"] == 4401
    finally:
        await communicator.disconnect()
    await _cancelled_before_the_model(fake_anthropic)


@pytest.mark.parametrize("revoked_meanwhile", [False, True])
def test_an_admission_asks_the_database_again_only_after_a_revocation_of_the_users_credentials(
    writer: Any, cast: Any, settings: Any, revoked_meanwhile: bool
) -> None:
    # The check after the run's commit costs two queries (session and user), a quarter more CPU per
    # admission; a revocation marks itself in the shared cache before it looks for runs, and an
    # admission that finds no mark has nothing to look for.
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from stories.generation.requests import generation_request_parse
    from stories.services import generation_run_release
    from stories.ws_auth import SocketCredential, revocation_mark

    settings.STORY_CACHE_TOKEN_USERS = True  # a cache every process shares (here, this test's own)
    browser = Client()
    browser.force_login(writer)
    credential = SocketCredential(user_id=writer.pk, session_key=browser.session.session_key)
    if revoked_meanwhile:
        revocation_mark(user_id=writer.pk)  # another of the writer's sessions, signed out
    request = generation_request_parse({"plot": "A plot.", "personas": ["noir-detective"]})
    with CaptureQueriesContext(connection) as queries:
        admitted = pipeline._run_open(request, writer.pk, 0.0, True, pipeline._Opening(credential=credential))
    generation_run_release(run_id=admitted.run.run_id)
    assert not admitted.signed_out  # this session still holds
    asked = any("django_session" in query["sql"] for query in queries.captured_queries)
    assert asked == revoked_meanwhile
