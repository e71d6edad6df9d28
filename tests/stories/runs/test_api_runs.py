"""The REST side of durable runs: SSE with resume, cancel, and ``"wait": false`` (issue 16)."""

from __future__ import annotations

import asyncio
import gc
import json
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import jsonschema
import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.http import StreamingHttpResponse
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from stories import ws_sessions
from stories.models import GenerationRun, ScreenplayVersion
from stories.runs.log import TERMINAL
from tests.fake_anthropic import FakeAnthropic, Reply, screenplay_text
from tests.stories.generation.conftest import screenplay, ws_connect, ws_events
from tests.stories.runs.conftest import log_expires, run_streaming, script_slow

pytestmark = pytest.mark.django_db(transaction=True)

PLOT = {"plot": "A statue, a lie, a fog.", "personas": ["noir-detective", "femme-fatale"]}


def _client(user: Any | None) -> APIClient:
    client = APIClient()
    if user is not None:
        client.force_authenticate(user)
    return client


def _sse(response: Any) -> list[tuple[str | None, dict[str, Any]]]:
    """The (id, event) of every SSE message of a streamed response (id None: the message has none)."""
    body = async_to_sync(_read)(response.streaming_content).decode()
    messages = []
    for block in body.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "data" in fields:
            messages.append((fields.get("id"), json.loads(fields["data"])))
    return messages


async def _read(content: AsyncIterator[bytes]) -> bytes:
    return b"".join([chunk async for chunk in content])


def _async_body(response: object) -> AsyncIterator[bytes]:
    """An event stream's body, which Django streams from the event loop."""
    assert isinstance(response, StreamingHttpResponse)
    content = response.streaming_content
    assert isinstance(content, AsyncIterator)
    return content


def _finished_run(user: Any) -> int:
    response = _client(user).post("/api/ai/generate-screenplay/", PLOT, format="json")
    assert response.status_code == 201, response.content
    return int(response.json()["run_id"])


def test_a_finished_runs_events_replay_as_sse_with_their_seq_as_id(
    writer: Any, cast: Any, offline: None
) -> None:
    run_id = _finished_run(writer)
    response = _client(writer).get(f"/api/runs/{run_id}/events/", HTTP_ACCEPT="text/event-stream")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/event-stream")
    messages = _sse(response)
    assert [int(str(id_)) for id_, _ in messages] == list(range(1, len(messages) + 1))
    assert all(event["seq"] == int(str(id_)) and event["run_id"] == run_id for id_, event in messages)
    assert messages[0][1]["type"] == "accepted"
    assert [event["type"] for _, event in messages][-2:] == ["saved", "done"]


def test_last_event_id_resumes_after_it_and_wins_over_after(writer: Any, cast: Any, offline: None) -> None:
    run_id = _finished_run(writer)
    client = _client(writer)
    whole = _sse(client.get(f"/api/runs/{run_id}/events/"))
    resumed = _sse(client.get(f"/api/runs/{run_id}/events/?after=1", HTTP_LAST_EVENT_ID="3"))
    assert resumed == whole[3:]
    assert _sse(client.get(f"/api/runs/{run_id}/events/?after=2")) == whole[2:]
    # The client has the terminal event: 204, so an EventSource stops reconnecting.
    last = str(whole[-1][0])
    done = client.get(f"/api/runs/{run_id}/events/", HTTP_LAST_EVENT_ID=last)
    # No body, and none announced (was labelled text/html).
    assert (done.status_code, done.content, done.get("Content-Type")) == (204, b"", None)


def test_a_runs_end_rebuilt_from_the_database_marks_only_its_last_message_as_the_end(
    writer: Any, cast: Any, offline: None
) -> None:
    # The rebuilt end (the log expired, or was lost in a restart without Redis) has the saved scenes,
    # `saved` and `done`, all with seq null. Each was sent with `id: end`: an EventSource that dropped
    # after the first of them reconnected with `Last-Event-ID: end`, got 204, and never saw `done`.
    run_id = _finished_run(writer)
    async_to_sync(log_expires)(run_id)
    client = _client(writer)
    messages = _sse(client.get(f"/api/runs/{run_id}/events/?after=3"))
    types = [event["type"] for _, event in messages]
    assert types[-2:] == ["saved", "done"] and set(types[:-2]) == {"scene"}
    # Only the terminal message moves the client's last id; a reconnect before it gets the end again.
    assert [id_ for id_, _ in messages] == [None] * (len(messages) - 1) + ["end"]
    assert _sse(client.get(f"/api/runs/{run_id}/events/", HTTP_LAST_EVENT_ID="3")) == messages
    assert client.get(f"/api/runs/{run_id}/events/", HTTP_LAST_EVENT_ID="end").status_code == 204


def test_a_seq_past_an_ended_runs_end_is_a_400_not_the_204_of_a_client_that_has_it(
    writer: Any, cast: Any, offline: None
) -> None:
    # Another run's seq, or a made-up one, was answered 204: the client took the run for one it had
    # whole, where a socket's attach with that seq is refused saying so.
    run_id = _finished_run(writer)
    client = _client(writer)
    last = int(str(_sse(client.get(f"/api/runs/{run_id}/events/"))[-1][0]))
    assert client.get(f"/api/runs/{run_id}/events/", {"after": last}).status_code == 204
    for query, headers in (({"after": last + 1}, {}), ({}, {"Last-Event-ID": str(last + 900)})):
        response = client.get(f"/api/runs/{run_id}/events/", query, headers=headers)
        assert response.status_code == 400
        body = response.json()
        assert body["code"] == "invalid_request"
        assert f"is past the last event of run {run_id} (seq {last})" in body["message"]


async def test_a_stream_of_a_live_run_from_a_seq_past_its_end_ends_saying_so(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    # The stream closed without the run's end and without a word once the run ended; an EventSource
    # reconnected with the same seq and got the 204 of a client that has it all.
    script_slow(fake_anthropic, tokens_per_second=400)
    communicator, run_id = await run_streaming(writer)
    try:
        url = f"/api/runs/{run_id}/events/?after=900000"
        response = await sync_to_async(_client(writer).get)(url)
        assert response.status_code == 200
        body = (await _read(_async_body(response))).decode()
        await ws_events(communicator)
    finally:
        await communicator.disconnect()
    last = body.strip().split("\n\n")[-1]
    assert last.startswith("data: ")  # no id: the reconnect keeps the client's seq
    error = json.loads(last.removeprefix("data: "))
    assert (error["type"], error["code"]) == ("error", "invalid_request")
    assert "after 900000 is past the last event" in error["message"]
    again = await sync_to_async(_client(writer).get)(url)
    assert again.status_code == 400


# Empty too: it read as 0, where every other value that is not a seq is refused (the schema says integer).
@pytest.mark.parametrize("after", ["", " 1", "+1", "-1", "x", "1.5", "99999999999999999999", "\u0661"])
def test_a_bad_after_is_a_400(writer: Any, cast: Any, offline: None, after: str) -> None:
    run_id = _finished_run(writer)
    response = _client(writer).get(f"/api/runs/{run_id}/events/", {"after": after})
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_request"


@pytest.mark.parametrize(
    ("query", "header", "refused"),
    [
        # A bad ?after= was passed over whenever Last-Event-ID was given: with `end` a 204, with a seq a
        # replay from there, as if the query were right.
        ({"after": "-180"}, "end", "after"),
        ({"after": "-180"}, "3", "after"),
        ({"after": "end"}, None, "after"),  # `end` is a Last-Event-ID only (the schema: an integer)
        ({"after": "2"}, "-1", "Last-Event-ID"),
        ({}, "end1", "Last-Event-ID"),
    ],
)
def test_after_and_last_event_id_are_both_checked_before_the_header_wins(
    writer: Any, cast: Any, offline: None, query: dict[str, Any], header: str | None, refused: str
) -> None:
    run_id = _finished_run(writer)
    headers = {} if header is None else {"Last-Event-ID": header}
    response = _client(writer).get(f"/api/runs/{run_id}/events/", query, headers=headers)
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_request"
    assert response.json()["message"].startswith(f"{refused} must be ")


@pytest.mark.parametrize("accept", ["text/event-stream", "application/json", "*/*"])
def test_an_error_is_json_whatever_the_client_accepts(
    writer: Any, other_writer: Any, cast: Any, offline: None, accept: str
) -> None:
    # Was: asked by an EventSource (Accept: text/event-stream), an error's JSON body was labelled
    # text/event-stream, which no SSE client can read as an error.
    run_id = _finished_run(writer)
    refused = [
        _client(writer).get(f"/api/runs/{run_id}/events/", {"after": "x"}, HTTP_ACCEPT=accept),
        _client(other_writer).get(f"/api/runs/{run_id}/events/", HTTP_ACCEPT=accept),
        _client(None).get(f"/api/runs/{run_id}/events/", HTTP_ACCEPT=accept),
    ]
    assert [response.status_code for response in refused] == [400, 404, 401]
    for response in refused:
        assert response["Content-Type"] == "application/json", response.content
        assert json.loads(response.content)


def test_another_writers_or_an_unknown_run_is_404_and_anonymous_is_refused(
    writer: Any, other_writer: Any, cast: Any, offline: None
) -> None:
    run_id = _finished_run(writer)
    intruder = _client(other_writer)
    for url in (f"/api/runs/{run_id}/events/", "/api/runs/999999/events/"):
        assert intruder.get(url).status_code == 404
    for url in (f"/api/runs/{run_id}/cancel/", "/api/runs/999999/cancel/"):
        assert intruder.post(url).status_code == 404
    assert _client(None).get(f"/api/runs/{run_id}/events/").status_code in (401, 403)
    assert _client(None).post(f"/api/runs/{run_id}/cancel/").status_code in (401, 403)
    assert (GenerationRun.objects.get(pk=run_id)).status == "succeeded"


def test_cancelling_a_finished_run_changes_nothing(writer: Any, cast: Any, offline: None) -> None:
    run_id = _finished_run(writer)
    response = _client(writer).post(f"/api/runs/{run_id}/cancel/")
    assert (response.status_code, response.json()) == (200, {"run_id": run_id, "status": "succeeded"})


async def test_the_cancel_endpoint_stops_a_running_run_and_its_upstream_within_a_second(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    script_slow(fake_anthropic, tokens_per_second=20)
    communicator, run_id = await run_streaming(writer)
    try:
        response = await sync_to_async(_client(writer).post)(f"/api/runs/{run_id}/cancel/")
        assert (response.status_code, response.json()["status"]) == (202, "cancelling")
        assert (await ws_events(communicator))[-1]["type"] == "cancelled"
        gone = await sync_to_async(fake_anthropic.wait_for_disconnect)(fake_anthropic.requests[0], 1.0)
    finally:
        await communicator.disconnect()
    assert gone, "the fake server still had the connection a second after the cancel"


async def test_wait_false_answers_202_with_the_run_and_the_run_goes_on_to_be_saved(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.script(Reply(text=screenplay_text(screenplay(scenes=2)), tokens_per_second=400))
    response = await sync_to_async(_client(writer).post)(
        "/api/ai/generate-screenplay/", {**PLOT, "wait": False}, format="json"
    )
    assert response.status_code == 202, response.content
    body = response.json()
    run_id = body["run_id"]
    assert body["events_url"] == f"/api/runs/{run_id}/events/" == response["Location"]
    assert body["cancel_url"] == f"/api/runs/{run_id}/cancel/"
    communicator = await ws_connect(writer)
    try:
        await communicator.send_json_to({"type": "attach", "run_id": run_id})
        events = await ws_events(communicator)
    finally:
        await communicator.disconnect()
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[-1]["type"] == "done"
    assert await ScreenplayVersion.objects.filter(run_id=run_id).aexists()


@pytest.mark.parametrize("wait", ["false", 0, None])
def test_wait_must_be_a_boolean(writer: Any, cast: Any, offline: None, wait: Any) -> None:
    response = _client(writer).post("/api/ai/generate-screenplay/", {**PLOT, "wait": wait}, format="json")
    assert response.status_code == 400
    assert "wait" in response.json()["message"]
    assert not GenerationRun.objects.exists()


def test_the_openapi_schema_documents_the_run_endpoints(writer: Any) -> None:
    schema = _client(writer).get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    events = schema["paths"]["/api/runs/{run_id}/events/"]["get"]
    assert "text/event-stream" in events["responses"]["200"]["content"]
    assert {p["name"] for p in events["parameters"]} >= {"after", "Last-Event-ID"}
    assert "202" in schema["paths"]["/api/runs/{run_id}/cancel/"]["post"]["responses"]
    generate = schema["paths"]["/api/ai/generate-screenplay/"]["post"]
    assert "202" in generate["responses"]


def test_the_schema_describes_each_sse_message_and_a_real_stream_matches_it(
    writer: Any, cast: Any, offline: None
) -> None:
    # The schema said the stream was one string, so a checker (schemathesis ST108) could not hold each
    # event against it; and it offered the errors as text/event-stream, which are always JSON.
    schema = _client(writer).get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    responses = schema["paths"]["/api/runs/{run_id}/events/"]["get"]["responses"]
    message = responses["200"]["content"]["text/event-stream"]["schema"]
    assert set(message["properties"]) == {"id", "event", "data", "retry"}
    assert set(responses["400"]["content"]) == set(responses["429"]["content"]) == {"application/json"}
    run_id = _finished_run(writer)
    body = async_to_sync(_read)(_async_body(_client(writer).get(f"/api/runs/{run_id}/events/")))
    parsed = [
        {**dict(line.split(": ", 1) for line in block.splitlines()), "event": "message"}
        for block in body.decode().split("\n\n")
        if block
    ]
    assert parsed[0] == {"retry": "2000", "event": "message"}
    events: list[dict[str, Any]] = [{**m, "retry": int(m["retry"])} if "retry" in m else m for m in parsed]
    for event in events:
        jsonschema.validate(event, message)
    assert [json.loads(e["data"])["type"] for e in events[1:]][-1] == "done"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"id": "x", "data": "{}"}, message)


async def test_an_sse_stream_ends_once_its_token_is_revoked_and_the_reconnect_is_refused(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As an open WebSocket's, the stream's credential is asked again while it runs (ws_sessions).
    monkeypatch.setattr(ws_sessions, "WATCH_SECONDS", 0.2)
    script_slow(fake_anthropic, tokens_per_second=40)
    communicator, run_id = await run_streaming(writer)
    token = await Token.objects.acreate(user=writer)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    try:
        response = await sync_to_async(client.get)(f"/api/runs/{run_id}/events/")
        assert response.status_code == 200
        chunks = _async_body(response)
        received = [await anext(chunks) for _ in range(3)]  # retry:, accepted, the first text
        await token.adelete()
        received += [chunk async for chunk in chunks]  # ends, although the run goes on
        types = [
            json.loads(line[6:])["type"]
            for c in received
            for line in c.decode().splitlines()
            if line.startswith("data: ")
        ]
        assert types[0] == "accepted" and not TERMINAL & set(types)
        assert (await GenerationRun.objects.aget(pk=run_id)).status == "streaming"
        again = await sync_to_async(client.get)(f"/api/runs/{run_id}/events/", HTTP_LAST_EVENT_ID="1")
        assert again.status_code == 401
    finally:
        await communicator.send_json_to({"type": "cancel"})
        await ws_events(communicator)
        await communicator.disconnect()


async def test_an_sse_stream_ends_at_once_when_its_token_is_revoked_not_at_its_next_check(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A script follows a run that the writer's page started; the script's token is revoked. The stream
    # went on sending the run's events until its periodic check (up to 30 s later); the revocation now
    # reaches it by itself, as it does an open WebSocket (ws_sessions).
    monkeypatch.setattr(ws_sessions, "WATCH_SECONDS", 3600)  # the periodic check never comes here
    script_slow(fake_anthropic, tokens_per_second=10)
    communicator, run_id = await run_streaming(writer)
    token = await Token.objects.acreate(user=writer)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    try:
        response = await sync_to_async(client.get)(f"/api/runs/{run_id}/events/")
        assert response.status_code == 200
        chunks = _async_body(response)
        received = [await anext(chunks) for _ in range(3)]  # retry:, accepted, the first text
        await token.adelete()

        async def rest() -> list[bytes]:
            return [chunk async for chunk in chunks]

        received += await asyncio.wait_for(rest(), timeout=10)  # ends, although the run goes on
        types = [
            json.loads(line[6:])["type"]
            for c in received
            for line in c.decode().splitlines()
            if line.startswith("data: ")
        ]
        assert types[0] == "accepted" and not TERMINAL & set(types)
        assert (await GenerationRun.objects.aget(pk=run_id)).status == "streaming"
    finally:
        await communicator.send_json_to({"type": "cancel"})
        await ws_events(communicator)
        await communicator.disconnect()


async def test_an_sse_stream_cancels_the_run_its_own_token_started_once_that_token_is_revoked(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A script starts a run with "wait": false and follows it with the same token, which is then
    # revoked: as a WebSocket follower of its own run does, the stream cancels it (a run started with
    # another credential goes on: the test above) and ends with its `cancelled`.
    monkeypatch.setattr(ws_sessions, "WATCH_SECONDS", 0.2)
    script_slow(fake_anthropic, tokens_per_second=40)
    token = await Token.objects.acreate(user=writer)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    started = await sync_to_async(client.post)(
        "/api/ai/generate-screenplay/", {**PLOT, "wait": False}, format="json"
    )
    assert started.status_code == 202, started.content
    run_id = started.json()["run_id"]
    response = await sync_to_async(client.get)(f"/api/runs/{run_id}/events/")
    assert response.status_code == 200
    assert isinstance(response, StreamingHttpResponse)
    chunks = aiter(response.streaming_content)
    received = [await anext(chunks) for _ in range(3)]  # retry:, accepted, the first text
    await token.adelete()
    received += [chunk async for chunk in chunks]
    types = [
        json.loads(line[6:])["type"]
        for c in received
        for line in c.decode().splitlines()
        if line.startswith("data: ")
    ]
    assert types[0] == "accepted" and types[-1] == "cancelled"
    assert (await GenerationRun.objects.aget(pk=run_id)).status == "cancelled"
    assert not await ScreenplayVersion.objects.aexists()


async def test_event_streams_past_the_cap_are_busy_and_a_closed_one_frees_its_slot(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic, settings: Any
) -> None:
    # Streams count under the user's cap on open sockets (ws_sessions): without it one writer held any
    # number open on a long run (1,500 took some 270 MB of a server process and slowed every request).
    settings.STORY_WS_MAX_SOCKETS_PER_USER = 3
    script_slow(fake_anthropic, tokens_per_second=40)
    communicator, run_id = await run_streaming(writer)  # its socket holds one of the three
    client = APIClient()
    client.force_authenticate(writer)
    url = f"/api/runs/{run_id}/events/"
    streams: list[Any] = []

    async def opened() -> Any:
        response = await sync_to_async(client.get)(url)
        assert response.status_code == 200
        assert isinstance(response, StreamingHttpResponse)
        await anext(aiter(response))  # the stream has begun
        return response

    try:
        streams += [await opened(), await opened()]
        refused = await sync_to_async(client.get)(url)
        assert refused.status_code == 429
        assert refused.json()["code"] == "busy"
        # A stream whose client went away gives its slot back. Django's handler closes the response's
        # iterator and drops the response; the stream itself is then closed by the loop's finalizer.
        await aiter(streams.pop()).aclose()
        gc.collect()
        for _ in range(50):
            await asyncio.sleep(0.05)
            again = await sync_to_async(client.get)(url)
            if again.status_code != 429:
                break
        assert again.status_code == 200
        assert isinstance(again, StreamingHttpResponse)
        await anext(aiter(again))
        streams.append(again)
    finally:
        for response in streams:
            await aiter(response).aclose()
        await communicator.send_json_to({"type": "cancel"})
        await ws_events(communicator)
        await communicator.disconnect()


async def test_a_stream_whose_client_left_before_its_first_byte_frees_its_slot(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic, settings: Any
) -> None:
    # Django's handler closes a response whose client went away before the body began; the stream's
    # generator never ran, so its slot was held until it expired, 90 s later.
    settings.STORY_WS_MAX_SOCKETS_PER_USER = 2
    script_slow(fake_anthropic, tokens_per_second=40)
    communicator, run_id = await run_streaming(writer)  # its socket holds one of the two
    client = APIClient()
    client.force_authenticate(writer)
    url = f"/api/runs/{run_id}/events/"
    try:
        never_read = await sync_to_async(client.get)(url)
        assert never_read.status_code == 200
        assert (await sync_to_async(client.get)(url)).status_code == 429
        await sync_to_async(never_read.close)()
        again = await sync_to_async(client.get)(url)
        assert again.status_code == 200
        await sync_to_async(again.close)()
    finally:
        await communicator.send_json_to({"type": "cancel"})
        await ws_events(communicator)
        await communicator.disconnect()


async def test_a_silent_run_s_stream_says_it_is_alive_and_keeps_its_slot(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A model that writes nothing for longer than the slot lives (a long think, a stall): the stream
    # sent nothing, so a proxy could close it, and its slot expired, letting one more stream past the cap.
    monkeypatch.setattr(ws_sessions, "WATCH_SECONDS", 0.2)
    monkeypatch.setattr(ws_sessions, "SLOT_SECONDS", 1)
    settings.STORY_WS_MAX_SOCKETS_PER_USER = 2
    settings.STORY_LLM_READ_TIMEOUT_SECONDS = 10
    text = screenplay_text(screenplay(scenes=2))
    fake_anthropic.script(
        Reply(text=text, tokens_per_second=200, chunk_chars=16, stall_after=2, stall_seconds=4)
    )
    communicator, run_id = await run_streaming(writer)
    client = APIClient()
    client.force_authenticate(writer)
    url = f"/api/runs/{run_id}/events/"
    try:
        response = await sync_to_async(client.get)(url)
        assert isinstance(response, StreamingHttpResponse)
        chunks = aiter(response)
        assert isinstance(chunks, AsyncGenerator)  # it is aclose()d below
        received = b""
        while b": keepalive" not in received:  # the stall has begun
            received += await asyncio.wait_for(anext(chunks), timeout=5)
        for _ in range(8):  # 1.6 s of silence, past the slot's second
            received += await asyncio.wait_for(anext(chunks, b"END"), timeout=5)
        assert received.count(b": keepalive\n\n") >= 8, received[-600:]
        assert (await sync_to_async(client.get)(url)).status_code == 429
        await chunks.aclose()
    finally:
        await communicator.send_json_to({"type": "cancel"})
        await ws_events(communicator)
        await communicator.disconnect()


def test_an_event_stream_with_confirm_starts_with_attached_saying_where_its_replay_ends(
    writer: Any, cast: Any, offline: None
) -> None:
    # An SSE client could not tell a replay from live events, nor learn the run's time so far: only a
    # socket's attach could ask (`attached`).
    run_id = _finished_run(writer)
    client = _client(writer)
    url = f"/api/runs/{run_id}/events/"
    whole = _sse(client.get(url))
    run = GenerationRun.objects.get(pk=run_id)
    assert run.finished_at is not None
    took = int((run.finished_at - run.created_at).total_seconds() * 1000)
    attached = {"type": "attached", "run_id": run_id, "replay_to": int(str(whole[-1][0])), "elapsed_ms": took}
    # No id: the client's last id (its Last-Event-ID on a reconnect) stays its last event's.
    assert _sse(client.get(url, {"confirm": "true"})) == [(None, attached), *whole]
    assert _sse(client.get(url, {"confirm": "true"}, HTTP_LAST_EVENT_ID="3")) == [
        (None, attached),
        *whole[3:],
    ]
    assert _sse(client.get(url, {"confirm": "false"})) == whole
    refused = client.get(url, {"confirm": "yes"})
    assert refused.status_code == 400 and refused.json()["code"] == "invalid_request"
    # Once its log is gone, its end is rebuilt: all of it a replay (null), as for a socket.
    async_to_sync(log_expires)(run_id)
    rebuilt = _sse(client.get(url, {"confirm": "true"}))
    assert rebuilt[0] == (None, {**attached, "replay_to": None})


async def test_a_live_runs_stream_with_confirm_says_where_its_replay_ends_and_the_live_events_begin(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    script_slow(fake_anthropic, tokens_per_second=200)
    asked = asyncio.get_running_loop().time()
    communicator, run_id = await run_streaming(writer)
    try:
        response = await sync_to_async(_client(writer).get)(f"/api/runs/{run_id}/events/?confirm=true")
        assert response.status_code == 200
        body = (await _read(_async_body(response))).decode()
        running_for = (asyncio.get_running_loop().time() - asked) * 1000
        await ws_events(communicator)
    finally:
        await communicator.disconnect()
    blocks = body.strip().split("\n\n")
    assert blocks[0] == "retry: 2000" and blocks[1].startswith("data: ")  # no id
    attached = json.loads(blocks[1].removeprefix("data: "))
    assert set(attached) == {"type", "run_id", "replay_to", "elapsed_ms"} and attached["type"] == "attached"
    assert 0 < attached["elapsed_ms"] <= running_for
    seqs = [int(block.split("\n", 1)[0].removeprefix("id: ")) for block in blocks[2:]]
    # Streaming when the stream opened: some events were a replay, and more came live after them.
    assert seqs == list(range(1, seqs[-1] + 1)) and 1 <= attached["replay_to"] < seqs[-1]
