"""Generate a screenplay from the terminal: the same pipeline as the page, its text on stdout."""

from __future__ import annotations

import asyncio
import json
from contextlib import aclosing
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from stories.generation.errors import GenerationError
from stories.generation.pipeline import generation_run
from stories.generation.requests import GenerationRequest, generation_request_parse


class Command(BaseCommand):
    help = (
        "Generate and save a screenplay for a user: the model's text streams to stdout, progress and "
        "the result to stderr. Exits non-zero with the error code when the generation fails."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--user", required=True, help="Username of the story's owner.")
        parser.add_argument("--plot", required=True)
        parser.add_argument("--personas", required=True, help="Comma-separated persona names.")
        parser.add_argument("--title", default="")
        parser.add_argument("--story-id", type=int, help="Add a version to this story of the user's.")
        parser.add_argument("--model")
        parser.add_argument("--max-tokens", type=int)

    def handle(self, *args: Any, **options: Any) -> None:
        user = get_user_model().objects.filter(username=options["user"]).first()
        if user is None:
            raise CommandError(f"no user named {options['user']!r}")
        fields = {
            "plot": options["plot"],
            "personas": [name.strip() for name in options["personas"].split(",") if name.strip()],
            "title": options["title"],
            "story_id": options["story_id"],
            "model": options["model"],
            "max_tokens": options["max_tokens"],
        }
        try:
            request = generation_request_parse(fields)
        except GenerationError as error:
            raise CommandError(f"{error.code}: {error.message}") from None
        final = asyncio.run(self._stream(request, user))
        if final.get("type") != "done":
            raise CommandError(f"{final.get('code', 'cancelled')}: {final.get('message', 'cancelled')}")

    async def _stream(self, request: GenerationRequest, user: Any) -> dict[str, Any]:
        final: dict[str, Any] = {}
        async with aclosing(generation_run(request=request, user=user)) as events:
            async for event in events:
                final = event
                self._show(event)
        return final

    def _show(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind == "delta":
            self.stdout.write(event["text"], ending="")
            self.stdout.flush()
        elif kind == "accepted":
            self.stderr.write(
                f"run {event['run_id']}: {event['model_name']}, about {event['estimated_seconds']} s"
            )
        elif kind == "progress":
            self.stderr.write(
                f"\n{event['output_tokens']} tokens, {event['elapsed_ms'] / 1000:.1f} s, ETA {event['eta_seconds']} s"
            )
        elif kind == "saved":
            self.stderr.write(
                f"\nsaved: story {event['story_id']} version {event['version']} ({event['url']})"
            )
        elif kind == "done":
            self.stderr.write(json.dumps({"timings": event["timings"], "usage": event["usage"]}))
