"""The REST API of stories."""

from __future__ import annotations

# --- Generation: POST /api/ai/generate-screenplay/ (issue 4) ---------------------------------------
# The old app's blocking endpoint, kept: the same pipeline as the WebSocket, collected to its end.
from contextlib import aclosing
from typing import Any

from asgiref.sync import async_to_sync
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from stories.generation.errors import GenerationError
from stories.generation.pipeline import generation_run
from stories.generation.requests import GenerationRequest, generation_request_parse
from stories.models import ScreenplayVersion

GENERATION_ERROR_STATUS = {
    "invalid_request": status.HTTP_400_BAD_REQUEST,
    "unknown_personas": status.HTTP_400_BAD_REQUEST,
    "unauthenticated": status.HTTP_401_UNAUTHORIZED,
    "forbidden": status.HTTP_403_FORBIDDEN,
    "rate_limited": status.HTTP_429_TOO_MANY_REQUESTS,
    "busy": status.HTTP_429_TOO_MANY_REQUESTS,
    "llm_overloaded": status.HTTP_503_SERVICE_UNAVAILABLE,
    "llm_rate_limited": status.HTTP_503_SERVICE_UNAVAILABLE,
    "llm_unavailable": status.HTTP_502_BAD_GATEWAY,
    "llm_timeout": status.HTTP_504_GATEWAY_TIMEOUT,
    "llm_refused": status.HTTP_422_UNPROCESSABLE_ENTITY,
    "invalid_output": status.HTTP_502_BAD_GATEWAY,
    "save_failed": status.HTTP_500_INTERNAL_SERVER_ERROR,
}


class GenerateScreenplayView(APIView):
    """Generate a screenplay, save it, and return the story and its new version (blocking)."""

    def post(self, request: Request) -> Response:
        try:
            generation = generation_request_parse(request.data)
        except GenerationError as error:
            return _error_response(error.as_event())
        events = async_to_sync(_events_collect)(generation, request.user)
        final = events[-1] if events else {"type": "error", "code": "llm_unavailable", "message": "no result"}
        if final["type"] != "done":
            return _error_response(final)
        saved = next(event for event in events if event["type"] == "saved")
        version = ScreenplayVersion.objects.select_related("story").get(
            story_id=saved["story_id"], number=saved["version"]
        )
        return Response(_generation_body(version, saved, final), status=status.HTTP_201_CREATED)


async def _events_collect(generation: GenerationRequest, user: Any) -> list[dict[str, Any]]:
    # Deltas and progress matter only to a streaming client; keep the rest.
    kept = []
    async with aclosing(generation_run(request=generation, user=user)) as events:
        async for event in events:
            if event["type"] not in ("delta", "progress"):
                kept.append(event)
    return kept


def _error_response(event: dict[str, Any]) -> Response:
    body = {key: event[key] for key in ("code", "message", "retryable") if key in event}
    return Response(body, status=GENERATION_ERROR_STATUS.get(body.get("code", ""), 500))


def _generation_body(
    version: ScreenplayVersion, saved: dict[str, Any], done: dict[str, Any]
) -> dict[str, Any]:
    story = version.story
    return {
        "run_id": saved["run_id"],
        "story": {"id": story.pk, "title": story.title, "plot": story.plot, "url": saved["url"]},
        "version": {
            "number": version.number,
            "content": version.content,
            "model": version.model,
            "max_tokens": version.max_tokens,
            "created_at": version.created_at.isoformat(),
        },
        "timings": done["timings"],
        "usage": done["usage"],
    }


# --- End of generation -----------------------------------------------------------------------------
