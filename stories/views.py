"""The writer's pages. Each view parses its input, calls selectors, and renders; no business rules here."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from typing import Any

from asgiref.sync import async_to_sync
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core import signing
from django.core.cache import cache
from django.core.exceptions import BadRequest
from django.core.paginator import Page
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST, require_safe

from personas.selectors import persona_list, persona_matches
from stories import selectors, services
from stories.errors import GenerationCancelled, GenerationError
from stories.exception_handlers import GENERATION_ERROR_STATUS
from stories.exports import ExportMeta
from stories.exports.downloads import export_build, screenplay_version_export_order
from stories.exports.fountain import fountain_from_screenplay
from stories.exports.screenplay import one_line
from stories.exports.views import download_response
from stories.forms import StoryDetailsForm
from stories.generation.events import events_fold
from stories.generation.regenerate import scene_regenerate_request_parse, scene_regenerate_run
from stories.imports import (
    IMPORT_EXTENSIONS,
    ScreenplayImportError,
    import_format_for,
    import_too_large,
    screenplay_import,
)
from stories.models import ScreenplayVersion, Story
from stories.routing import GENERATE_WS_PATH
from stories.runs.follow import run_events
from stories.screenplay_diff import screenplay_compare_read, screenplay_diff
from stories.screenplay_stats import screenplay_stats
from stories.serializers import FountainPreviewSerializer, VersionWriteSerializer
from stories.validation import VERSION_NUMBER_MAX, text_field_clean, text_visible, version_number_parse
from storyproject.bidi import bidi_isolated
from storyproject.conditional import not_modified
from storyproject.pagination import page_of, page_query
from storyproject.parsers import page_query_once
from storyproject.untrusted import UntrustedJSONError, json_loads_untrusted

STORIES_PER_PAGE = 20
RUNS_PER_PAGE = 50
# The story page's versions table: a story can hold thousands (3,000 took 4 s and 2.4 MB a page).
VERSIONS_PER_PAGE = 50
EXPORT_FORMATS = [("fountain", "Fountain"), ("fdx", "Final Draft"), ("pdf", "PDF"), ("json", "JSON")]
_SIGNED_OUT = "You are signed out: sign in again, then reload this page (your text is kept in this browser)."
# A page answers the methods it takes and refuses the others with a 405 and Allow (the site's page,
# storyproject.middleware.MethodNotAllowedPageMiddleware): DELETE /stories/1/ and PUT /stories/1/settings/
# answered 200 with the page, nothing deleted or renamed, and a client took the 200 for done.
require_GET_or_POST = require_http_methods(["GET", "HEAD", "POST"])

# What a save or preview answered 404 says: the story is gone (deleted in another tab), where the
# editor showed Django's words for it ("No Story matches the given query.").
_STORY_GONE = (
    "This story was deleted (in another tab, or by a script): nothing can be saved to it. Your text is "
    "still here: copy it, or paste it into Import a screenplay, on the stories page, to make a new story of it."
)
GENERATION_MODES = [
    ("single", "One pass, scene by scene"),
    ("parallel", "Outline first, then every scene at once"),
]


@login_required
@require_safe
def story_list(request: HttpRequest) -> HttpResponse:
    asked = (page_query_once(request, "q") or "").strip()
    search = asked[: selectors.SEARCH_MAX_CHARS]
    stories = selectors.story_list_for_user(user=request.user, search=search)
    page = page_of(request=request, items=stories, per_page=STORIES_PER_PAGE)
    # A longer search (from a link: the field takes no more) is cut, and the page says so.
    cut = selectors.SEARCH_MAX_CHARS if len(asked) > len(search) else None
    return render(request, "stories/story_list.html", {"page": page, "search": search, "search_cut": cut})


@login_required
@require_safe
def story_create(request: HttpRequest) -> HttpResponse:
    generator = _generator_context(story=None, user_id=int(request.user.pk or 0))
    return render(request, "stories/story_create.html", {"generator": generator})


@login_required
@require_safe
def story_detail(request: HttpRequest, story_id: int) -> HttpResponse:
    story = selectors.story_get_for_user(user=request.user, story_id=story_id)
    return _story_page(
        request,
        story=story,
        version=page_query_once(request, "version"),
        compare=page_query_once(request, "compare"),
    )


def _story_page(
    request: HttpRequest,
    *,
    story: Story,
    version: str | None,
    compare: str | None = None,
    rewrite_kept: dict[str, Any] | None = None,
    status: int = 200,
) -> HttpResponse:
    """The story page at ``version`` (or comparing two); ``rewrite_kept`` reopens a refused scene
    rewrite with the instructions the writer typed."""
    versions = page_of(
        request=request, items=selectors.story_versions_list(story=story), per_page=VERSIONS_PER_PAGE
    )
    context: dict[str, Any] = {
        "story": story,
        "versions": versions,
        "versions_pages": _pages_around(request, versions),
        "cast": selectors.story_cast_list(story=story),
        "generator": _generator_context(story=story, user_id=story.owner_id),
        "writing_runs": selectors.story_runs_writing(story=story),
        "rewrite_kept": rewrite_kept,
    }
    pair = _version_pair(compare)
    if pair is not None:
        context.update(_comparison(story=story, numbers=pair))
    else:
        context["version"] = _version_shown(story=story, raw=version)
    if context.get("version") is not None:
        context["exports"] = _export_links(story=story, version=context["version"])
        context["stats"] = screenplay_stats(context["version"].content)
    return render(request, "stories/story_detail.html", context, status=status)


@login_required
@require_POST
def scene_regenerate(request: HttpRequest, story_id: int, number: int, index: int) -> HttpResponse:
    """The story page's "Rewrite this scene" form: rewrite it, then show the new version (or why not)."""
    story = selectors.story_get_for_user(user=request.user, story_id=story_id)
    if not 0 < number <= VERSION_NUMBER_MAX:
        raise Http404
    # A version the story does not have is a 404 here, not a redirect to one (and a message shown on
    # whatever page comes next).
    selectors.story_version_get(story=story, number=number)
    instructions = request.POST.get("instructions", "")

    def refused(status: int) -> HttpResponse:
        # This version again, the scene's form open with the writer's instructions in it: a redirect
        # emptied the field, so instructions refused (or a rewrite that failed) had to be typed again.
        kept = {"index": index, "instructions": instructions}
        return _story_page(request, story=story, version=str(number), rewrite_kept=kept, status=status)

    try:
        regenerate = scene_regenerate_request_parse(
            {
                "story_id": story.pk,
                "version": number,
                "index": index,
                "instructions": instructions,
                "base_version": _form_number(request.POST.get("base_version")),
            }
        )
    except GenerationError as error:
        messages.error(request, error.message)
        return refused(GENERATION_ERROR_STATUS[error.code])
    try:
        outcome = async_to_sync(events_fold)(
            run_events(scene_regenerate_run(request=regenerate, user=request.user))
        )
        saved = outcome.saved_event()
    except GenerationError as error:
        messages.error(request, f"The scene could not be rewritten: {error.message}")
        return refused(GENERATION_ERROR_STATUS[error.code])
    except GenerationCancelled:
        # Cancelled from elsewhere (another tab's socket, the runs API) while this request waited.
        messages.info(request, "The rewrite was cancelled; nothing was saved.")
        return refused(409)
    messages.success(request, f"Scene {index + 1} rewritten: this is version {saved['version']}.")
    url = reverse("stories:story-detail", args=[story.pk])
    return redirect(f"{url}?version={saved['version']}")


def _form_number(value: str | None) -> int | str | None:
    """A form's whole number as an int (anything else as it came, for the parser to refuse)."""
    if not value:
        return None
    return int(value) if value.isascii() and value.isdigit() and len(value) <= 19 else value


@login_required
@require_safe
def run_list(request: HttpRequest) -> HttpResponse:
    runs = selectors.run_list_for_user(user=request.user)
    page = page_of(request=request, items=runs, per_page=RUNS_PER_PAGE)
    return render(request, "stories/run_list.html", {"page": page})


# A run's page shows this much of the model text it kept (a run may keep several calls' worth); the
# API's GET /api/runs/{id}/ has all of it.
RUN_TEXT_SHOWN_CHARS = 100_000


@login_required
@require_safe
def run_detail(request: HttpRequest, run_id: int) -> HttpResponse:
    """One run: how it ended and the model text it received (for a failed or cancelled run, all that
    is left of it once its events are gone)."""
    run = selectors.run_get_for_user(user=request.user, run_id=run_id)
    context = {
        "run": run,
        "text_shown": run.raw_text[:RUN_TEXT_SHOWN_CHARS],
        "text_chars": len(run.raw_text),
        "text_cut": len(run.raw_text) > RUN_TEXT_SHOWN_CHARS,
    }
    return render(request, "stories/run_detail.html", context)


def _generator_context(*, story: Story | None, user_id: int) -> dict[str, Any]:
    """What the generation form needs: choices for the template and a config for generate.js."""
    defaults = selectors.generation_settings_get()
    cast = selectors.story_cast_list(story=story) if story is not None else []
    config = {
        "wsPath": GENERATE_WS_PATH,
        "personasUrl": reverse("personas:list"),
        "contextsUrl": reverse("personas:contexts"),
        "maxPersonas": settings.STORY_MAX_PERSONAS,
        "storyId": story.pk if story is not None else None,
        # What the tab keeps of the form (text not sent, a request refused) is the writer's own: another
        # writer signing in in the same tab does not get it back.
        "userId": user_id,
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
        # A story saved before control characters were refused may hold them (an escape, a C1 control;
        # a title's line break): invisible in the field, they would make Regenerate refuse a plot the
        # writer cannot see what to remove from, so the form starts without them.
        "plot": text_field_clean(story.plot) if story is not None else "",
        # A title of marks only (U+200F ...), refused since, starts empty: the screenplay's own title.
        "title": title if story is not None and text_visible(title := one_line(story.title)) else "",
    }


def _version_number(raw: str) -> int:
    number = version_number_parse(raw)
    if number is None:
        raise BadRequest(f"{raw.strip()[:20]!r} is not a version number.")
    return number


def _version_pair(raw: str | None) -> tuple[int, int] | None:
    if raw is None:
        return None
    parts = raw.split(",")
    if len(parts) != 2:
        raise BadRequest("compare takes two version numbers, like ?compare=1,2.")
    return _version_number(parts[0]), _version_number(parts[1])


def _version_shown(*, story: Story, raw: str | None) -> Any:
    if raw is not None:
        return selectors.story_version_get(story=story, number=_version_number(raw))
    if not story.latest_version_number:
        return None
    return selectors.story_version_get(story=story, number=story.latest_version_number)


def _pages_around(request: HttpRequest, page: Page[Any]) -> dict[str, str]:
    """The links to the pages before and after ``page`` of a list, keeping the page's other parameters
    (the version shown, a comparison)."""
    links = {}
    for name, number in (("newer", page.number - 1), ("older", page.number + 1)):
        if 1 <= number <= page.paginator.num_pages:
            links[name] = f"?{page_query(request, number)}"
    return links


def _comparison(*, story: Story, numbers: tuple[int, int]) -> dict[str, Any]:
    left = selectors.story_version_get(story=story, number=numbers[0])
    right = selectors.story_version_get(story=story, number=numbers[1])
    rows = screenplay_compare_read(left=left.content, right=right.content)
    return {"compare_left": left, "compare_right": right, "comparison": rows}


def _export_links(*, story: Story, version: ScreenplayVersion) -> list[tuple[str, str]]:
    base = reverse("stories:version-export", args=[story.pk, version.number])
    return [(f"{base}?format={fmt}", label) for fmt, label in EXPORT_FORMATS]


@login_required
@require_safe
def version_export(request: HttpRequest, story_id: int, number: int) -> HttpResponseBase:
    """The story page's export links: the file (the API's export), or back to this version's page saying
    why not (its address, not this one, so that a reload or the page's own links do not ask again). The
    API's refusal (a PDF being built, too many built this hour) was only a failed download in the
    browser, its reason and when to come back unseen."""
    story = selectors.story_get_for_user(user=request.user, story_id=story_id)
    if not 0 < number <= VERSION_NUMBER_MAX:
        raise Http404
    labels = dict(EXPORT_FORMATS)
    fmt = page_query_once(request, "format") or ""
    if fmt not in labels:
        raise BadRequest(f"Choose an export format with ?format=, one of: {', '.join(labels)}.")
    order = screenplay_version_export_order(story=story, number=number, fmt=fmt)
    if unchanged := not_modified(request, etag=order.etag):
        return unchanged  # the browser's copy (If-None-Match) is this file: nothing read, nothing built
    try:
        exported = export_build(order)
    except GenerationError as error:
        messages.error(request, f"The {labels[fmt]} file could not be made: {error.message}")
        return redirect(f"{reverse('stories:story-detail', args=[story.pk])}?version={number}")
    return download_response(exported, etag=order.etag)


# --- The writer's own versions: edit, preview, restore, diff, import (issue 17) ------------------------


@login_required
@require_GET_or_POST
def story_edit(request: HttpRequest, story_id: int, number: int) -> HttpResponse:
    """The editor: version ``number`` as Fountain, a live preview, and a save through the API.

    Without JavaScript the form posts here: saved as the API saves it (an edit of this version, a
    newer one refused unless saved anyway), or the editor again with the writer's text and why not.
    """
    story = selectors.story_get_for_user(user=request.user, story_id=story_id)
    version = selectors.story_version_get(story=story, number=number)
    if request.method == "POST":
        return _story_edit_posted(request, story=story, version=version)
    fountain = fountain_from_screenplay(
        content=version.content, meta=ExportMeta(title=str(version.content.get("title") or story.title))
    )
    return _story_edit_page(request, story=story, version=version, fountain=fountain)


def _story_edit_posted(request: HttpRequest, *, story: Story, version: ScreenplayVersion) -> HttpResponse:
    posted = request.POST.get("fountain", "")
    save_anyway = request.POST.get("save_anyway") == "yes"
    fields = VersionWriteSerializer(
        data={"fountain": posted, "base_version": version.number, "save_anyway": save_anyway}
    )
    try:
        if not fields.is_valid():
            # The field's own words, as the script's save shows them ("fountain contains a NUL ...").
            raise GenerationError("invalid_request", next(iter(fields.errors.values()))[0])
        saved = services.screenplay_version_write_fountain(
            user_id=int(request.user.pk or 0),
            story=story,
            fountain=fields.validated_data["fountain"],
            base_version=version.number,
            save_anyway=save_anyway,
        )
    except GenerationError as error:
        return _story_edit_page(
            request,
            story=story,
            version=version,
            fountain=posted,
            error=error.message,
            conflict=error.code == "version_conflict",
            status=GENERATION_ERROR_STATUS[error.code],
        )
    messages.success(request, f"Saved: this is version {saved.number}.")
    return redirect(f"{reverse('stories:story-detail', args=[story.pk])}?version={saved.number}")


def _story_edit_page(
    request: HttpRequest,
    *,
    story: Story,
    version: ScreenplayVersion,
    fountain: str,
    error: str = "",
    conflict: bool = False,
    status: int = 200,
) -> HttpResponse:
    config = {
        "storyId": story.pk,
        "baseVersion": version.number,
        "latestVersion": story.latest_version_number,
        "previewUrl": reverse("stories:story-preview", args=[story.pk]),
        "saveUrl": reverse("stories-api:version-list", args=[story.pk]),
        "storyUrl": reverse("stories:story-detail", args=[story.pk]),
        "latestEditUrl": reverse("stories:story-edit-latest", args=[story.pk]),
        # Read at each request: a sign-in in another tab replaces the token the page was served with.
        "csrfCookie": settings.CSRF_COOKIE_NAME,
        # What a save answered 401 says: the API's own words are for scripts.
        "signedOut": _SIGNED_OUT,
        "storyGone": _STORY_GONE,
        # A text over it is refused on the page, in the server's words (stories.imports.import_too_large),
        # not sent: past the API's body limit the save said it in other words.
        "maxBytes": settings.STORY_IMPORT_MAX_BYTES,
    }
    context = {
        "story": story,
        "version": version,
        "fountain": fountain,
        "config": config,
        "error": error,
        "conflict": conflict,
    }
    return render(request, "stories/story_edit.html", context, status=status)


@login_required
@require_safe
def story_edit_latest(request: HttpRequest, story_id: int) -> HttpResponse:
    story = selectors.story_get_for_user(user=request.user, story_id=story_id)
    latest = selectors.story_version_latest(story=story)
    if latest is None:
        raise Http404("This story has no version to edit.")
    return redirect("stories:story-edit", story.pk, latest.number)


@require_POST
def story_preview(request: HttpRequest, story_id: int) -> HttpResponse:
    """The editor's preview: Fountain read exactly as a save reads it, rendered by the story page's template."""
    if not request.user.is_authenticated:
        # The editor's script reads JSON: a redirect to the login page would be read as a preview.
        return JsonResponse({"error": _SIGNED_OUT}, status=401)
    story = selectors.story_get_for_user(user=request.user, story_id=story_id)
    if request.content_type != "application/json":
        # A multipart body has been read as a form by then (the CSRF check reads request.POST), and its
        # raw bytes cannot be read again: that was a 500.
        return JsonResponse(
            {"error": "Send the preview as JSON (Content-Type: application/json)."}, status=415
        )
    try:
        body = json_loads_untrusted(request.body)
        # The save's own fields: a base_version the save refuses is refused here too.
        fields = FountainPreviewSerializer(data=body if isinstance(body, dict) else {})
        if not fields.is_valid():
            raise GenerationError("invalid_request", _serializer_error(fields.errors))
        content = selectors.screenplay_fountain_for_story(
            story=story,
            fountain=fields.validated_data["fountain"],
            base_version=fields.validated_data.get("base_version"),
        )
    except UntrustedJSONError as error:
        return JsonResponse({"error": str(error)}, status=400)
    except GenerationError as error:
        return JsonResponse({"error": error.message}, status=400)
    html = render_to_string("stories/_screenplay.html", {"content": content}, request=request)
    return JsonResponse({"html": html, "scenes": len(content["scenes"])})


def _serializer_error(errors: Any) -> str:
    """The first of a serializer's errors as one line: ``base_version: A valid integer is required.``"""
    field, messages_ = next(iter(errors.items()))
    return f"{field}: {messages_[0]}"


@login_required
@require_POST
def version_restore(request: HttpRequest, story_id: int, number: int) -> HttpResponse:
    """ "Make this the current version": a new version with this one's content."""
    story = selectors.story_get_for_user(user=request.user, story_id=story_id)
    selectors.story_version_get(story=story, number=number)
    version = services.screenplay_version_restore(
        user_id=int(request.user.pk or 0), story=story, number=number
    )
    messages.success(request, f"Version {number} restored: this is version {version.number}.")
    return redirect(f"{reverse('stories:story-detail', args=[story.pk])}?version={version.number}")


@login_required
@require_GET_or_POST
def story_settings(request: HttpRequest, story_id: int) -> HttpResponse:
    """Rename a story, change its plot (what Regenerate starts from), or delete it."""
    story = selectors.story_get_for_user(user=request.user, story_id=story_id)
    data = request.POST if request.method == "POST" else None  # an empty POST is a form, not a page view
    form = StoryDetailsForm(data, initial={"title": story.title, "plot": story.plot})
    if request.method == "POST":
        if not form.is_valid():
            # Refused, the page keeps the stamp it was sent with (the title and plot it started from),
            # when it is one the page sends: another is not echoed (StoryDetailsForm.details_stamp).
            stamp = None if "details_stamp" in form.errors else request.POST.get("details_stamp")
            return _story_settings_page(request, story=story, form=form, stamp=stamp, status=400)
        try:
            services.story_update(
                story=story,
                title=form.cleaned_data["title"],
                plot=form.cleaned_data["plot"],
                # Sent by the page since the check came (a form without it saves as before).
                expected=_details_as_read(form.cleaned_data["details_stamp"]),
            )
        except services.DetailsChanged as changed:
            # Changed meanwhile (another tab, a Regenerate): saved, the writer's text replaced theirs
            # without a word. Shown again with both, and the stamp of theirs, so Save replaces them.
            return _story_settings_page(request, story=story, form=form, changed=changed, status=409)
        messages.success(request, "The title and plot are saved.")
        return redirect("stories:story-detail", story.pk)
    return _story_settings_page(request, story=story, form=form)


@login_required
@require_POST
def story_delete(request: HttpRequest, story_id: int) -> HttpResponse:
    """Delete a story with its versions and cast, once the writer ticked that they mean it."""
    story = selectors.story_get_for_user(user=request.user, story_id=story_id)
    form = StoryDetailsForm(initial={"title": story.title, "plot": story.plot})
    if request.POST.get("confirm") != "yes":
        return _story_settings_page(
            request, story=story, form=form, delete_error="Tick the box to confirm the deletion.", status=400
        )
    # The page warns of the runs writing a version for the story as it loaded; one that started since
    # (a Regenerate in another tab) would be lost without a word. Asked again, now warned of it.
    seen = set(request.POST.get("writing_seen", "").split(","))
    started = [run_id for run_id in selectors.story_runs_writing(story=story) if str(run_id) not in seen]
    # Nor a version saved since (a Regenerate that ended meanwhile, an edit): the page said how many.
    if story.latest_version_number > _versions_seen(request.POST.get("versions_seen", "")):
        return _story_settings_page(
            request,
            story=story,
            form=form,
            delete_error=(
                f"Version {story.latest_version_number} was saved since this page opened: deleting the "
                "story now loses it too. Tick the box and delete again to delete it anyway."
            ),
            status=409,
        )
    if started:
        return _story_settings_page(
            request,
            story=story,
            form=form,
            delete_error=(
                "A new version started being written since this page opened (see above): deleting the "
                "story now loses it. Tick the box and delete again to delete it anyway."
            ),
            status=409,
        )
    title = story.title
    services.story_delete(story=story)
    messages.success(request, f"“{bidi_isolated(title)}” and its versions are deleted.")
    return redirect("stories:story-list")


def _versions_seen(posted: str) -> int | float:
    """The number of versions the settings page said the story had; a form without it (or with a value
    the page never sends) saw them all."""
    if posted.isascii() and posted.isdigit() and len(posted) <= 10:
        return int(posted)
    return math.inf


def _details_as_read(stamp: str | None) -> Callable[[Story], bool] | None:
    """Whether a story's title and plot are still those of ``stamp``, the settings page's hidden field
    (a version saved since is no conflict for them); no stamp, no check."""
    if not stamp:
        return None
    return lambda now: selectors.story_details_stamp(title=now.title, plot=now.plot) == stamp


def _story_settings_page(
    request: HttpRequest,
    *,
    story: Story,
    form: StoryDetailsForm,
    delete_error: str = "",
    stamp: str | None = None,
    changed: services.DetailsChanged | None = None,
    status: int = 200,
) -> HttpResponse:
    if changed is not None:
        stamp = selectors.story_details_stamp(title=changed.title, plot=changed.plot)
    context = {
        "story": story,
        "form": form,
        "delete_error": delete_error,
        "details_stamp": stamp or selectors.story_details_stamp(title=story.title, plot=story.plot),
        "changed": changed,
        "writing_runs": selectors.story_runs_writing(story=story),
    }
    return render(request, "stories/story_settings.html", context, status=status)


@login_required
@require_safe
def story_diff(request: HttpRequest, story_id: int) -> HttpResponse:
    story = selectors.story_get_for_user(user=request.user, story_id=story_id)
    old = selectors.story_version_get(
        story=story, number=_version_number(page_query_once(request, "from") or "")
    )
    new = selectors.story_version_get(
        story=story, number=_version_number(page_query_once(request, "to") or "")
    )
    scenes = screenplay_diff(old=old.content, new=new.content, unchanged_lines=True, names_isolated=True)
    context = {"story": story, "old": old, "new": new, "scenes": scenes}
    return render(request, "stories/story_diff.html", context)


@login_required
@require_GET_or_POST
def story_import(request: HttpRequest) -> HttpResponse:
    """Upload or paste a screenplay; a readable one goes on to the cast confirmation."""
    if request.method != "POST":
        return render(request, "stories/story_import.html", _import_limits())
    try:
        content = _import_posted(request)
    except GenerationError as error:
        context = {
            **_import_limits(),
            "error": error.message,
            "pasted": request.POST.get("fountain", ""),
            # The field the error is about, for the page to mark and focus: the file when one was sent.
            "error_field": "file" if "file" in request.FILES else "fountain",
        }
        return render(request, "stories/story_import.html", context, status=400)
    return _import_confirmation(request, content=content)


# The confirmation page carries the screenplay the import made to the confirming POST signed (for this
# writer: what is saved is what was read, parsed and checked once, within STORY_IMPORT_MAX_BYTES) and
# compressed (its JSON, with keys and quotes, was larger than the file it came from: a file of many
# short lines near the import limit came back past DJANGO_DATA_UPLOAD_MAX_BYTES, a 413). A confirmation
# older than this is refused; the file is imported again.
IMPORT_CONFIRMATION_MAX_AGE = 3600
_IMPORT_SALT = "stories.import-confirmation"


def _import_salt(request: HttpRequest) -> str:
    """The confirmation payload's signing salt: this writer's, so another's payload does not verify."""
    return f"{_IMPORT_SALT}:{request.user.pk}"


def _import_payload(request: HttpRequest, content: Any) -> str:
    return signing.dumps(content, salt=_import_salt(request), compress=True)


@login_required
@require_POST
def story_import_confirm(request: HttpRequest) -> HttpResponse:
    """Save the imported screenplay as a new story, cast as the writer chose on the confirmation step."""
    try:
        content: Any = signing.loads(
            request.POST.get("payload", ""),
            salt=_import_salt(request),
            max_age=IMPORT_CONFIRMATION_MAX_AGE,
        )
    except signing.SignatureExpired:
        context = {
            **_import_limits(),
            "error": "The confirmation is more than an hour old: import the file again.",
        }
        return render(request, "stories/story_import.html", context, status=400)
    except signing.BadSignature:
        # Changed on the way, cut short, or another writer's: the confirmation cannot be shown again for it.
        raise BadRequest("The imported screenplay was not sent back intact; import the file again.") from None
    names = [character["name"] for character in content.get("characters", [])]
    cast = {name: request.POST.get(f"persona-{i}") or None for i, name in enumerate(names)}
    key = _import_confirmed_key(request)
    if not cache.add(key, 0, IMPORT_CONFIRMATION_MAX_AGE):
        saved = cache.get(key)
        if saved is not None:  # None: the cache is down (or it just expired): single use is not held then
            return _import_confirmed_again(request, story_id=saved)
    try:
        version = services.story_import(user_id=int(request.user.pk or 0), content=content, cast=cast)
    except GenerationError as error:
        cache.delete(key)  # nothing was saved: the writer may confirm again with another cast
        messages.error(request, f"The screenplay could not be saved: {error.message}")
        return _import_confirmation(request, content=content, cast=cast, status=400)
    except BaseException:
        cache.delete(key)
        raise
    cache.set(key, version.story_id, IMPORT_CONFIRMATION_MAX_AGE)
    messages.success(
        request, "Imported: this is version 1. Every tool works on it, from rewriting a scene on."
    )
    if services.imported_plot(content=content).cut:
        messages.info(request, _plot_cut_note())
    return redirect("stories:story-detail", version.story_id)


def _import_confirmed_key(request: HttpRequest) -> str:
    """The cache key that makes a confirmation single-use: a double click on "Create the story", or Back
    and the button again, saved the screenplay as a second story. Importing the file again makes a new
    confirmation (a new timestamp, so a new key), which may make a second story on purpose."""
    digest = hashlib.sha256(request.POST.get("payload", "").encode("utf-8", "surrogatepass")).hexdigest()
    return f"import-confirmed:{request.user.pk}:{digest[:40]}"


def _import_confirmed_again(request: HttpRequest, *, story_id: int) -> HttpResponse:
    """A confirmation already used: to the story it made, or, while the first press is still being
    saved (0) or the story has since been deleted, to the list of stories."""
    if story_id and Story.objects.filter(pk=story_id, owner_id=request.user.pk).exists():
        messages.info(request, "This import was already saved as this story.")
        return redirect("stories:story-detail", story_id)
    messages.info(
        request,
        "This import is being saved or was saved already (and deleted since): import the file again "
        "for another story.",
    )
    return redirect("stories:story-list")


def _plot_cut_note() -> str:
    limit = settings.STORY_MAX_PLOT_CHARS
    return (
        f"The story's plot is the logline cut to {limit} characters, the most a plot may have (Regenerate "
        "sends it); the screenplay keeps the whole logline."
    )


def _import_posted(request: HttpRequest) -> dict[str, Any]:
    upload = request.FILES.get("file")
    if upload is not None and request.POST.get("fountain", "").strip():
        # Both: the pasted text was dropped without a word, the file imported in its place.
        raise ScreenplayImportError("choose a file or paste Fountain text, not both")
    if upload is not None:
        if (upload.size or 0) > settings.STORY_IMPORT_MAX_BYTES:
            raise import_too_large(upload.size or 0)
        return screenplay_import(data=upload.read(), fmt=import_format_for(upload.name or ""))
    pasted = request.POST.get("fountain", "")
    if not pasted.strip():
        raise ScreenplayImportError("choose a .fountain or .fdx file, or paste Fountain text")
    return screenplay_import(data=pasted, fmt="fountain")


def _import_confirmation(
    request: HttpRequest, *, content: Any, cast: dict[str, str | None] | None = None, status: int = 200
) -> HttpResponse:
    """The cast confirmation: each character's persona as the writer chose it (``cast``, when the page
    comes back refused), else as the screenplay names it or as one matches its name."""
    characters = content.get("characters", []) if isinstance(content, dict) else []
    names = [str(c.get("name", "")) for c in characters if isinstance(c, dict)]
    matches = persona_matches(names=names)
    rows = [
        {
            "index": i,
            "name": name,
            "chosen": (
                cast.get(name) or ""
                if cast is not None
                else c.get("persona") or (m.name if (m := matches.get(name)) else "")
            ),
        }
        for i, (name, c) in enumerate(zip(names, characters, strict=True))
    ]
    plot = services.imported_plot(content=content)
    context = {
        "content": content,
        "payload": _import_payload(request, content),
        "rows": rows,
        "personas": persona_list(),
        "stats": screenplay_stats(content),
        "plot_cut": plot.cut,
        "logline_chars": plot.logline_chars,
        "max_plot_chars": settings.STORY_MAX_PLOT_CHARS,
    }
    return render(request, "stories/story_import_confirm.html", context, status=status)


def _import_limits() -> dict[str, Any]:
    return {
        "max_bytes": settings.STORY_IMPORT_MAX_BYTES,
        "max_scenes": settings.STORY_IMPORT_MAX_SCENES,
        "max_characters": settings.STORY_IMPORT_MAX_CHARACTERS,
        "accept": ",".join(IMPORT_EXTENSIONS),
    }
