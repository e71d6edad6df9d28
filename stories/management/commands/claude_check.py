"""Check the Claude models this deployment is configured for, one tiny request pair each."""

from __future__ import annotations

import asyncio
from typing import Any

from django.conf import settings
from django.core.management.base import CommandError, CommandParser

from stories.generation.claude_check import models_check
from stories.generation.models_registry import model_refusal
from storyproject.commands import EXIT_INVALID, ProjectCommand


class Command(ProjectCommand):
    # It only talks to the API: a database down does not stop the check.
    uses_database = False
    help = (
        "For each configured model (STORY_MODEL and STORY_MODELS), stream two tiny requests with "
        "structured output and a cached system prompt; print OK with latency and cache tokens, or a "
        "line saying what failed. Costs a fraction of a cent per model. Exits 1 if any model failed."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--model", action="append", help="check this model instead (repeatable)")

    def handle(self, *args: Any, model: list[str] | None, **options: Any) -> None:
        if not settings.ANTHROPIC_API_KEY:
            raise CommandError(
                "ANTHROPIC_API_KEY is not set: there is nothing to check", returncode=EXIT_INVALID
            )
        models = model or _configured_models()
        if not models:
            raise CommandError(
                "no Claude model is configured (STORY_MODEL / STORY_MODELS)", returncode=EXIT_INVALID
            )
        for name in models:
            if refusal := model_refusal(name):
                raise CommandError(refusal, returncode=EXIT_INVALID)
        results = asyncio.run(models_check(models=models))
        for result in results:
            status = self.style.SUCCESS("OK") if result.ok else self.style.ERROR("FAILED")
            self.stdout.write(f"{result.model}  {status}  {result.summary}")
        failed = [result.model for result in results if not result.ok]
        if failed:
            raise CommandError(f"{len(failed)} of {len(results)} model(s) failed: {', '.join(failed)}")


def _configured_models() -> list[str]:
    configured = [settings.STORY_MODEL, *settings.STORY_MODELS]
    return [name for name in dict.fromkeys(configured) if name != settings.OFFLINE_MODEL]
