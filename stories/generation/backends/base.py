"""The interface every model back-end implements: what a call is, what its stream yields.

It names no implementation; backends.registry picks the back-end for a model.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field, replace
from typing import Any

from storyproject.tokens import token_estimate


@dataclass(frozen=True)
class CastMember:
    name: str
    display_name: str
    context: str


@dataclass(frozen=True)
class Brief:
    """What a call writes, in plain fields, for back-ends that write without a model (the offline one).

    A model reads the prompt instead; nothing here reaches it.
    """

    plot: str
    title: str
    cast: tuple[CastMember, ...]
    # "screenplay" (the whole of it), or parallel mode's "outline" or "scene"; for a scene, its index
    # in the outline, the outline itself and any instructions for rewriting it.
    task: str = "screenplay"
    scene_index: int = 0
    outline: dict[str, Any] | None = None
    instructions: str = ""
    # Items already kept from earlier calls cut off at max_tokens; 0 for the first call. Scenes in single
    # mode; in parallel mode an outline's scene entries or a scene's elements.
    continue_after: int = 0


@dataclass(frozen=True)
class ModelCall:
    model: str
    max_tokens: int
    system: list[dict[str, Any]]
    messages: list[dict[str, Any]]
    # The JSON schema the reply must match: the screenplay, or {"scenes": [...]} for a continuation.
    output_schema: dict[str, Any]
    brief: Brief
    # None: the back-end's own bounded retries. 0 for a caller that retries by itself.
    max_retries: int | None = None


@dataclass
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0

    def add(self, other: Usage) -> None:
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.cache_read_tokens += other.cache_read_tokens
        self.cache_write_tokens += other.cache_write_tokens

    def as_dict(self) -> dict[str, int]:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_read_tokens": self.cache_read_tokens,
            "cache_write_tokens": self.cache_write_tokens,
        }


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class UsageReport:
    """The usage the provider has reported so far for this call, cumulative.

    ``final`` once the output count is the call's total. A back-end sends these as the counts arrive,
    so a call that is cut off (cancelled, dropped) before CallFinished still has what it was billed.
    """

    usage: Usage
    final: bool = False


@dataclass(frozen=True)
class CallFinished:
    stop_reason: str
    usage: Usage = field(default_factory=Usage)


@dataclass(frozen=True)
class CallRetried:
    """An attempt failed before any text was passed on, and the back-end tries the call again: the
    failure's protocol code (counted in the run's ``details["retries"]`` and in the metrics)."""

    code: str


BackendEvent = TextDelta | UsageReport | CallFinished | CallRetried


def cut_call_usage(report: UsageReport | None, text: str) -> tuple[Usage, bool]:
    """The usage of a call that ended without CallFinished, and whether it is an estimate.

    What the provider reported last is kept as it is. Unless that report was final, the output tokens
    are estimated from the text received (the provider's count so far, if higher): a stream cut before
    its final usage was still billed for what it wrote.
    """
    usage = replace(report.usage) if report is not None else Usage()
    if report is not None and report.final:
        return usage, False
    usage.output_tokens = max(usage.output_tokens, token_estimate(text))
    return usage, bool(text) or report is not None


class GenerationBackend(abc.ABC):
    """Streams one model call. Raises GenerationError (with a protocol code) for every failure."""

    @abc.abstractmethod
    def stream(self, call: ModelCall) -> AsyncGenerator[BackendEvent, None]:
        """Yield TextDelta as text arrives (and UsageReport as usage does), then exactly one CallFinished."""
