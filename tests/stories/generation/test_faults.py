"""Every upstream fault becomes one clean error; nothing is saved but the failed run; the socket stays usable."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from stories.models import GenerationRun, ScreenplayVersion, Story
from tests.fake_anthropic import FakeAnthropic, Reply, screenplay_reply_for, screenplay_text
from tests.stories.generation.conftest import generate_message, screenplay, ws_connect, ws_events

# Every fault through both HTTP transports of the model client (conftest.model_transport).
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("model_transport")]

FAST = {"retry-after-ms": "5"}


def _good_reply(**extra: Any) -> Reply:
    return Reply(text=screenplay_text(screenplay(scenes=2)), **extra)


async def _generate(writer: Any, **fields: Any) -> list[dict[str, Any]]:
    communicator = await ws_connect(writer)
    try:
        await communicator.send_json_to(generate_message(**fields))
        return await ws_events(communicator)
    finally:
        await communicator.disconnect()


async def _nothing_saved_but_a_failed_run(code: str) -> GenerationRun:
    assert await Story.objects.acount() == 0
    assert await ScreenplayVersion.objects.acount() == 0
    run = await GenerationRun.objects.aget()
    assert (run.status, run.error_code) == ("failed", code)
    assert run.total_ms is not None and run.finished_at is not None
    return run


@pytest.mark.parametrize("status,error_type", [(429, "rate_limit_error"), (529, "overloaded_error")])
async def test_a_429_or_529_before_the_stream_is_retried_and_then_succeeds(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic, status: int, error_type: str
) -> None:
    fake_anthropic.script(
        Reply(status=status, error_type=error_type, headers=FAST),
        Reply(status=status, error_type=error_type, headers=FAST),
        _good_reply(),
    )
    events = await _generate(writer)
    assert [e["type"] for e in events][-2:] == ["saved", "done"]
    assert len(fake_anthropic.requests) == 3
    assert await ScreenplayVersion.objects.acount() == 1


async def test_a_429_asking_for_a_longer_wait_than_the_cap_is_not_retried_before_it(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic, settings: Any
) -> None:
    # The SDK would sleep an hour here. Ours used to retry after the cap (0 s in this test), before the
    # retry-after the API asked for, which the API refuses ("Earlier retries will fail", api/rate-limits):
    # two more 429s, and the writer kept waiting to be told the same. Now the writer is told at once.
    settings.STORY_LLM_RETRY_AFTER_CAP_SECONDS = 0
    fake_anthropic.script(
        Reply(status=429, error_type="rate_limit_error", headers={"retry-after": "3600"}), _good_reply()
    )
    events = await _generate(writer)
    error = events[-1]
    assert (error["type"], error["code"], error["retryable"]) == ("error", "llm_rate_limited", True)
    assert error["retry_after"] == 3600 and len(fake_anthropic.requests) == 1
    run = await _nothing_saved_but_a_failed_run("llm_rate_limited")
    assert "retries" not in run.details


async def test_a_429_asking_for_a_wait_within_the_cap_is_retried_after_that_wait(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    # The fake refuses a request made before the 429's retry-after has passed, as the API does.
    fake_anthropic.script(
        Reply(status=429, error_type="rate_limit_error", headers={"retry-after-ms": "300"}), _good_reply()
    )
    events = await _generate(writer)
    assert events[-1]["type"] == "done" and len(fake_anthropic.requests) == 2
    first, second = (request.received_at for request in fake_anthropic.requests)
    assert second - first >= 0.3


@pytest.mark.parametrize(
    "header,told",
    [
        ({"retry-after": "nan"}, None),
        ({"retry-after": "inf"}, 4_294_967),
        ({"retry-after": "1e400"}, 4_294_967),
        # Whole seconds rounded up: was "retry_after": 0, a client's "retry in 0 s".
        ({"retry-after-ms": "5"}, 1),
        ({"retry-after": "2.2"}, 3),
        # Not a wait: the SDK takes only ``retry_after > 0`` (anthropic 2.14 _base_client.py,
        # _calculate_retry_timeout) and backs off instead. Was: "retry_after": 0, a retry at once.
        ({"retry-after": "0"}, None),
        ({"retry-after-ms": "0", "retry-after": "7"}, None),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, None),
    ],
)
async def test_a_retry_after_that_is_no_number_of_seconds_still_gives_the_providers_code(
    writer: Any,
    cast: Any,
    fake_anthropic: FakeAnthropic,
    settings: Any,
    header: dict[str, str],
    told: int | None,
) -> None:
    # float() reads these; rounding them for the error event raised, so the writer got "the generation
    # failed unexpectedly" (llm_unavailable, not retryable) and the run was recorded llm_overloaded.
    settings.STORY_LLM_RETRY_AFTER_CAP_SECONDS = 0
    fake_anthropic.script(
        *[Reply(status=529, error_type="overloaded_error", headers=header) for _ in range(3)]
    )
    events = await _generate(writer)
    error = events[-1]
    assert (error["type"], error["code"], error["retryable"]) == ("error", "llm_overloaded", True)
    assert error.get("retry_after") == told
    await _nothing_saved_but_a_failed_run("llm_overloaded")


async def test_a_retry_after_of_zero_backs_off_like_the_sdk_instead_of_retrying_at_once(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    # Was: "retry-after: 0" was obeyed, three requests in a row to an overloaded API within milliseconds.
    fake_anthropic.script(
        *[Reply(status=529, error_type="overloaded_error", headers={"retry-after": "0"}) for _ in range(2)],
        _good_reply(),
    )
    events = await _generate(writer)
    assert events[-1]["type"] == "done"
    first, second, third = (request.received_at for request in fake_anthropic.requests)
    # The back-off: 0.5 s then 1 s, each with a jitter of a quarter.
    assert second - first >= 0.35 and third - second >= 0.7


@pytest.mark.parametrize(
    "status,error_type,code",
    [
        (529, "overloaded_error", "llm_overloaded"),
        (429, "rate_limit_error", "llm_rate_limited"),
        (500, "api_error", "llm_unavailable"),
        (503, "api_error", "llm_unavailable"),
    ],
)
async def test_a_persistent_upstream_error_gives_its_code_after_two_retries(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic, status: int, error_type: str, code: str
) -> None:
    fake_anthropic.script(*[Reply(status=status, error_type=error_type, headers=FAST) for _ in range(3)])
    events = await _generate(writer)
    assert (events[-1]["type"], events[-1]["code"], events[-1]["retryable"]) == ("error", code, True)
    assert len(fake_anthropic.requests) == 3
    await _nothing_saved_but_a_failed_run(code)


async def test_a_bad_request_is_not_retried(writer: Any, cast: Any, fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.script(
        Reply(status=400, error_type="invalid_request_error", error_message="prompt is too long")
    )
    events = await _generate(writer)
    assert events[-1]["code"] == "invalid_request" and "prompt is too long" in events[-1]["message"]
    assert len(fake_anthropic.requests) == 1


async def test_a_wrong_api_key_is_reported_without_showing_it(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic, settings: Any
) -> None:
    settings.ANTHROPIC_API_KEY = "sk-ant-wrong-key"
    events = await _generate(writer)
    assert (events[-1]["code"], events[-1]["retryable"]) == ("llm_config", False)
    assert "sk-ant" not in json.dumps(events)


async def test_a_stall_mid_stream_gives_llm_timeout_and_keeps_the_text_received(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.script(_good_reply(stall_after=3, chunk_chars=10))
    events = await _generate(writer)
    assert events[-1]["code"] == "llm_timeout"
    run = await _nothing_saved_but_a_failed_run("llm_timeout")
    streamed = "".join(e["text"] for e in events if e["type"] == "delta")
    assert run.raw_text == streamed and len(streamed) == 30
    # Text had reached the client: no retry.
    assert len(fake_anthropic.requests) == 1


async def test_a_refusal_gives_llm_refused(writer: Any, cast: Any, fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.script(Reply(text="", stop_reason="refusal", refusal_explanation="Not this one."))
    events = await _generate(writer)
    assert events[-1]["code"] == "llm_refused" and "Not this one." in events[-1]["message"]
    await _nothing_saved_but_a_failed_run("llm_refused")


async def test_an_error_event_mid_stream_ends_with_a_clean_error(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    reply = _good_reply(error_event_after=2, error_event_type="overloaded_error")
    fake_anthropic.script(reply)
    events = await _generate(writer)
    # The two chunks sent before the error reach the writer (in one frame or two), nothing after them.
    assert "".join(e["text"] for e in events if e["type"] == "delta") == reply.text[: 2 * reply.chunk_chars]
    assert events[-1]["code"] == "llm_overloaded"
    await _nothing_saved_but_a_failed_run("llm_overloaded")


async def test_a_dropped_connection_ends_with_a_clean_error_and_the_socket_stays_usable(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.script(_good_reply(drop_after=2), _good_reply())
    communicator = await ws_connect(writer)
    try:
        await communicator.send_json_to(generate_message())
        failed = await ws_events(communicator)
        assert failed[-1]["type"] == "error" and failed[-1]["code"] == "llm_unavailable"
        assert await ScreenplayVersion.objects.acount() == 0
        await communicator.send_json_to(generate_message())
        retried = await ws_events(communicator)
    finally:
        await communicator.disconnect()
    assert [e["type"] for e in retried][-2:] == ["saved", "done"]
    statuses = sorted([run.status async for run in GenerationRun.objects.all()])
    assert statuses == ["failed", "succeeded"]


async def test_invalid_json_from_the_model_gives_invalid_output_and_saves_nothing(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.script(
        Reply(text='{"title": "Broken", "scenes": [{"heading": "INT. A - DAY", "elements": [}')
    )
    events = await _generate(writer)
    assert events[-1]["code"] == "invalid_output"
    run = await _nothing_saved_but_a_failed_run("invalid_output")
    assert run.raw_text.startswith('{"title": "Broken"')


async def test_a_speaker_outside_the_cast_gives_invalid_output(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.script(Reply(text=screenplay_text(screenplay(speakers=("SAM SPADE", "THE FAT MAN")))))
    events = await _generate(writer)
    assert events[-1]["code"] == "invalid_output" and "THE FAT MAN" in events[-1]["message"]
    await _nothing_saved_but_a_failed_run("invalid_output")


async def test_a_screenplay_outside_the_contract_gives_invalid_output(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    bad = screenplay()
    bad["scenes"][0]["elements"][0] = {"type": "song", "text": "La la"}
    fake_anthropic.script(Reply(text=screenplay_text(bad)))
    events = await _generate(writer)
    assert events[-1]["code"] == "invalid_output"
    await _nothing_saved_but_a_failed_run("invalid_output")


async def test_fenced_json_is_accepted(writer: Any, cast: Any, fake_anthropic: FakeAnthropic) -> None:
    expected = screenplay(scenes=2)
    fake_anthropic.script(Reply(text="Here is your screenplay:\n" + screenplay_text(expected, fenced=True)))
    events = await _generate(writer)
    assert [e["scene"] for e in events if e["type"] == "scene"] == expected["scenes"]
    version = await ScreenplayVersion.objects.aget()
    assert version.content == expected


async def test_the_fake_servers_default_reply_follows_the_apps_prompt_through_a_continuation(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    # The reply the standalone fake server gives (docs/generation.md: "Trying the Anthropic back-end without a key").
    fake_anthropic.default = screenplay_reply_for
    # 300: each continuation repeats the header (about 75 tokens) before its scenes.
    events = await _generate(writer, max_tokens=300, plot="One. Two. Three. Four.")
    assert events[-1]["type"] == "done"
    version = await ScreenplayVersion.objects.aget()
    assert [s["summary"] for s in version.content["scenes"]] == ["One.", "Two.", "Three.", "Four."]
    assert {c["persona"] for c in version.content["characters"]} == {"noir-detective", "femme-fatale"}
    assert len(fake_anthropic.requests) > 1


# --- Errors that must not be retried (issue 15, item 3) ------------------------------------------


def _operator_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]


async def _generate_once_and_fail(
    writer: Any, fake: FakeAnthropic, caplog: pytest.LogCaptureFixture, reply: Reply, code: str
) -> dict[str, Any]:
    """Script ``reply`` three times: however many the app sends, only the first may arrive."""
    fake.script(reply, reply, reply)
    with caplog.at_level(logging.INFO):
        events = await _generate(writer)
    assert len(fake.requests) == 1
    error = events[-1]
    assert (error["type"], error["code"], error["retryable"]) == ("error", code, False)
    assert "try again" not in error["message"]
    await _nothing_saved_but_a_failed_run(code)
    return error


@pytest.mark.parametrize("error_code", ["enforced_spend_limit_reached", "contract_spend_limit_reached"])
async def test_a_spend_limit_429_is_not_retried_and_tells_the_writer_an_operator_must_act(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic, caplog: pytest.LogCaptureFixture, error_code: str
) -> None:
    # The SDK raises these as RateLimitError and the response even says x-should-retry: true (the
    # fake's default for a 429): only error.details.error_code tells them apart. Like the API's, the
    # fake's spend-limit 429 has no retry-after header, so no wait is suggested either.
    reply = Reply(
        status=429,
        error_type="rate_limit_error",
        error_message="You have reached your API usage limits.",
        error_code=error_code,
    )
    error = await _generate_once_and_fail(writer, fake_anthropic, caplog, reply, "llm_quota")
    assert "spending limit" in error["message"] and "retry_after" not in error
    [line] = _operator_lines(caplog)
    assert error_code in line and "request-id req_fake_000001" in line and "llm_quota" in line


async def test_a_402_billing_error_is_llm_quota_not_retried(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic, caplog: pytest.LogCaptureFixture
) -> None:
    reply = Reply(status=402, error_type="billing_error", error_message="Your credit balance is too low.")
    error = await _generate_once_and_fail(writer, fake_anthropic, caplog, reply, "llm_quota")
    assert "unavailable" not in error["message"]
    [line] = _operator_lines(caplog)
    assert "status 402" in line and "billing_error" in line


@pytest.mark.parametrize(
    "message",
    [
        "You have reached your specified API usage limits. You will regain access on 2026-12-01 at 00:00 UTC.",
        "You have reached your specified workspace API usage limits. You will regain access on 2026-12-01.",
        "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to "
        "upgrade or purchase credits.",
    ],
)
async def test_a_400_for_the_accounts_own_spend_limit_or_credit_is_llm_quota_not_the_writers_request(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic, caplog: pytest.LogCaptureFixture, message: str
) -> None:
    # A spend limit the organization set itself is a 400 invalid_request_error, not a 429 (Anthropic's
    # rate-limits page, "Spend limits"), and so is a credit balance run out; neither has an error_code.
    # Was: invalid_request, "the model provider rejected the request: ...", a writer's fault.
    reply = Reply(status=400, error_type="invalid_request_error", error_message=message)
    error = await _generate_once_and_fail(writer, fake_anthropic, caplog, reply, "llm_quota")
    assert "spending limit" in error["message"] and "rejected the request" not in error["message"]
    [line] = _operator_lines(caplog)
    assert "status 400" in line and "llm_quota" in line and "request-id req_fake_000001" in line


@pytest.mark.parametrize(
    ("status", "error_type", "words"),
    [
        (401, "authentication_error", "API key"),
        (403, "permission_error", "API key"),
        (404, "not_found_error", "model is not available"),
    ],
)
async def test_a_rejected_key_or_unknown_model_is_llm_config_not_retried(
    writer: Any,
    cast: Any,
    fake_anthropic: FakeAnthropic,
    caplog: pytest.LogCaptureFixture,
    status: int,
    error_type: str,
    words: str,
) -> None:
    reply = Reply(status=status, error_type=error_type, error_message="model: claude-nonesuch")
    error = await _generate_once_and_fail(writer, fake_anthropic, caplog, reply, "llm_config")
    assert words in error["message"]
    [line] = _operator_lines(caplog)
    assert f"status {status}" in line and "llm_config" in line and "request-id req_fake_" in line


@pytest.mark.parametrize(
    ("status", "error_type", "code"),
    [(529, "overloaded_error", "llm_overloaded"), (429, "rate_limit_error", "llm_rate_limited")],
)
async def test_x_should_retry_false_is_obeyed_whatever_the_status(
    writer: Any,
    cast: Any,
    fake_anthropic: FakeAnthropic,
    caplog: pytest.LogCaptureFixture,
    status: int,
    error_type: str,
    code: str,
) -> None:
    reply = Reply(status=status, error_type=error_type, should_retry=False, headers=FAST)
    error = await _generate_once_and_fail(writer, fake_anthropic, caplog, reply, code)
    assert "retrying will not help" in error["message"]


@pytest.mark.parametrize(
    ("error_code", "told"),
    [
        ("organization_on_hold", "its organization is on hold"),
        ("cmek_key_disabled", "encryption key is disabled or revoked"),
        ("cmek_key_network_blocked", "blocked access to the workspace's encryption key"),
    ],
)
async def test_an_account_side_400_is_an_operators_problem_not_the_writers_request(
    writer: Any,
    cast: Any,
    fake_anthropic: FakeAnthropic,
    caplog: pytest.LogCaptureFixture,
    error_code: str,
    told: str,
) -> None:
    # Was: a 400 invalid_request_error, so the writer read "the model provider rejected the request"
    # as if their plot were at fault, and the operator's log line was at INFO among writers' mistakes
    # (organization_on_hold, then the encryption key's codes, found by an adversarial pass).
    reply = Reply(
        status=400,
        error_type="invalid_request_error",
        error_message="Your organization's settings refused the request.",
        error_code=error_code,
    )
    error = await _generate_once_and_fail(writer, fake_anthropic, caplog, reply, "llm_config")
    assert told in error["message"] and "rejected the request" not in error["message"]
    assert "until an operator resolves it" in error["message"]
    [line] = _operator_lines(caplog)
    assert error_code in line and "request-id req_fake_000001" in line


@pytest.mark.parametrize(
    ("status", "error_type", "error_code", "code", "told", "not_told"),
    [
        # anthropic 2.14 _error_classes.py: (403, "sandbox_egress_restricted"); its details' docstring:
        # "The request came from a Claude sandbox with restricted network access, which is not
        # allowed to make this request." The key is fine.
        (
            403,
            "permission_error",
            "sandbox_egress_restricted",
            "llm_config",
            "network the API does not take requests from",
            "API key",
        ),
        # (402, "linked_organization_billing_unavailable"): "Anthropic cannot currently bill the
        # organization linked to the request's user profile". No limit to raise.
        (
            402,
            "billing_error",
            "linked_organization_billing_unavailable",
            "llm_quota",
            "cannot bill the organization linked to",
            "spending limit",
        ),
    ],
)
async def test_an_account_side_402_or_403_says_what_the_operator_must_fix_not_a_key_or_a_limit(
    writer: Any,
    cast: Any,
    fake_anthropic: FakeAnthropic,
    caplog: pytest.LogCaptureFixture,
    status: int,
    error_type: str,
    error_code: str,
    code: str,
    told: str,
    not_told: str,
) -> None:
    # Was: every 403 said "the model provider rejected this service's API key" and every 402 "the
    # spending limit ... has been reached ... until an operator raises it", so an operator would
    # replace a working key or look for a limit that is not there. Still not retried.
    reply = Reply(status=status, error_type=error_type, error_message="Refused.", error_code=error_code)
    error = await _generate_once_and_fail(writer, fake_anthropic, caplog, reply, code)
    assert told in error["message"] and not_told not in error["message"]
    [line] = _operator_lines(caplog)
    assert error_code in line and f"status {status}" in line


@pytest.mark.parametrize(
    ("status", "error_type"),
    [(400, "invalid_request_error"), (404, "not_found_error"), (425, "api_error")],
)
async def test_x_should_retry_true_is_obeyed_whatever_the_status(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic, status: int, error_type: str
) -> None:
    # Was: only "false" was read; a 4xx the server marked retryable ended the run at once. The SDK's
    # _should_retry obeys "true" before the status (anthropic 2.14 _base_client.py).
    fake_anthropic.script(
        Reply(status=status, error_type=error_type, should_retry=True, headers=FAST), _good_reply()
    )
    events = await _generate(writer)
    assert [e["type"] for e in events][-2:] == ["saved", "done"]
    assert len(fake_anthropic.requests) == 2


@pytest.mark.parametrize(
    ("reply", "code"),
    [
        (
            Reply(status=400, error_type="invalid_request_error", error_message="max_tokens: bad"),
            "invalid_request",
        ),
        (Reply(status=401, error_type="authentication_error"), "llm_config"),
        (Reply(status=529, error_type="overloaded_error", should_retry=False), "llm_overloaded"),
    ],
)
async def test_the_writer_is_told_the_providers_request_id_and_never_the_key(
    writer: Any,
    cast: Any,
    fake_anthropic: FakeAnthropic,
    caplog: pytest.LogCaptureFixture,
    reply: Reply,
    code: str,
) -> None:
    # Was: the request-id only reached the operator's log; a writer reporting a failure had nothing
    # that found it with Anthropic (its "Errors" docs ask for the request-id).
    error = await _generate_once_and_fail(writer, fake_anthropic, caplog, reply, code)
    assert error["message"].endswith("(provider request id req_fake_000001)")
    assert fake_anthropic.api_key not in json.dumps(error)


async def test_a_request_id_not_of_the_apis_shape_is_not_shown(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic, caplog: pytest.LogCaptureFixture
) -> None:
    # A header from something in front of the API is not passed on to the writer as it is.
    reply = Reply(status=400, error_type="invalid_request_error", headers={"request-id": "<b>x</b>"})
    error = await _generate_once_and_fail(writer, fake_anthropic, caplog, reply, "invalid_request")
    assert "request id" not in error["message"] and "<b>" not in error["message"]


@pytest.mark.parametrize("kind", ["invalid_request_error", "request_too_large"])
async def test_an_invalid_request_error_mid_stream_is_not_retried(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    # An `error` event before any text: nothing reached the writer, yet a retry would fail the same way.
    reply = _good_reply(error_event_after=0, error_event_type=kind)
    await _generate_once_and_fail(writer, fake_anthropic, caplog, reply, "invalid_request")


@pytest.mark.parametrize("kind", ["api_error", "timeout_error", "a_type_added_later_error"])
async def test_an_error_event_of_the_apis_own_failure_mid_stream_is_retried(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic, kind: str
) -> None:
    # Was: a type we did not list (the docs say the types grow) ended the run, not retryable.
    fake_anthropic.script(_good_reply(error_event_after=0, error_event_type=kind), _good_reply())
    events = await _generate(writer)
    assert events[-1]["type"] == "done" and len(fake_anthropic.requests) == 2


async def test_an_overloaded_error_mid_stream_before_any_text_is_still_retried(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.script(
        _good_reply(error_event_after=0, error_event_type="overloaded_error"), _good_reply()
    )
    events = await _generate(writer)
    assert events[-1]["type"] == "done" and len(fake_anthropic.requests) == 2


@pytest.mark.parametrize("where", ["start", "thinking"])
async def test_an_error_event_right_after_message_start_or_while_thinking_is_retried(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic, settings: Any, where: str
) -> None:
    # The API may send its error event anywhere in the stream (fake_anthropic.Reply.error_event_at);
    # before any text it is the API's failure and the call is tried again, its attempt counted.
    settings.STORY_THINKING_BUDGET_TOKENS = 1024  # the model thinks (adaptive), as in production
    fake_anthropic.script(
        _good_reply(error_event_after=0, error_event_at=where, error_event_type="overloaded_error"),
        _good_reply(),
    )
    events = await _generate(writer)
    assert [e["type"] for e in events][-2:] == ["saved", "done"] and len(fake_anthropic.requests) == 2
    assert "thinking" in fake_anthropic.requests[0].body
    run = await GenerationRun.objects.aget()
    assert run.details["retries"] == ["llm_overloaded"]


async def test_the_fake_sends_the_apis_error_body_and_headers(fake_anthropic: FakeAnthropic) -> None:
    import httpx2

    fake_anthropic.script(Reply(status=429, error_type="rate_limit_error", error_code="ramp_limit_exceeded"))
    async with httpx2.AsyncClient() as client:
        response = await client.post(
            f"{fake_anthropic.base_url}/v1/messages",
            headers={"authorization": f"Bearer {fake_anthropic.api_key}"},
            json={"model": "claude-sonnet-5-5", "max_tokens": 10, "messages": []},
        )
    body = response.json()
    assert body["error"]["details"] == {"error_code": "ramp_limit_exceeded"}
    assert body["request_id"] == response.headers["request-id"] == "req_fake_000001"
    assert response.headers["x-should-retry"] == "true" and response.headers["retry-after"] == "1"
    assert response.headers["anthropic-ratelimit-requests-remaining"] == "0"


async def test_the_fakes_spend_limit_429_has_no_retry_after(fake_anthropic: FakeAnthropic) -> None:
    import httpx2

    fake_anthropic.script(
        Reply(status=429, error_type="rate_limit_error", error_code="enforced_spend_limit_reached")
    )
    async with httpx2.AsyncClient() as client:
        response = await client.post(
            f"{fake_anthropic.base_url}/v1/messages",
            headers={"authorization": f"Bearer {fake_anthropic.api_key}"},
            json={"model": "claude-sonnet-5-5", "max_tokens": 10, "messages": []},
        )
    assert response.status_code == 429 and "retry-after" not in response.headers
    assert response.json()["error"]["details"] == {"error_code": "enforced_spend_limit_reached"}


@pytest.mark.parametrize(
    ("stop_reason", "said"),
    [
        ("model_context_window_exceeded", "context window filled up"),
        ("tool_use", "stopped to use a tool"),
        ("pause_turn", "paused its turn"),
    ],
)
async def test_a_reply_stopped_short_for_another_reason_than_max_tokens_says_why(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic, stop_reason: str, said: str
) -> None:
    # Was: its cut text was read as a screenplay and the writer told "not valid JSON".
    text = screenplay_text(screenplay(scenes=3))
    fake_anthropic.script(Reply(text=text[: len(text) // 2], stop_reason=stop_reason))
    events = await _generate(writer)
    error = events[-1]
    assert (error["type"], error["code"], error["retryable"]) == ("error", "invalid_output", False)
    assert said in error["message"] and stop_reason in error["message"], error["message"]
    assert "JSON" not in error["message"] and len(fake_anthropic.requests) == 1
    run = await GenerationRun.objects.aget(pk=events[0]["run_id"])
    assert run.status == "failed" and run.output_tokens > 0


# Cloudflare's answer to a request over the size limit, before it reaches the API (Anthropic's "Errors"
# docs, api/errors, "Request size limits"), and a proxy's 502: HTML, no JSON body, no request-id.
_CLOUDFLARE_413 = (
    "<html>\r\n<head><title>413 Request Entity Too Large</title></head>\r\n<body>\r\n"
    "<center><h1>413 Request Entity Too Large</h1></center>\r\n<hr><center>cloudflare</center>\r\n"
    "</body>\r\n</html>\r\n"
)
_PROXY_502 = "<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1></body></html>"


async def test_a_413_from_cloudflare_that_is_not_json_says_the_request_was_too_large(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    # Was: "the model provider rejected the request: " and nothing after it (no error.message to quote).
    fake_anthropic.script(Reply(status=413, error_html=_CLOUDFLARE_413))
    events = await _generate(writer)
    error = events[-1]
    assert (error["type"], error["code"], error["retryable"]) == ("error", "invalid_request", False)
    assert "larger than it accepts" in error["message"] and "413" in error["message"], error["message"]
    assert "<html" not in error["message"] and len(fake_anthropic.requests) == 1
    await _nothing_saved_but_a_failed_run("invalid_request")


async def test_a_403_page_from_cloudflare_is_not_blamed_on_the_api_key_and_not_retried(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    # Was: "the model provider rejected this service's API key", for a challenge page the key had no part in.
    page = "<html><head><title>Just a moment...</title></head><body>cloudflare</body></html>"
    fake_anthropic.script(Reply(status=403, error_html=page))
    events = await _generate(writer)
    error = events[-1]
    assert (error["code"], error["retryable"]) == ("llm_config", False)
    assert "API key" not in error["message"] and "403" in error["message"], error["message"]
    assert "<html" not in error["message"] and len(fake_anthropic.requests) == 1
    await _nothing_saved_but_a_failed_run("llm_config")


async def test_an_api_403_still_names_the_key(writer: Any, cast: Any, fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.script(
        Reply(
            status=403, error_type="permission_error", error_message="Your API key does not have permission."
        )
    )
    events = await _generate(writer)
    assert events[-1]["code"] == "llm_config" and "API key" in events[-1]["message"]


async def test_a_5xx_page_from_a_proxy_that_is_not_json_is_retried_as_the_provider_being_down(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.script(
        *[Reply(status=502, error_html=_PROXY_502, headers=FAST) for _ in range(3)],
    )
    events = await _generate(writer)
    error = events[-1]
    assert (error["type"], error["code"], error["retryable"]) == ("error", "llm_unavailable", True)
    assert "<html" not in error["message"] and len(fake_anthropic.requests) == 3
    run = await _nothing_saved_but_a_failed_run("llm_unavailable")
    assert run.details["retries"] == ["llm_unavailable", "llm_unavailable"]


# Cloudflare's own 5xx pages for api.anthropic.com (anthropics/claude-code issues 3197 and 12208: "api.anthropic.com |
# 520: Web server is returning an unknown error", and a 520 with no body at all).
_CLOUDFLARE_520 = (
    "<!DOCTYPE html><html><head><title>api.anthropic.com | 520: Web server is returning an unknown error"
    "</title></head><body>cloudflare</body></html>"
)


@pytest.mark.parametrize(
    ("status", "page"), [(520, _CLOUDFLARE_520), (520, ""), (522, _CLOUDFLARE_520), (524, _CLOUDFLARE_520)]
)
async def test_a_cloudflare_5xx_is_retried_like_any_other_5xx_and_then_succeeds(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic, status: int, page: str
) -> None:
    # Was: only 500, 502, 503, 504 and 529 were retried; a 52x ended the run at once, the writer told
    # "the model is unavailable; retrying will not help". The SDK retries every status from 500 up
    # (anthropic 2.14 _base_client.py, _should_retry: "Retry internal errors", status_code >= 500).
    fake_anthropic.script(Reply(status=status, error_html=page, headers=FAST), _good_reply())
    events = await _generate(writer)
    assert [e["type"] for e in events][-2:] == ["saved", "done"]
    assert len(fake_anthropic.requests) == 2
    run = await GenerationRun.objects.aget()
    assert run.details["retries"] == ["llm_unavailable"]


async def test_a_persistent_cloudflare_5xx_is_retryable_for_the_writer(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.script(*[Reply(status=524, error_html=_CLOUDFLARE_520, headers=FAST) for _ in range(3)])
    events = await _generate(writer)
    error = events[-1]
    assert (error["type"], error["code"], error["retryable"]) == ("error", "llm_unavailable", True)
    assert "will not help" not in error["message"] and len(fake_anthropic.requests) == 3


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (429, "rate_limit_error"),
        (529, "overloaded_error"),
        (413, "request_too_large"),
        (500, "api_error"),
        (409, "conflict_error"),
        (504, "timeout_error"),
    ],
)
async def test_the_fakes_error_body_names_the_type_the_api_gives_its_status(
    fake_anthropic: FakeAnthropic, status: int, error_type: str
) -> None:
    # Was: a reply scripted with a status only answered "api_error" whatever the status (a 529 too).
    import httpx2

    fake_anthropic.script(Reply(status=status))
    async with httpx2.AsyncClient() as client:
        response = await client.post(
            f"{fake_anthropic.base_url}/v1/messages",
            headers={"authorization": f"Bearer {fake_anthropic.api_key}"},
            json={"model": "claude-sonnet-5-5", "max_tokens": 10, "messages": []},
        )
    assert (response.status_code, response.json()["error"]["type"]) == (status, error_type)


async def test_a_model_api_that_cannot_be_reached_is_not_a_lost_connection(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic, settings: Any
) -> None:
    # Nothing listens there: every connection is refused. It was "the connection to the model was lost",
    # which sent an operator (claude_check says the same) looking for a network cut, not an address.
    settings.ANTHROPIC_BASE_URL = "http://127.0.0.1:9"
    events = await _generate(writer)
    error = events[-1]
    assert (error["code"], error["retryable"]) == ("llm_unavailable", True)
    assert error["message"] == "the model's API could not be reached; please try again"
    await _nothing_saved_but_a_failed_run("llm_unavailable")
