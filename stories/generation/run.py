"""The run core: one run's state, the one model-call loop, progress.

Every writing strategy (``single``: one streamed screenplay with continuations; ``parallel``: an
outline, then the scenes side by side) streams its model calls through ``call_text`` and reports
progress through ``Run.progress``, so usage, TTFT, the run's text and the per-call log are recorded
the same way in every mode. The pipeline (stories.generation.pipeline) owns admission and the save.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Callable, Iterator, Sequence
from contextlib import aclosing, contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from django.conf import settings

from stories.errors import GenerationError
from stories.generation.backends.base import (
    Brief,
    CallFinished,
    CallRetried,
    GenerationBackend,
    ModelCall,
    Usage,
    UsageReport,
    cut_call_usage,
)
from stories.generation.cache_rules import cache_hit_rate
from stories.generation.models_registry import thinking_param
from stories.generation.prompt import PersonaContextLike, Prompt
from stories.generation.requests import GenerationRequest, model_label
from stories.selectors import GenerationPace
from stories.services import RunRecord

# At most this many progress events a second.
PROGRESS_INTERVAL_SECONDS = 0.25


def ms_since(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


@dataclass
class Run:
    """The state of one run while it streams."""

    run_id: int
    request: GenerationRequest
    user_id: int
    model: str
    max_tokens: int
    started: float
    pace: GenerationPace
    rules: str  # the editors' formatting rules, read with the model defaults
    record: RunRecord = field(default_factory=RunRecord)
    usage: Usage = field(default_factory=Usage)
    # The text of every call, in the order the calls ended (what a failed run keeps).
    texts: list[str] = field(default_factory=list)
    first_token_at: float | None = None
    last_progress_at: float = 0.0
    streamed_chars: int = 0
    # Some call was cut off before its final usage: its output tokens are an estimate.
    usage_estimated: bool = False
    # The process holding the run's lease (stories.services.RUN_LEASE_OWNER); "" for a run held by none,
    # which writes no checkpoints (stories.generation.checkpoint).
    lease_owner: str = ""

    def elapsed_ms(self) -> int:
        return ms_since(self.started)

    def output_left(self) -> int:
        """What the run's output cap (STORY_MAX_TOTAL_OUTPUT_TOKENS) leaves after the calls so far."""
        return settings.STORY_MAX_TOTAL_OUTPUT_TOKENS - self.usage.output_tokens

    @property
    def thinking_reserve(self) -> int:
        """The tokens each of this run's calls adds to its max_tokens for thinking (models_registry's
        ``thinking_param``): thinking tokens are output tokens, billed and counted under the run's cap,
        so a call may write its text's max_tokens plus this."""
        return thinking_param(self.model, budget_tokens=settings.STORY_THINKING_BUDGET_TOKENS)[1]

    def text_left(self) -> int:
        """The most text one more call may be asked for under the run's cap: what the cap leaves, less
        that call's thinking reserve (a call's max_tokens goes to the API with the reserve added)."""
        return self.output_left() - self.thinking_reserve

    def first_call_budget(self) -> int:
        """The first call's max_tokens for text: the run's, within what its cap leaves; refused when the
        thinking reserve alone takes the whole cap (nothing is asked for, nothing paid)."""
        budget = min(self.max_tokens, self.text_left())
        if budget < 1:
            cap, reserve = settings.STORY_MAX_TOTAL_OUTPUT_TOKENS, self.thinking_reserve
            raise GenerationError(
                "llm_config",
                f"the run's output cap of {cap} tokens (STORY_MAX_TOTAL_OUTPUT_TOKENS) leaves no room for "
                f"text after the {reserve} tokens set aside for thinking (STORY_THINKING_BUDGET_TOKENS)",
            )
        return budget

    def prompt_timed(self, build: Callable[[], Prompt]) -> Prompt:
        """``build()``, its time recorded as the run's prompt_ms if it is the run's first prompt."""
        started = time.monotonic()
        prompt = build()
        if self.record.prompt_ms is None:
            self.record.prompt_ms = ms_since(started)
        return prompt

    def record_final(self) -> RunRecord:
        """The run's record with its usage and totals, ready to be written; kept as ``self.record``."""
        record, usage = self.record, self.usage
        record.usage = usage.as_dict()
        record.usage_estimated = self.usage_estimated
        record.total_ms = self.elapsed_ms()
        hit_rate = cache_hit_rate(
            cache_read=usage.cache_read_tokens,
            cache_write=usage.cache_write_tokens,
            input_tokens=usage.input_tokens,
        )
        record.details = {
            **record.details,
            "model_name": model_label(self.model),
            "streamed_chars": self.streamed_chars,
            "cache_hit_rate": None if hit_rate is None else round(hit_rate, 3),
        }
        return record

    def done_event(self) -> dict[str, Any]:
        names = ("context_ms", "prompt_ms", "ttft_ms", "llm_ms", "save_ms", "total_ms")
        timings = {name: getattr(self.record, name) for name in names}
        return {"type": "done", "run_id": self.run_id, "timings": timings, "usage": self.usage.as_dict()}

    def progress_due(self) -> bool:
        """Whether ``progress`` would give an event now (to skip the work of one that would not)."""
        return time.monotonic() - self.last_progress_at >= PROGRESS_INTERVAL_SECONDS

    def progress(
        self, *, live_tokens: int, remaining_tokens: float, streams: int = 1, **extra: Any
    ) -> dict[str, Any] | None:
        """A progress event, at most one every PROGRESS_INTERVAL_SECONDS (else None).

        ``live_tokens`` is the estimated output of calls still streaming; ``streams`` how many calls
        write side by side, each at the model's pace.
        """
        if not self.progress_due():
            return None
        now = self.last_progress_at = time.monotonic()
        output_tokens = self.usage.output_tokens + live_tokens
        rate = self.pace.tokens_per_second
        writing = now - (self.first_token_at or now)
        if writing > 1.0 and output_tokens > 20:
            # Once the model has written for a while, its own rate in this run is the better guide.
            rate = output_tokens / writing / max(streams, 1)
        return {
            "type": "progress",
            "output_tokens": output_tokens,
            "elapsed_ms": self.elapsed_ms(),
            "eta_seconds": round(max(remaining_tokens, 0) / max(rate, 1e-6), 1),
            **extra,
        }


@dataclass
class CallResult:
    """What one model call left: its text, its CallFinished (None if cut off), usage and timings."""

    text: str = ""
    finished: CallFinished | None = None
    # The last usage the provider reported before the call ended (for a call cut off).
    report: UsageReport | None = None
    ttft_ms: int | None = None
    ms: int = 0
    # The protocol codes of the failed attempts the back-end tried again (backends.base.CallRetried).
    retries: list[str] = field(default_factory=list)
    # What those attempts were billed, and whether that is an estimate (see ``attempt_retried``).
    retried_usage: Usage = field(default_factory=Usage)
    retried_estimated: bool = False

    def attempt_retried(self, code: str) -> None:
        """The attempt that reported ``report`` failed before any text and is being tried again.

        An attempt whose stream began (its ``message_start`` reported the input tokens) was billed like
        any call cut off, so it counts with the call: its input, and its output as last reported, an
        estimate (it passed on no text, and thinking tokens are output: anthropic 2.14
        types/message_delta_usage.py, ``output_tokens`` "cumulative"). One refused before its stream
        began (a 429, a 529) reported nothing and adds nothing.
        """
        self.retries.append(code)
        spent, estimated = cut_call_usage(self.report, "")
        self.retried_usage.add(spent)
        self.retried_estimated = self.retried_estimated or estimated
        self.report = None

    @property
    def usage(self) -> Usage:
        return self.finished.usage if self.finished is not None else Usage()


class Writer(Protocol):
    """A writing strategy: yields the protocol's events and fills ``content`` with the screenplay."""

    def __call__(
        self,
        run: Run,
        *,
        contexts: Sequence[PersonaContextLike],
        brief: Brief,
        content: dict[str, Any],
    ) -> AsyncGenerator[dict[str, Any], None]: ...


def call_log(run: Run, *, task: str, index: int | None, attempt: int) -> dict[str, Any]:
    """A new entry of ``details["calls"]`` (parallel mode logs each call, retries included)."""
    log: dict[str, Any] = {"task": task, "index": index, "attempt": attempt, "status": "streaming"}
    run.record.details.setdefault("calls", []).append(log)
    return log


@contextmanager
def reply_read(log: dict[str, Any]) -> Iterator[None]:
    """Where a finished call's reply is read: a GenerationError raised there (the text makes no outline
    or scene, or needs more continuations than allowed) becomes that call's status in ``details["calls"]``,
    where its stream's end had logged it "ok"."""
    try:
        yield
    except GenerationError as error:
        log["status"] = error.code
        raise


async def call_stream(
    backend: GenerationBackend, call: ModelCall, result: CallResult
) -> AsyncGenerator[str, None]:
    """The one model-call loop: yield the call's text as it comes; fill ``result`` however it ends."""
    started = time.monotonic()
    pieces: list[str] = []
    try:
        async with aclosing(backend.stream(call)) as upstream:
            async for item in upstream:
                if isinstance(item, UsageReport):
                    result.report = item
                elif isinstance(item, CallFinished):
                    result.finished = item
                elif isinstance(item, CallRetried):
                    result.attempt_retried(item.code)
                else:
                    if result.ttft_ms is None:
                        result.ttft_ms = ms_since(started)
                    pieces.append(item.text)
                    yield item.text
    finally:
        result.text, result.ms = "".join(pieces), ms_since(started)


async def call_text(
    run: Run,
    backend: GenerationBackend,
    call: ModelCall,
    result: CallResult,
    log: dict[str, Any] | None = None,
) -> AsyncGenerator[str, None]:
    """``call_stream`` within a run: TTFT, streamed characters, and the call's usage added to the run
    (and to ``log``) on success, failure and cancellation alike: a call cut off before its
    CallFinished was billed all the same (backends.base.cut_call_usage).
    """
    try:
        async with aclosing(call_stream(backend, call, result)) as texts:
            async for text in texts:
                if run.first_token_at is None:
                    run.first_token_at = time.monotonic()
                    run.record.ttft_ms = result.ttft_ms
                run.streamed_chars += len(text)
                yield text
    except GenerationError as error:
        if log is not None:
            log["status"] = error.code
        raise
    finally:
        _call_close(run, result, log)


def _call_close(run: Run, result: CallResult, log: dict[str, Any] | None) -> None:
    if result.text:
        run.texts.append(result.text)
    if result.retries:
        run.record.details.setdefault("retries", []).extend(result.retries)
    end = result.finished
    if end is None:
        # Cancelled, dropped or failed mid-stream: what the API reported so far, the output estimated.
        usage, estimated = cut_call_usage(result.report, result.text)
        run.usage_estimated = run.usage_estimated or estimated
        outcome: dict[str, Any] = {"usage_estimated": estimated or result.retried_estimated}
    else:
        usage = replace(end.usage)
        run.record.stop_reason = end.stop_reason
        outcome = {"stop_reason": end.stop_reason}
    # Attempts the back-end tried again before this one were billed too (CallResult.attempt_retried).
    usage.add(result.retried_usage)
    run.usage_estimated = run.usage_estimated or result.retried_estimated
    outcome.update(usage.as_dict())
    run.usage.add(usage)
    if log is None:
        return
    log.update(outcome, ms=result.ms)
    if result.ttft_ms is not None:
        log["ttft_ms"] = result.ttft_ms
    if log["status"] == "streaming":
        log["status"] = "ok" if end is not None else "cancelled"
