"""The writer's pages. Each view parses its input, calls selectors, and renders; no business rules here."""

from __future__ import annotations

from typing import Any

from asgiref.sync import async_to_sync
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import BadRequest
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from stories import selectors
from stories.errors import GenerationError
from stories.generation.events import events_fold
from stories.generation.regenerate import scene_regenerate_request_parse, scene_regenerate_run
from stories.models import ScreenplayVersion, Story
from stories.routing import GENERATE_WS_PATH
from stories.runs.follow import run_events
from stories.screenplay_compare import screenplay_compare

STORIES_PER_PAGE = 20
RUNS_PER_PAGE = 50
EXPORT_FORMATS = [("fountain", "Fountain"), ("fdx", "Final Draft"), ("pdf", "PDF"), ("json", "JSON")]
_MAX_VERSION_NUMBER = 1_000_000
GENERATION_MODES = [
    ("single", "One pass, scene by scene"),
    ("parallel", "Outline first, then every scene at once"),
]


@login_required
def story_list(request: HttpRequest) -> HttpResponse:
    search = request.GET.get("q", "")[: selectors.SEARCH_MAX_CHARS]
    stories = selectors.story_list_for_user(user=request.user, search=search)
    page = Paginator(stories, STORIES_PER_PAGE).get_page(request.GET.get("page"))
    return render(request, "stories/story_list.html", {"page": page, "search": search})


@login_required
def story_create(request: HttpRequest) -> HttpResponse:
    return render(request, "stories/story_create.html", {"generator": _generator_context(story=None)})


@login_required
def story_detail(request: HttpRequest, story_id: int) -> HttpResponse:
    story = selectors.story_get_for_user(user=request.user, story_id=story_id)
    versions = selectors.story_versions_list(story=story)
    context: dict[str, Any] = {
        "story": story,
        "versions": versions,
        "cast": selectors.story_cast_list(story=story),
        "generator": _generator_context(story=story),
        "writing_runs": selectors.story_runs_writing(story=story),
    }
    compare = _version_pair(request.GET.get("compare"))
    if compare is not None:
        context.update(_comparison(story=story, numbers=compare))
    else:
        context["version"] = _version_shown(story=story, versions=versions, raw=request.GET.get("version"))
    if context.get("version") is not None:
        context["exports"] = _export_links(story=story, version=context["version"])
    return render(request, "stories/story_detail.html", context)


@login_required
@require_POST
def scene_regenerate(request: HttpRequest, story_id: int, number: int, index: int) -> HttpResponse:
    """The story page's "Rewrite this scene" form: rewrite it, then show the new version (or why not)."""
    story = selectors.story_get_for_user(user=request.user, story_id=story_id)
    url = reverse("stories:story-detail", args=[story.pk])
    try:
        regenerate = scene_regenerate_request_parse(
            {
                "story_id": story.pk,
                "version": number,
                "index": index,
                "instructions": request.POST.get("instructions", ""),
            }
        )
    except GenerationError as error:
        messages.error(request, error.message)
        return redirect(f"{url}?version={number}")
    try:
        outcome = async_to_sync(events_fold)(
            run_events(scene_regenerate_run(request=regenerate, user=request.user))
        )
        saved = outcome.saved_event()
    except GenerationError as error:
        messages.error(request, f"The scene could not be rewritten: {error.message}")
        return redirect(f"{url}?version={number}")
    messages.success(request, f"Scene {index + 1} rewritten: this is version {saved['version']}.")
    return redirect(f"{url}?version={saved['version']}")


@login_required
def run_list(request: HttpRequest) -> HttpResponse:
    runs = selectors.run_list_for_user(user=request.user)
    page = Paginator(runs, RUNS_PER_PAGE).get_page(request.GET.get("page"))
    return render(request, "stories/run_list.html", {"page": page})


def _generator_context(*, story: Story | None) -> dict[str, Any]:
    """What the generation form needs: choices for the template and a config for generate.js."""
    defaults = selectors.generation_settings_get()
    cast = selectors.story_cast_list(story=story) if story is not None else []
    config = {
        "wsPath": GENERATE_WS_PATH,
        "personasUrl": reverse("personas:list"),
        "contextsUrl": reverse("personas:contexts"),
        "maxPersonas": settings.STORY_MAX_PERSONAS,
        "storyId": story.pk if story is not None else None,
        "initialPersonas": [
            {"name": member.persona.name, "display_name": member.persona.display_name} for member in cast
        ],
    }
    return {
        "config": config,
        "models": selectors.generation_model_choices(),
        "default_model": defaults.default_model,
        "lengths": selectors.generation_length_choices(),
        "default_max_tokens": defaults.default_max_tokens,
        "modes": GENERATION_MODES,
        "default_mode": settings.STORY_DEFAULT_MODE,
        "max_plot_chars": settings.STORY_MAX_PLOT_CHARS,
        "max_title_chars": settings.STORY_MAX_TITLE_CHARS,
        "plot": story.plot if story is not None else "",
        "title": story.title if story is not None else "",
    }


def _version_number(raw: str) -> int:
    raw = raw.strip()
    if not raw.isdecimal() or not 0 < int(raw) <= _MAX_VERSION_NUMBER:
        raise BadRequest(f"{raw[:20]!r} is not a version number.")
    return int(raw)


def _version_pair(raw: str | None) -> tuple[int, int] | None:
    if raw is None:
        return None
    parts = raw.split(",")
    if len(parts) != 2:
        raise BadRequest("compare takes two version numbers, like ?compare=1,2.")
    return _version_number(parts[0]), _version_number(parts[1])


def _version_shown(*, story: Story, versions: list[ScreenplayVersion], raw: str | None) -> Any:
    if raw is not None:
        return selectors.story_version_get(story=story, number=_version_number(raw))
    if not versions:
        return None
    return selectors.story_version_get(story=story, number=versions[0].number)


def _comparison(*, story: Story, numbers: tuple[int, int]) -> dict[str, Any]:
    left = selectors.story_version_get(story=story, number=numbers[0])
    right = selectors.story_version_get(story=story, number=numbers[1])
    rows = screenplay_compare(left=left.content, right=right.content)
    return {"compare_left": left, "compare_right": right, "comparison": rows}


def _export_links(*, story: Story, version: ScreenplayVersion) -> list[tuple[str, str]]:
    base = reverse("stories-api:version-export", args=[story.pk, version.number])
    return [(f"{base}?format={fmt}", label) for fmt, label in EXPORT_FORMATS]
