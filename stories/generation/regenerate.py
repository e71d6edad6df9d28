"""Rewrite one scene of a saved screenplay version, with the same context, as a new version.

The context is what parallel mode gives any scene call: the instructions, the cast's persona contexts,
and an outline, here rebuilt from the saved version (its header and each scene's heading, summary and
speakers). The run goes through the same pipeline (admission, run record, validation, atomic save), so
the result is the version's content with that one scene replaced, saved as the story's next version.
The socket (``regenerate_scene``), the API and the story page all call ``scene_regenerate_run``; the
blocking ones read its events with ``stories.generation.events.events_fold``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from personas.models import PersonaConfig
from stories.errors import GenerationError
from stories.generation.parallel import SceneEdit
from stories.generation.pipeline import generation_run
from stories.generation.requests import (
    GenerationRequest,
    SceneRewrite,
    allowed_models,
    fields_known_check,
    int_parse,
    model_parse,
)
from stories.selectors import story_find_for_user, story_owned, story_version_find
from stories.validation import text_field_problem, text_trimmed
from stories.ws_auth import SocketCredential
from storyproject.db import db_call

_FIELDS = frozenset({"story_id", "version", "index", "instructions", "model", "max_tokens", "base_version"})
# What a request body may say where its URL names the story, version and scene (the API, the page).
_BODY_FIELDS = frozenset({"instructions", "model", "max_tokens", "base_version"})
_MAX_ID = 2**63 - 1


@dataclass(frozen=True)
class SceneRegenerateRequest:
    story_id: int
    version: int
    index: int
    instructions: str = ""
    model: str | None = None
    max_tokens: int | None = None
    # The story's latest version as the client knows it: a newer one is a conflict (another tab saved).
    base_version: int | None = None


def scene_regenerate_request_parse(data: object) -> SceneRegenerateRequest:
    """Validate an untrusted JSON object; raise GenerationError("invalid_request") naming the bad field.

    ``index`` is the scene's 0-based position, as in the ``scene`` events.
    """
    if not isinstance(data, dict):
        raise _invalid("the request must be a JSON object")
    fields_known_check(data, _FIELDS)
    return SceneRegenerateRequest(
        story_id=int_parse(data.get("story_id"), "story_id", 1, _MAX_ID),
        version=int_parse(data.get("version"), "version", 1, _MAX_ID),
        # Bounded by the version's own scenes (_generation_for): versions that were not written from an
        # outline (imported, edited, single pass) may hold more than STORY_PARALLEL_MAX_SCENES.
        index=int_parse(data.get("index"), "index", 0, _MAX_ID),
        instructions=_instructions(data.get("instructions")),
        model=model_parse(data.get("model")),
        max_tokens=None
        if data.get("max_tokens") is None
        else int_parse(
            data.get("max_tokens"), "max_tokens", settings.STORY_MIN_MAX_TOKENS, settings.STORY_MAX_MAX_TOKENS
        ),
        base_version=None
        if data.get("base_version") is None
        else int_parse(data.get("base_version"), "base_version", 1, _MAX_ID),
    )


def scene_regenerate_body_parse(
    data: object, *, story_id: int, version: int, index: int
) -> SceneRegenerateRequest:
    """A rewrite whose URL names the scene: the body may only say how (an address in it is refused,
    never silently overridden by the URL's)."""
    if not isinstance(data, dict):
        raise _invalid("the request must be a JSON object")
    fields_known_check(data, _BODY_FIELDS)
    return scene_regenerate_request_parse({**data, "story_id": story_id, "version": version, "index": index})


async def scene_regenerate_run(
    *, request: SceneRegenerateRequest, user: Any, credential: SocketCredential | None = None
) -> AsyncGenerator[dict[str, Any], None]:
    """The protocol's events for rewriting one scene; ends with ``saved`` and ``done``, or an error.
    ``credential``: as ``generation_run``'s."""
    try:
        generation, edit = await db_call(_generation_for)(request, user.pk)
    except GenerationError as error:
        yield error.as_event()
        return
    stream = generation_run(request=generation, user=user, edit=edit, credential=credential)
    async with aclosing(stream) as events:
        async for event in events:
            yield event


def _generation_for(request: SceneRegenerateRequest, user_id: int) -> tuple[GenerationRequest, SceneEdit]:
    story = story_find_for_user(story_id=request.story_id, user_id=user_id)
    if story is None:
        raise GenerationError("forbidden", "that story does not exist or is not yours")
    version = story_version_find(story=story, number=request.version)
    if version is None:
        if not story_owned(story_id=story.pk, user_id=user_id):
            # Deleted since it was found (another tab), its versions with it: a story that is gone, not
            # "no version" of a story that had it.
            raise GenerationError("forbidden", "that story does not exist or is not yours")
        raise _invalid(f"the story has no version {request.version}")
    _base_version_check(request.base_version, story.latest_version_number)
    scenes = version.content.get("scenes") or []
    if request.index >= len(scenes):
        count = "no scene" if not scenes else "1 scene" if len(scenes) == 1 else f"{len(scenes)} scenes"
        raise _invalid(f"version {request.version} has {count}; index {request.index} is not one")
    named = [
        character["persona"]
        for character in version.content.get("characters", [])
        if isinstance(character, dict) and character.get("persona")
    ]
    # A version may name a persona deleted since (a restore keeps it, out of the cast): its part stays
    # as written and the rewrite uses the personas that exist; asking for it refused every rewrite of
    # the story for good ("unknown personas"). A deactivated one is still refused by name: an editor
    # may bring it back, and the writer is told which.
    existing = set(PersonaConfig.objects.filter(name__in=named).values_list("name", flat=True))
    personas = [name for name in named if name in existing]
    # The same model as the version, unless the writer asks for another or it is no longer offered.
    model = request.model or (version.model if version.model in allowed_models() else None)
    generation = GenerationRequest(
        plot=story.plot,
        personas=list(dict.fromkeys(personas)),
        title=story.title,
        story_id=story.pk,
        model=model,
        max_tokens=request.max_tokens or version.max_tokens,
        mode="parallel",
        rewrite=SceneRewrite(version=version.number, index=request.index, latest=story.latest_version_number),
    )
    edit = SceneEdit(
        content=version.content,
        version=version.number,
        index=request.index,
        instructions=request.instructions,
    )
    return generation, edit


def _base_version_check(base_version: int | None, latest: int) -> None:
    """Refuse a rewrite asked for from a page another tab has overtaken, before anything is paid for:
    a rewrite of an older version keeps that version's other scenes, which would undo the newer one."""
    if base_version is None or base_version == latest:
        return
    if base_version > latest:
        raise _invalid(f"the story has no version {base_version}")
    raise GenerationError(
        "version_conflict",
        f"version {latest} was saved after version {base_version}, the latest this rewrite knew of; "
        "nothing was rewritten",
    )


def _invalid(message: str) -> GenerationError:
    return GenerationError("invalid_request", message)


def _instructions(value: Any) -> str:
    limit = settings.STORY_MAX_REGENERATE_INSTRUCTIONS_CHARS
    if value is None:
        return ""  # absent or null: none, as every optional field takes null
    if not isinstance(value, str):
        raise _invalid("instructions must be a string")
    text = text_trimmed(value)  # counted as kept, as a title and a plot are
    if len(text) > limit:
        raise _invalid(f"instructions are longer than {limit} characters")
    problem = text_field_problem(text)  # as a plot's (stories.generation.requests)
    if problem is not None:
        # "contains ..." said of a plural field name.
        raise _invalid(f"instructions {problem.replace('contains', 'contain', 1)}")
    return text
