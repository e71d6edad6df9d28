"""One tiny check per model against the real API, through the same back-end generations use.

Each model gets two identical streaming requests with structured output and a system prompt marked
for caching that is just over the model's minimum cacheable length: the first must write the cache,
the second read it. A failure becomes one line with its protocol code and the provider's detail.
"""

from __future__ import annotations

import json
import uuid
from contextlib import aclosing
from dataclasses import dataclass

from stories.errors import GenerationError
from stories.generation.backends.anthropic import AnthropicBackend
from stories.generation.backends.base import Brief, ModelCall
from stories.generation.models_registry import model_get
from stories.generation.run import CallResult, call_stream

_SCHEMA = {
    "type": "object",
    "properties": {"ok": {"type": "boolean"}},
    "required": ["ok"],
    "additionalProperties": False,
}
_MAX_TOKENS = 64
_FILLER = "This line only makes the cached prefix long enough to be cached. "
# Its twelve words and its full stop.
_FILLER_TOKENS_AT_LEAST = 13


@dataclass(frozen=True)
class ModelCheck:
    model: str
    ok: bool
    summary: str


async def models_check(*, models: list[str]) -> list[ModelCheck]:
    """Check each model in turn (in turn: a check must not trip the account's rate limits)."""
    return [await _model_check(model) for model in models]


async def _model_check(model: str) -> ModelCheck:
    call = _check_call(model)
    try:
        first = await _call(call)
        second = await _call(call)
    except GenerationError as error:
        detail = f" ({error.operator_detail})" if error.operator_detail else ""
        return ModelCheck(model, False, f"{error.code}: {error.message}{detail}")
    problems = _problems(first, second)
    summary = (
        f"first {first.ms} ms (first token {first.ttft_ms} ms, cache write "
        f"{first.usage.cache_write_tokens} tokens), second {second.ms} ms (cache read "
        f"{second.usage.cache_read_tokens} tokens)"
    )
    return ModelCheck(model, not problems, "; ".join([*problems, summary]))


def _problems(first: CallResult, second: CallResult) -> list[str]:
    problems = []
    for name, result in (("first", first), ("second", second)):
        try:
            reply = json.loads(result.text)
        except ValueError:
            reply = None
        if reply != {"ok": True}:
            problems.append(f"structured output: the {name} reply was {result.text[:80]!r}")
    if first.usage.cache_write_tokens == 0:
        problems.append("prompt cache: the first request wrote nothing to the cache")
    if second.usage.cache_read_tokens == 0:
        problems.append("prompt cache: the second request read nothing from the cache")
    return problems


def _check_call(model: str) -> ModelCall:
    registered = model_get(model)
    minimum = registered.min_cache_tokens if registered else 1024
    # A fresh prefix each run, so the first request writes the cache even if a check ran minutes ago.
    nonce = f"Check {uuid.uuid4().hex}. "
    # A quarter over the minimum even if each of the filler's words and its full stop is one token, as
    # common English words are. Was: a quarter over by our estimate (3.8 characters a token, 18 for this
    # line), which plain words do not reach: a Claude BPE (the anthropic-tokenizer package's, measured
    # 2026-11-29) counts 13.3 tokens a line, 971 in all for Sonnet 4.6's 1,024 minimum and 3,736 for
    # Haiku 4.5's and Opus 4.6's 4,096, so the API would cache nothing and the check fail a healthy
    # model ("Shorter prompts cannot be cached, even if marked with cache_control", prompt-caching).
    padding = nonce + _FILLER * (minimum * 5 // 4 // _FILLER_TOKENS_AT_LEAST + 1)
    return ModelCall(
        model=model,
        max_tokens=_MAX_TOKENS,
        system=[{"type": "text", "text": padding, "cache_control": {"type": "ephemeral"}}],
        messages=[{"role": "user", "content": 'Answer with the JSON object {"ok": true} and nothing else.'}],
        output_schema=_SCHEMA,
        brief=Brief(plot="", title="", cast=()),
        max_retries=0,
    )


async def _call(call: ModelCall) -> CallResult:
    result = CallResult()
    # The generations' own call loop; the CallFinished that ends the call carries the totals.
    async with aclosing(call_stream(AnthropicBackend(), call, result)) as texts:
        async for _text in texts:
            pass
    return result
