"""Claude through the official SDK: ``AsyncAnthropic``, streaming, one client per event loop.

The SDK's own retries are off (``max_retries=0``): it would obey ``retry-after`` without a cap. Ours
retry 408, 409, 429, every 5xx (529 and Cloudflare's 52x included) and connection failures at most ``STORY_LLM_MAX_RETRIES`` times, with jittered
backoff, honour ``retry-after`` up to ``STORY_LLM_RETRY_AFTER_CAP_SECONDS`` (a longer one is not retried:
the API refuses a request sent before it, retry.py), and only before any text
has been passed on (text a writer has seen cannot be taken back). Every failure, including an
``error`` event mid-stream (an APIStatusError with status 200) and a dropped connection or idle read
timeout (httpx2's own exceptions), becomes a GenerationError with a protocol code.

The server's ``x-should-retry`` header decides first, as in the SDK's ``_should_retry`` (anthropic 2.14
_base_client.py: "If the server explicitly says whether or not to retry, obey", before any status):
``false`` is never retried, ``true`` is, whatever the status. Without it, never retried: a rejected key
or a model the account cannot use (``llm_config``), a request the API calls invalid (also mid-stream).
A spend limit or billing error (``llm_quota``) is never retried, even when told to: the SDK would, but
waiting does not lift a limit only an operator can raise.

Thinking is set on every call (``models_registry.thinking_param``); thinking blocks in the stream are
never passed on as text, and their tokens arrive in the output usage like any other output.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import re
import time
import weakref
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass, replace
from functools import cache
from typing import Any

import anthropic
import httpx2
from anthropic.lib._parse._transform import transform_schema
from django.conf import settings

from stories.errors import GenerationError, ModelStoppedShort
from stories.generation.backends.base import (
    BackendEvent,
    CallFinished,
    CallRetried,
    GenerationBackend,
    ModelCall,
    TextDelta,
    Usage,
    UsageReport,
)
from stories.generation.backends.http_client import ModelHttpClient
from stories.generation.backends.read_ahead import in_batches
from stories.generation.backends.read_pacing import PacedBody
from stories.generation.backends.sse import stream_events
from stories.generation.models_registry import model_get, supports_structured_output, thinking_param
from stories.generation.retry import backoff_seconds, retry_after_too_long
from storyproject.runtime import serving_loop

_clients: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[tuple[str, str], anthropic.AsyncAnthropic]
] = weakref.WeakKeyDictionary()
# The SDK's longest wait for a retry-after (time.sleep's limit on some platforms).
_RETRY_AFTER_MAX_SECONDS = 4_294_967.0
# Retried like the SDK retries them (anthropic 2.14 _base_client.py, ``_should_retry``): 408, 409, 429
# and every status from 500 up, Cloudflare's own 520-524 pages for api.anthropic.com included
# (anthropics/claude-code issue 3197, "api.anthropic.com | 520: Web server is returning an unknown
# error"). The 4xx statuses that say the request or the account is wrong are refused before this.
_RETRYABLE_STATUS = frozenset({408, 409, 429})
# An error event mid-stream has status 200 and its type in the body. The types that say the request
# itself is wrong or not allowed are refused above (_status_error); any other, a type we do not know
# included, is treated as the API's own failure and tried again: "type values may grow over time"
# (Anthropic's "Errors" docs, api/errors, "Error shapes"; the types of the "HTTP errors" list there).
_REQUEST_TYPES = frozenset({"invalid_request_error", "request_too_large"})
# Stop reasons that end a reply before it is whole, besides max_tokens (continued) and refusal (anthropic
# 2.14 types/stop_reason.py: end_turn, max_tokens, stop_sequence, tool_use, pause_turn, refusal,
# model_context_window_exceeded). A request of ours offers no tools and no server tools, so the last
# two of these should not come; if they do, the writer is told what happened.
_STOPPED_SHORT = {
    "model_context_window_exceeded": "the model's context window filled up before the screenplay was finished",
    "tool_use": "the model stopped to use a tool, but this service offers none",
    "pause_turn": "the model paused its turn, which this service does not continue",
}
# ``error.details.error_code`` values (the SDK's APIStatusError.error_code; anthropic 2.14
# anthropic.types.shared.*_spend_limit_reached_error_details) of a 429 that waiting does not cure: the SDK
# raises them as a RateLimitError, but the account may not spend until someone raises the limit.
_SPEND_LIMIT_CODES = frozenset(
    {
        "enforced_spend_limit_reached",
        "contract_spend_limit_reached",
        "linked_organization_spend_limit_reached",
    }
)
# A 400's error.details.error_code that says the account, not the request, is at fault; what the writer
# is told of it (anthropic 2.14 types/shared/: each class's docstring).
_ACCOUNT_400 = {
    # "Anthropic has disabled the organization for trust and safety reasons"; only an operator can appeal.
    "organization_on_hold": "its organization is on hold",
    # "The workspace's customer-managed encryption key is disabled or revoked. Re-enable the key."
    "cmek_key_disabled": "the workspace's encryption key is disabled or revoked",
    # "The key management service's network access controls blocked the request to the workspace's
    # customer-managed encryption key."
    "cmek_key_network_blocked": "the key management service blocked access to the workspace's encryption key",
    # "The API key belongs to the Claude Code workspace, and the user who created it is no longer a member".
    "claude_code_key_creator_not_member": "the creator of its API key is no longer a member of the organization",
    # "The endpoint does not support the organization's type."
    "organization_type_not_supported": "the API does not serve its organization's type",
    # "The endpoint serves only organizations that belong to a parent organization".
    "parent_organization_required": "the API serves only organizations under a parent organization",
}
# A 402's or 403's error.details.error_code that names neither a spend limit nor the key: what the writer
# is told of it (anthropic 2.14 _error_classes.py maps (402 or 403, code) to each class; the quotes are
# its details' docstrings). Without this a 403 blamed the API key and a 402 a spending limit, and an
# operator replaced a working key or looked for a limit that is not there.
_ACCOUNT_402_403 = {
    # (402) "Anthropic cannot currently bill the organization linked to the request's user profile, for
    # a reason that lies with that organization's own account."
    "linked_organization_billing_unavailable": (
        "llm_quota",
        "the model provider cannot bill the organization linked to this service's account",
    ),
    # (403) "The request came from a Claude sandbox with restricted network access, which is not
    # allowed to make this request. Send it from outside the sandbox, or from a sandbox with
    # unrestricted network access."
    "sandbox_egress_restricted": (
        "llm_config",
        "the model provider refused this service's requests: they come from a network the API does not "
        "take requests from (a sandbox with restricted network access)",
    ),
}
# The account's own limits, which the API answers with a 400 invalid_request_error and no error_code: a
# spend limit the organization set itself ("returns HTTP 400 invalid_request_error, not 429",
# platform.claude.com/docs/en/api/rate-limits, "Spend limits"), whose message is "You have reached your
# specified API usage limits. You will regain access on ..." (or "specified workspace API usage
# limits"), and a prepaid credit balance run out ("Your credit balance is too low to access the
# Anthropic API. Please go to Plans & Billing ..."), both as quoted in public error logs. The message is
# all that tells them from a bad request; a wording the API changes falls back to invalid_request.
_ACCOUNT_LIMIT_400 = re.compile(r"specified (?:workspace )?API usage limits|credit balance is too low", re.I)
# The codes of a request, key or model the API refused: retried only when it says ``x-should-retry: true``
# (a spend limit, ``llm_quota``, never: waiting does not lift it).
_REFUSAL_CODES = frozenset({"llm_config", "invalid_request"})
# A request id as the API writes them ("req_" and letters and digits), bounded.
_REQUEST_ID = re.compile(r"req_[A-Za-z0-9_-]{1,120}")


class AnthropicBackend(GenerationBackend):
    async def stream(self, call: ModelCall) -> AsyncGenerator[BackendEvent, None]:
        attempt = 0
        while True:
            text_sent = False
            try:
                # aclosing: closing this generator must close the HTTP stream now, not at garbage collection.
                async with aclosing(_attempt(call)) as events:
                    async for event in events:
                        text_sent = text_sent or isinstance(event, TextDelta)
                        yield event
                return
            except GenerationError as error:
                retries = settings.STORY_LLM_MAX_RETRIES if call.max_retries is None else call.max_retries
                if text_sent or not error.retryable or attempt >= retries:
                    raise
                if retry_after_too_long(error.retry_after):
                    raise  # a retry before the server's retry-after is refused again (retry.py)
                yield CallRetried(code=error.code)
                await asyncio.sleep(backoff_seconds(attempt, error.retry_after))
                attempt += 1


def anthropic_client() -> anthropic.AsyncAnthropic:
    """This event loop's client (an HTTP client is bound to the loop that opened its connections)."""
    loop = asyncio.get_running_loop()
    key = (settings.ANTHROPIC_API_KEY, settings.ANTHROPIC_BASE_URL)
    clients = _clients.setdefault(loop, {})
    if key not in clients:
        if not key[0]:
            raise GenerationError("llm_unavailable", "ANTHROPIC_API_KEY is not set; use the offline model")
        clients[key] = anthropic.AsyncAnthropic(
            api_key=key[0], base_url=key[1] or None, max_retries=0, http_client=_http_client(loop)
        )
    return clients[key]


def _http_client(loop: asyncio.AbstractEventLoop) -> httpx2.AsyncClient | None:
    """The SDK's aiohttp transport on daphne's event loop (``STORY_LLM_HTTP_CLIENT``), else None: the
    SDK's default, httpx2.

    ``anthropic.DefaultAioHttpClient`` is the SDK's own (the ``aiohttp`` extra, anthropic 2.14
    _base_client.py and _vendor/httpx_aiohttp): an httpx2 client whose transport is aiohttp, so requests,
    headers, timeouts, errors (mapped to httpx2's exceptions) and the response the SDK hands back are
    the same. aiohttp reads through an asyncio protocol with a C parser, where httpcore2 enters an anyio
    cancel scope and pauses and resumes the transport on every read: measured in one process against
    bench/fake_server.py (40 streams at 60 tokens/s, ``python -m bench.http_client``), 35-45 us of CPU
    per network read against 81-95 (bench/results/http_client.md; docs/performance.md, "Seventh step").

    Only on daphne's loop, which lives as long as the process: an aiohttp session must be closed on its
    own loop, and a command's ``asyncio.run`` or async_to_sync's temporary loop ends without closing what
    was opened on it (httpx2 needs no closing).
    """
    if settings.STORY_LLM_HTTP_CLIENT == "aiohttp" and _serving_loop(loop):
        return ModelHttpClient()  # DefaultAioHttpClient, its idle-read timer kept lazily (http_client)
    return None


_serving_loop = serving_loop  # a name of this module's own, for the tests to turn the clients on


async def clients_close() -> None:
    """Close this event loop's model clients (their connections), e.g. before the loop ends."""
    for client in _clients.pop(asyncio.get_running_loop(), {}).values():
        await client.close()


def _request(call: ModelCall) -> dict[str, Any]:
    # Thinking set explicitly: the 5.x models think by default and their thinking counts toward
    # max_tokens (MessageCreateParams.thinking, anthropic 2.14 types/thinking_config_param.py).
    thinking, reserve = thinking_param(call.model, budget_tokens=settings.STORY_THINKING_BUDGET_TOKENS)
    params: dict[str, Any] = {
        "model": call.model,
        "max_tokens": max_tokens_for(call.model, call.max_tokens + reserve),
        "system": call.system,
        "messages": call.messages,
        "timeout": httpx2.Timeout(
            connect=settings.STORY_LLM_CONNECT_TIMEOUT_SECONDS,
            # An idle-read timeout: the server sends pings, so silence this long means a stall.
            read=settings.STORY_LLM_READ_TIMEOUT_SECONDS,
            write=settings.STORY_LLM_CONNECT_TIMEOUT_SECONDS,
            pool=settings.STORY_LLM_CONNECT_TIMEOUT_SECONDS,
        ),
    }
    if thinking is not None:
        params["thinking"] = thinking
    if supports_structured_output(call.model):
        params["output_config"] = {
            "format": {"type": "json_schema", "schema": api_schema(call.output_schema)}
        }
    return params


def max_tokens_for(model_id: str, wanted: int) -> int:
    """``wanted`` (the text's max_tokens and the thinking reserve), at most what the model may write.

    A max_tokens over the model's max output is a 400 invalid_request_error from the API ("max_tokens:
    N > M, which is the maximum allowed number of output tokens for <model>"): every call would fail
    on a model with a lower limit than ``STORY_MAX_MAX_TOKENS`` plus the thinking reserve allow (Haiku
    4.5's 64K, the registry's ``max_output`` with its sources). A manual thinking budget stays under the
    result (``budget_tokens`` "less than max_tokens", ThinkingConfigEnabledParam): it is at most 32,000
    (``STORY_THINKING_BUDGET_TOKENS``), half the smallest max output.
    """
    model = model_get(model_id)
    return wanted if model is None else min(wanted, model.max_output)


def api_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """The contract in the subset of JSON Schema that structured outputs accept (the SDK's transform)."""
    # Key order is kept: the model writes required properties first, then optional ones, each in schema
    # order, so the schemas we send require every field we need early (prompt.schema_require_all).
    return json.loads(_api_schema_text(json.dumps(schema)))


@cache
def _api_schema_text(schema_text: str) -> str:
    return json.dumps(transform_schema(_prepared(json.loads(schema_text))))


def _prepared(schema: Any) -> Any:
    """Drop the document keywords and spell ``"type": [a, "null"]`` as anyOf, which the transform expects."""
    if isinstance(schema, list):
        return [_prepared(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    result = {key: _prepared(value) for key, value in schema.items() if key not in ("$schema", "$id")}
    types = result.get("type")
    if isinstance(types, list):
        rest = {key: value for key, value in result.items() if key != "type"}
        return {"anyOf": [{"type": "null"} if t == "null" else {**rest, "type": t} for t in types]}
    return result


async def _attempt(call: ModelCall) -> AsyncGenerator[BackendEvent, None]:
    usage, ending = Usage(), _Ending()
    try:
        # The events of one network read come together (read_ahead), their text as one delta.
        async with aclosing(in_batches(_raw_events(call))) as batches:
            async for batch in batches:
                text: list[str] = []
                for event in batch:
                    delta = event.get("delta") if event.get("type") == "content_block_delta" else None
                    # Only text is screenplay: a thinking block's thinking_delta and signature_delta (and
                    # a redacted_thinking block) are dropped here; their tokens are in the output usage.
                    if delta is not None:
                        if delta.get("type") == "text_delta":
                            text.append(delta["text"])
                        continue
                    report = _usage_event(event, usage, ending)
                    if report is not None:
                        if text:  # the text before it goes first
                            yield TextDelta("".join(text))
                            text = []
                        yield report
                if text:
                    yield TextDelta("".join(text))
    except anthropic.APIStatusError as error:
        raise _status_error(error) from error
    except (anthropic.APITimeoutError, httpx2.TimeoutException):
        raise GenerationError(
            "llm_timeout", "the model stopped responding; please try again", retryable=True
        ) from None
    except (anthropic.APIConnectionError, httpx2.TransportError) as error:
        raise GenerationError("llm_unavailable", _connection_failure(error), retryable=True) from None
    if not ending.stopped:
        raise GenerationError(
            "llm_unavailable", "the model's stream ended early; please try again", retryable=True
        )
    if ending.stop_reason == "refusal":
        raise GenerationError("llm_refused", ending.refusal or "the model declined to write this screenplay")
    if stopped_short := _STOPPED_SHORT.get(ending.stop_reason):
        # Its text is cut where the model stopped: read as a screenplay it would only fail as bad JSON.
        raise ModelStoppedShort(f"{stopped_short} ({ending.stop_reason}); nothing was saved")
    yield CallFinished(stop_reason=ending.stop_reason, usage=usage)


def _connection_failure(error: BaseException) -> str:
    """What the writer (or ``claude_check``'s operator) is told of a transport failure: a connection that
    was never made (refused, no route, a name that does not resolve) is not one that "was lost"."""
    # Both transports raise httpx2.ConnectError under the SDK's APIConnectionError when the connection
    # cannot be opened (httpcore2's own, or the SDK's aiohttp transport mapping aiohttp's
    # ClientConnectorError); a failure after it was opened is a ReadError, RemoteProtocolError...
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, httpx2.ConnectError):
            return "the model's API could not be reached; please try again"
        cause = cause.__cause__ or cause.__context__
    return "the connection to the model was lost; please try again"


@dataclass
class _Ending:
    """How a call ended, as its last events said: ``message_delta``'s stop reason, ``message_stop``."""

    stop_reason: str = ""
    refusal: str = ""
    stopped: bool = False


def _usage_event(event: dict[str, Any], usage: Usage, ending: _Ending) -> UsageReport | None:
    """What an event other than a content delta tells: usage (reported), the stop reason, the end."""
    kind = event.get("type")
    if kind == "message_start":
        _usage_update(usage, event["message"].get("usage"))
        return UsageReport(replace(usage))
    if kind == "message_delta":
        _usage_update(usage, event.get("usage"))
        ending.stop_reason = event["delta"].get("stop_reason") or ""
        ending.refusal = _refusal_text(event["delta"])
        # Its output_tokens is "the cumulative number of output tokens which were used" (the SDK's
        # MessageDeltaUsage): with it, the call's usage is complete.
        return UsageReport(replace(usage), final=True)
    if kind == "message_stop":
        ending.stopped = True
    return None


async def _raw_events(call: ModelCall) -> AsyncGenerator[dict[str, Any], None]:
    """The call's stream events as the JSON objects the API sent, without a pydantic model per event.

    The SDK still makes the request (auth, headers, timeouts, an HTTP error status raised as its
    APIStatusError): ``with_streaming_response`` hands back the response unread (anthropic 2.14
    _response.py). Its body is decoded by ``sse.stream_events`` in one pass per read, by the rules of
    the SDK's own decoder (``event: error`` raised by the SDK itself): the SDK's line-by-line decoder
    and the pydantic model it built per event were most of daphne's CPU time per streamed token that
    was not the HTTP client's (issue 19). Not ``messages.stream()``: it also rebuilds the whole message
    after every delta.
    """
    client = anthropic_client()
    async with client.messages.with_streaming_response.create(**_request(call), stream=True) as response:
        body = response.http_response
        paced = None
        if settings.STORY_STREAM_PACED_READ_MS and isinstance(body.stream, httpx2.AsyncByteStream):
            # The body read in bursts while the process is busy (read_pacing): httpx2's Response reads
            # whatever byte stream its ``stream`` attribute holds (aiter_raw).
            paced = body.stream = PacedBody(
                body.stream,
                interval_ms=settings.STORY_STREAM_PACED_READ_MS,
                from_streams=settings.STORY_STREAM_PACED_READ_STREAMS,
                busy=settings.STORY_STREAM_PACED_READ_BUSY_PERCENT / 100,
            )
        async with aclosing(stream_events(body, client)) as events:
            async for event in events:
                if paced is not None and event.get("type") == "message_delta":
                    # Only more message_delta events and a message_stop follow: the event flow of
                    # Anthropic's "Streaming Messages" docs (build-with-claude/streaming, "Event types":
                    # content blocks, then one or more message_delta, then a final message_stop), the
                    # order the SDK's MessageStream accumulates (anthropic 2.14 lib/streaming/_messages.py)
                    # and tests/fake_anthropic.py sends. A ping meanwhile is read at once too: harmless.
                    paced.stop_pausing()
                yield event


def _usage_update(usage: Usage, reported: dict[str, Any] | None) -> None:
    # Counts on message_delta are cumulative; ones it leaves out (or sends as null) keep their
    # message_start value (the SDK's MessageDeltaUsage: every count Optional).
    if not reported:
        return
    if reported.get("input_tokens") is not None:
        usage.input_tokens = reported["input_tokens"]
    if reported.get("output_tokens") is not None:
        usage.output_tokens = reported["output_tokens"]
    if reported.get("cache_read_input_tokens") is not None:
        usage.cache_read_tokens = reported["cache_read_input_tokens"]
    if reported.get("cache_creation_input_tokens") is not None:
        usage.cache_write_tokens = reported["cache_creation_input_tokens"]


def _refusal_text(delta: dict[str, Any]) -> str:
    details = delta.get("stop_details")
    explanation = details.get("explanation") if isinstance(details, dict) else None
    return f"the model declined to write this screenplay: {explanation}" if explanation else ""


def _status_error(error: anthropic.APIStatusError) -> GenerationError:
    """An HTTP error status, or an ``error`` event mid-stream (status 200, the type in the body)."""
    kind, status = error.type or "", error.status_code
    result = _refusal(error, kind, status) or _transient_error(error, kind, status, _operator_detail(error))
    if result.code in _REFUSAL_CODES and kind and error.response.headers.get("x-should-retry") == "true":
        # The API's own answer says a retry may succeed: the SDK retries it, whatever the status.
        result.retryable = True
        result.retry_after = _retry_after_seconds(error.response.headers) if status != 200 else None
    return _with_request_id(result, error.request_id)


def _with_request_id(error: GenerationError, request_id: str | None) -> GenerationError:
    """``error`` with the provider's request id at the end of its message, when the API gave one.

    Anthropic's "Errors" docs (api/errors, "Request id"): every response carries a unique
    ``request-id`` header, and support asks for it; the SDK reads it as ``APIStatusError.request_id``.
    A writer who reports a failure can then quote it to an operator. Only an id of the API's shape is
    added: the header may come from something in front of the API.
    """
    if not request_id or not _REQUEST_ID.fullmatch(request_id):
        return error
    return error.reworded(f"{error.message} (provider request id {request_id})")


def _refusal(error: anthropic.APIStatusError, kind: str, status: int) -> GenerationError | None:
    """The error of a status or type that says the request, key, model or account is wrong; else None."""
    detail = _operator_detail(error)
    if status in (402, 403) and (account := _ACCOUNT_402_403.get(error.error_code or "")):
        code, what = account
        return GenerationError(
            code, f"{what}; retrying will not help until an operator resolves it", operator_detail=detail
        )
    if (
        status == 402
        or kind == "billing_error"
        or error.error_code in _SPEND_LIMIT_CODES
        or _account_limit(error)
    ):
        return GenerationError(
            "llm_quota",
            "the model provider's spending limit for this service has been reached; retrying will not "
            "help until an operator raises it",
            operator_detail=detail,
        )
    if status == 403 and not kind:
        # No API error body: something in front of the API refused it (a Cloudflare challenge page, a
        # proxy), which says nothing about the key (Anthropic's "Errors" docs, api/errors: the API's own
        # 403 is a JSON ``permission_error``; anthropic 2.14 _exceptions.py, ``APIStatusError.__init__``:
        # ``self.type = extract_property(body, "error", "type")``, None for a body that is not its JSON).
        return GenerationError(
            "llm_config",
            "the model provider's network refused this service's request before the API answered "
            "(HTTP 403 from a proxy or firewall in between); retrying will not help until an operator "
            "looks at it",
            operator_detail=detail,
        )
    if status in (401, 403) or kind in ("authentication_error", "permission_error"):
        return GenerationError(
            "llm_config", "the model provider rejected this service's API key", operator_detail=detail
        )
    if account_problem := _ACCOUNT_400.get(error.error_code or ""):
        # A 400 invalid_request_error by its type, but nothing in the request is wrong: the account, its
        # key or its encryption key is, and only an operator can change that (anthropic 2.14
        # types/shared/*_error.py, each a BadRequestError with this error_code; _error_classes.py maps
        # (400, code) to it). Without this, the writer read "the model provider rejected the request".
        return GenerationError(
            "llm_config",
            f"the model provider refused this service's account: {account_problem}; retrying will not "
            "help until an operator resolves it",
            operator_detail=detail,
        )
    if status == 404 or kind == "not_found_error":
        return GenerationError(
            "llm_config",
            "the configured model is not available to this service's account",
            operator_detail=detail,
        )
    if status in (400, 413, 422) or kind in _REQUEST_TYPES:
        api_detail = (error.api_message or "")[:300] or _unexplained_refusal(status, kind)
        return GenerationError(
            "invalid_request",
            f"the model provider rejected the request: {api_detail}",
            operator_detail=detail,
        )
    return None


def _account_limit(error: anthropic.APIStatusError) -> bool:
    """Whether an invalid_request_error says the account may not spend (``_ACCOUNT_LIMIT_400``)."""
    return error.type == "invalid_request_error" and bool(_ACCOUNT_LIMIT_400.search(error.api_message or ""))


def _unexplained_refusal(status: int, kind: str) -> str:
    """What a refusal without the API's JSON message means, from its status.

    A 413 can come from Cloudflare before the request reaches the API (Anthropic's "Errors" docs,
    api/errors, "Request size limits": "The error is returned from Cloudflare before the request
    reaches our API servers"), as an HTML page: the SDK then has the body as text and no
    ``error.message`` (anthropic 2.14 _base_client.py ``_make_status_error_from_response``: a body that
    is not JSON stays a string; _exceptions.py reads ``api_message`` from ``error.message`` only).
    """
    if status == 413 or kind == "request_too_large":
        return "the request is larger than it accepts (HTTP 413, request_too_large)"
    return f"HTTP {status}, with no explanation"


def _transient_error(error: anthropic.APIStatusError, kind: str, status: int, detail: str) -> GenerationError:
    """Overloaded, rate-limited or down: retryable as the SDK's ``_should_retry`` says (its header first,
    then 408, 409, 429, 5xx; an ``error`` event mid-stream, status 200, too)."""
    if status == 529 or kind == "overloaded_error":
        code, what = "llm_overloaded", "the model is overloaded"
    elif status == 429 or kind == "rate_limit_error":
        code, what = "llm_rate_limited", "the model's rate limit was reached"
    else:
        code, what = "llm_unavailable", "the model is unavailable"
    told = error.response.headers.get("x-should-retry")
    told_not_to = told == "false"
    retryable = told == "true" or status in _RETRYABLE_STATUS or status >= 500 or status == 200
    if told_not_to or not retryable:
        why = "the provider says retrying will not help" if told_not_to else "retrying will not help"
        return GenerationError(code, f"{what}; {why}", operator_detail=detail)
    return GenerationError(
        code,
        f"{what}; please try again shortly",
        retryable=True,
        retry_after=_retry_after_seconds(error.response.headers) if status != 200 else None,
        operator_detail=detail,
    )


def _operator_detail(error: anthropic.APIStatusError) -> str:
    """What an operator needs to find the failure with Anthropic; never shown to a writer."""
    parts = [
        f"status {error.status_code}",
        f"type {error.type or '-'}",
        f"error_code {error.error_code or '-'}",
        f"request-id {error.request_id or '-'}",
    ]
    if error.response.headers.get("x-should-retry"):
        parts.append(f"x-should-retry {error.response.headers['x-should-retry']}")
    return ", ".join(parts)


def _retry_after_seconds(headers: Any) -> float | None:
    """``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date), as the SDK reads them: NaN, zero,
    a negative number and a date gone by are no answer (the caller backs off instead), and no wait is
    longer than 4,294,967 s, infinity included (anthropic 2.14 _base_client.py,
    ``_calculate_retry_timeout``: ``retry_after is not None and retry_after > 0``, then
    ``min(retry_after, 4_294_967.0)``; otherwise exponential back-off)."""
    seconds = _retry_after_header(headers)
    # ``not seconds > 0`` is also true of NaN.
    if seconds is None or not seconds > 0:
        return None
    return min(seconds, _RETRY_AFTER_MAX_SECONDS)


def _retry_after_header(headers: Any) -> float | None:
    try:
        return float(headers.get("retry-after-ms")) / 1000
    except (TypeError, ValueError):
        pass
    raw = headers.get("retry-after")
    try:
        return float(raw)
    except (TypeError, ValueError):
        pass
    parsed = email.utils.parsedate_tz(raw) if raw else None
    return float(email.utils.mktime_tz(parsed) - time.time()) if parsed else None
