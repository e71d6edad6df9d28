from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import ProtectedError, Q, QuerySet
from django.db.models.functions import Collate
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseNotAllowed,
    HttpResponseRedirect,
    JsonResponse,
)
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html, format_html_join, linebreaks
from django.utils.http import content_disposition_header
from django.utils.safestring import mark_safe
from django.utils.text import capfirst
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect
from reversion.admin import VersionAdmin
from reversion.models import Version

from personas import selectors, services
from personas.cards import persona_file, persona_files_zip
from personas.context import SHORTENED_MARKER
from personas.forms import (
    PARTS,
    PersonaConfigForm,
    PersonaImportConfirmForm,
    PersonaImportForm,
    import_payload,
    part_text,
)
from personas.history import state_changes
from personas.models import PERSONA_ORDER, PersonaConfig
from personas.schema import persona_config_unused_keys
from storyproject.bidi import bidi_isolated
from storyproject.collation import USER_ORDER
from storyproject.search import CaseFoldedAdminSearch


class UsageFilter(admin.SimpleListFilter):
    title = "usage"
    parameter_name = "usage"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("unused", "Cast in no story"), ("used", "Cast in a story")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[PersonaConfig]) -> QuerySet[PersonaConfig]:
        # The admin's queryset carries the story_count annotation (PersonaConfigAdmin.get_queryset).
        if self.value() == "unused":
            return queryset.filter(Q(story_count=0))
        if self.value() == "used":
            return queryset.filter(Q(story_count__gt=0))
        return queryset


def _in_use(persona: PersonaConfig) -> str:
    """What an editor is told about a persona that stories cast: how many, never which."""
    count = persona.story_count  # type: ignore[attr-defined]
    if not count:
        return ""
    stories = "story casts" if count == 1 else "stories cast"
    return f"{persona}: {count} {stories} it; generating them fails while it is inactive or missing."


# What the live preview's script shows when the editor's session has ended (signed out in another tab,
# expired): admin_view's redirect to the login page gave the script HTML where it reads JSON.
PREVIEW_SIGNED_OUT = (
    "You are signed out: sign in again in another tab (your edits on this page are kept until you leave "
    "it), then type on to see the preview."
)
PREVIEW_NOT_STAFF = (
    "This account may not use the admin now: sign in again as an editor in another tab (your edits on "
    "this page are kept until you leave it), then type on to see the preview."
)


def _preview(config: object) -> dict[str, Any]:
    full = selectors.persona_context_build(persona=PersonaConfig(config_data=config), budget=10**9)
    sent = selectors.persona_context_build(persona=PersonaConfig(config_data=config))
    # Where it is shortened: the model gets the text up to the cut (then "[shortened]"); "cut" is the rest.
    kept = sent.context.removesuffix(SHORTENED_MARKER).rstrip() if sent.shortened else sent.context
    return {
        "context": sent.context,
        "cut": full.context[len(kept) :] if sent.shortened else "",
        "tokens": sent.tokens,
        "full_tokens": full.tokens,  # before shortening: how far over the budget the editor is
        "budget": settings.PERSONA_CONTEXT_TOKEN_BUDGET,
        "shortened": sent.shortened,
    }


@admin.register(PersonaConfig)
class PersonaConfigAdmin(CaseFoldedAdminSearch, VersionAdmin):
    """The persona editor. django-reversion's ``VersionAdmin`` wraps the add, change and list views
    (actions included) in a revision with the editor's name; history, revert and recover are our own
    views on its revisions (see docs/personas.md, "History and revert")."""

    form = PersonaConfigForm
    list_display = ["shown_name", "name", "is_active", "story_count", "last_used", "version", "updated_at"]
    list_filter = ["is_active", "updated_at", UsageFilter]
    search_fields = ["name", "display_name"]
    readonly_fields = ["live_preview", "context_preview", "version", "created_at", "updated_at"]
    fieldsets = [
        (None, {"fields": ["name", "display_name", "is_active", "deactivate_anyway", "loaded_version"]}),
        (
            "What the model gets (in this order)",
            {
                "fields": [
                    "system_prompt",
                    "description",
                    "personality",
                    "voice",
                    "example_lines",
                    "scenario",
                    "backstory",
                ]
            },
        ),
        ("Live preview of the context (not saved)", {"fields": ["live_preview"]}),
        ("For editors only", {"fields": ["summary", "tags"]}),
        ("Advanced", {"classes": ["collapse"], "fields": ["private", "extensions", "config_data"]}),
        ("Context preview", {"fields": ["context_preview", "version", "created_at", "updated_at"]}),
    ]
    # Each action names the permission it needs; Django offers (and runs) only the permitted ones.
    # Activating changes rows, so it needs "change"; an export shows no more than the read-only change
    # page shows anyone with "view" (the whole config, private part included), so "view" is enough.
    # Duplicating adds personas, so it needs "add".
    actions = ["activate", "deactivate", "duplicate", "export_ours", "export_card_json", "export_card_png"]
    change_list_template = "admin/personas/personaconfig/change_list.html"

    def get_fieldsets(self, request: HttpRequest, obj: PersonaConfig | None = None) -> Any:
        # Without the change permission the page is read-only: the parts are shown from the stored config
        # (the form's fields showed "None" for each), without the fields and preview that only editing uses.
        if obj is None or self.has_change_permission(request, obj):
            return self.fieldsets
        return _view_only(self.fieldsets)

    def get_queryset(self, request: HttpRequest) -> QuerySet[PersonaConfig]:
        # Every admin read of personas (the list, its actions, the delete pages) carries the usage counts.
        # A GROUP BY query drops Meta.ordering, so the order is given again (the autocomplete pages it).
        queryset = selectors.personas_with_usage(queryset=super().get_queryset(request))
        return queryset.order_by(*PERSONA_ORDER)

    # The display name's column sorts as the list does (case and accents aside: storyproject.collation),
    # not by the field's code points.
    @admin.display(description="Display name", ordering=Collate("display_name", USER_ORDER))
    def shown_name(self, persona: PersonaConfig) -> str:
        return persona.display_name

    @admin.display(description="Stories", ordering="story_count")
    def story_count(self, persona: PersonaConfig) -> int:
        # A count only: the stories belong to their writers, whom editors do not see.
        return persona.story_count  # type: ignore[attr-defined]

    @admin.display(description="Last used", ordering="last_used", empty_value="never")
    def last_used(self, persona: PersonaConfig) -> Any:
        return persona.last_used  # type: ignore[attr-defined]

    def save_model(self, request: HttpRequest, obj: PersonaConfig, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        # Saved as the editor wrote it (the schema is open), but a key the model never gets is said.
        for sentence in persona_config_unused_keys(obj.config_data):
            self.message_user(request, sentence, messages.WARNING)

    def get_deleted_objects(self, objs: Any, request: HttpRequest) -> tuple[Any, Any, Any, list[str]]:
        # Cast personas are protected (StoryCast.persona is PROTECT). Django would list the cast rows,
        # which name writers' characters; editors see a count and what to do instead.
        deleted, counts, perms_needed, protected = super().get_deleted_objects(objs, request)
        if protected:
            protected = [_in_use(persona) for persona in objs]
        return deleted, counts, perms_needed, [line for line in protected if line]

    @admin.display(description="As you type")
    def live_preview(self, persona: PersonaConfig) -> str:
        """Where static/js/persona-preview.js shows the context of the form's current values."""
        return format_html(
            '<div class="persona-live-preview" data-url="{}" data-persona-id="{}" data-csrf-cookie="{}">'
            '<p class="persona-live-status">Change a field above: the context it would give appears here '
            "before you save.</p>"
            '<meter class="persona-live-meter" min="0" max="{}" value="0" aria-label="Tokens of the budget">'
            "</meter>"
            '<p class="persona-live-announcer" role="status"></p>'
            '<div class="persona-context persona-live-context"></div></div>',
            reverse("admin:personas_personaconfig_preview"),
            persona.pk or "",
            settings.CSRF_COOKIE_NAME,
            settings.PERSONA_CONTEXT_TOKEN_BUDGET,
        )

    @admin.display(description="Context preview")
    def context_preview(self, persona: PersonaConfig) -> str:
        """The saved config's prompt context as generation will use it, with its token estimate."""
        if persona.pk is None:
            return "Save the persona to see the context that goes into prompts."
        context = selectors.persona_context_build(persona=persona)
        note = " It was shortened to fit the budget." if context.shortened else ""
        # Editors' text is untrusted: linebreaks(autoescape=True) escapes it before adding <p> and <br>,
        # so its result (a plain str) is safe to mark as such.
        return format_html(
            '<p><strong>About {} tokens</strong> (estimate; budget {}).{}</p><div class="persona-context">{}</div>',
            context.tokens,
            settings.PERSONA_CONTEXT_TOKEN_BUDGET,
            note,
            mark_safe(linebreaks(context.context, autoescape=True)) if context.context else "(empty)",  # noqa: S308
        )

    @admin.action(permissions=["change"], description="Activate selected personas")
    def activate(self, request: HttpRequest, queryset: QuerySet[PersonaConfig]) -> None:
        count = services.personas_set_active(queryset=queryset, active=True, user=request.user)
        self.message_user(request, f"{count} persona(s) activated.", messages.SUCCESS)

    @admin.action(permissions=["change"], description="Deactivate selected personas")
    def deactivate(self, request: HttpRequest, queryset: QuerySet[PersonaConfig]) -> HttpResponse | None:
        # Personas that stories cast need a second, informed click: generating those stories fails.
        used = [persona for persona in queryset if persona.story_count]  # type: ignore[attr-defined]
        if used and request.POST.get("confirm_deactivate") != "yes":
            return self._deactivate_confirm(request, queryset, used)
        count = services.personas_set_active(queryset=queryset, active=False, user=request.user)
        self.message_user(request, f"{count} persona(s) deactivated.", messages.SUCCESS)
        return None

    def _deactivate_confirm(
        self, request: HttpRequest, queryset: QuerySet[PersonaConfig], used: list[PersonaConfig]
    ) -> HttpResponse:
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Deactivate personas that stories use?",
            "used": [_in_use(persona) for persona in used],
            "selected": [persona.pk for persona in queryset],
        }
        return TemplateResponse(request, "admin/personas/personaconfig/deactivate_confirm.html", context)

    @admin.action(permissions=["add"], description="Duplicate selected personas (as inactive copies)")
    def duplicate(self, request: HttpRequest, queryset: QuerySet[PersonaConfig]) -> None:
        copies = services.personas_duplicate(personas=queryset, user=request.user)
        links = format_html_join(
            ", ",
            '<a href="{}">{}</a>',
            ((reverse("admin:personas_personaconfig_change", args=[c.pk]), c.name) for c in copies),
        )
        self.message_user(
            request, format_html("{} inactive cop(ies) made: {}.", len(copies), links), messages.SUCCESS
        )

    def delete_view(self, request: HttpRequest, object_id: str, extra_context: Any = None) -> HttpResponse:
        try:
            return super().delete_view(request, object_id, extra_context)
        except ProtectedError:
            # Cast in a story between the confirmation's check and the delete (personas_delete waits for
            # such a save): nothing was deleted, and the admin's transaction rolled its log entry back.
            self._cast_meanwhile(request)
            return HttpResponseRedirect(reverse("admin:personas_personaconfig_change", args=[object_id]))

    def _cast_meanwhile(self, request: HttpRequest) -> None:
        self.message_user(
            request,
            "Nothing was deleted: a story cast the persona while it was being deleted. "
            "Deactivate it instead.",
            messages.ERROR,
        )

    def delete_model(self, request: HttpRequest, obj: PersonaConfig) -> None:
        services.personas_delete(personas=[obj], user=request.user)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[PersonaConfig]) -> None:
        services.personas_delete(personas=queryset, user=request.user)

    @admin.action(permissions=["view"], description="Export selected personas (our JSON)")
    def export_ours(self, request: HttpRequest, queryset: QuerySet[PersonaConfig]) -> HttpResponse:
        return _download(queryset, kind="ours")

    @admin.action(permissions=["view"], description="Export selected personas (Character Card V2 JSON)")
    def export_card_json(self, request: HttpRequest, queryset: QuerySet[PersonaConfig]) -> HttpResponse:
        return _download(queryset, kind="card-v2")

    @admin.action(permissions=["view"], description="Export selected personas (Character Card V2 PNG)")
    def export_card_png(self, request: HttpRequest, queryset: QuerySet[PersonaConfig]) -> HttpResponse:
        return _download(queryset, kind="card-v2-png")

    def get_urls(self) -> list[URLPattern]:
        # VersionAdmin's own URLs (recover/, recover/<id>/, <pk>/history/<id>/) are given here as paths
        # to the views below, before the admin's "<pk>/" patterns would take them.
        def view(method: Any) -> Any:
            return self.admin_site.admin_view(method)

        return [
            path("import/", view(self.import_view), name="personas_personaconfig_import"),
            path("preview/", self._script_view(self.preview_view), name="personas_personaconfig_preview"),
            path("recover/", view(self.recoverlist_view), name="personas_personaconfig_recoverlist"),
            path("recover/<int:version_id>/", view(self.recover_view), name="personas_personaconfig_recover"),
            path(
                "<path:object_id>/history/<int:version_id>/",
                view(self.revision_view),
                name="personas_personaconfig_revision",
            ),
            *admin.ModelAdmin.get_urls(self),
        ]

    def _script_view(self, method: Any) -> Any:
        """``admin_site.admin_view`` for a view that a page's script calls: one who may not use the
        admin (signed out, session expired) gets a JSON 401 the script can show, where admin_view
        redirects to the login page. Otherwise the same wrapping: never cached, CSRF checked."""

        def signed_in(request: HttpRequest) -> HttpResponse:
            if not request.user.is_authenticated:
                return JsonResponse({"errors": [PREVIEW_SIGNED_OUT]}, status=401)
            if not self.admin_site.has_permission(request):  # signed in, but no (more) staff
                return JsonResponse({"errors": [PREVIEW_NOT_STAFF]}, status=403)
            return method(request)

        return csrf_protect(never_cache(signed_in))

    def preview_view(self, request: HttpRequest) -> HttpResponse:
        """The context the form's current values would give, as JSON, for the editor's live preview.

        POST (the form's own fields, CSRF token included), so long texts fit and nothing is cached.
        Anyone who may view personas may preview; nothing is saved.
        """
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        persona = self.get_object(request, request.POST.get("persona_id", "")) or PersonaConfig()
        config, problems = PersonaConfigForm(request.POST, instance=persona).config_preview()
        if problems:
            return JsonResponse({"errors": problems}, status=400)
        return JsonResponse(_preview(config))

    def has_import_permission(self, request: HttpRequest) -> bool:
        # An import creates new personas and overwrites those with the same name.
        return self.has_add_permission(request) and self.has_change_permission(request)

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        extra_context = {
            **(extra_context or {}),
            "has_import_permission": self.has_import_permission(request),
            "has_change_permission": self.has_change_permission(request),  # reversion's "Recover" link
        }
        # Not VersionAdmin's, which runs the actions inside one revision block: each action's service
        # makes its own revisions, and a deletion's must be saved before the rows go (services).
        if request.method != "POST":
            return admin.ModelAdmin.changelist_view(self, request, extra_context)
        try:
            # One transaction, as the delete page's: a refused bulk delete takes its log entries with it.
            with transaction.atomic():
                return admin.ModelAdmin.changelist_view(self, request, extra_context)
        except ProtectedError:
            self._cast_meanwhile(request)
            return HttpResponseRedirect(request.get_full_path())

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        if request.method == "POST" and self.has_change_permission(request):
            # A persona saved so far outside any revision gets its current state recorded first, in a
            # revision of its own, so that the edit about to be saved can be reverted. Looked up as the
            # admin does: an id that is no persona's (or past the database's integers) is left to it.
            persona = self.get_object(request, unquote(object_id))
            if persona is not None:
                services.persona_history_start(persona_pks=[persona.pk])
        return super().change_view(request, object_id, form_url, extra_context)

    def import_view(self, request: HttpRequest) -> HttpResponse:
        """Upload a persona file or card, see what it would create or change, then confirm: a bad
        file is reported and changes nothing; the confirmed import is one transaction and one revision."""
        if not self.has_import_permission(request):
            raise PermissionDenied
        if request.method == "POST" and "payload" in request.POST:
            return self._import_confirm(request)
        form = PersonaImportForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            return self._import_preview(request, form)
        return self._page(request, "import.html", "Import personas", form=form)

    def _import_preview(self, request: HttpRequest, form: PersonaImportForm) -> HttpResponse:
        imported = form.cleaned_data["personas"]
        plans = selectors.persona_import_plan(personas=imported)
        source = form.cleaned_data["file"].name
        payload = import_payload(personas=imported, plans=plans, source=source)
        writes = [plan for plan in plans if plan.status != "unchanged"]
        # The file's name is the uploader's: isolated, as a display name is (storyproject.bidi).
        title = f"Import {bidi_isolated(source)}: what it would change"
        return self._page(request, "import_preview.html", title, plans=plans, writes=writes, payload=payload)

    def _import_confirm(self, request: HttpRequest) -> HttpResponse:
        form = PersonaImportConfirmForm(request.POST)
        try:
            if not form.is_valid():
                raise ValidationError(list(form.errors["payload"]))
            results = services.persona_import(
                personas=form.cleaned_data["personas"],
                user=request.user,
                sources=[form.cleaned_data["source"]],
                expected_versions=form.cleaned_data["versions"],
            )
        except ValidationError as error:
            self.message_user(request, " ".join(error.messages), messages.ERROR)
            return HttpResponseRedirect(reverse("admin:personas_personaconfig_import"))
        names = ", ".join(f"{persona.name} ({status})" for persona, status in results)
        self.message_user(request, f"Imported {len(results)} persona(s): {names}.", messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:personas_personaconfig_changelist"))

    def _page(self, request: HttpRequest, template: str, title: str, **context: Any) -> TemplateResponse:
        """One of this admin's own pages, in the admin's frame (templates/admin/personas/personaconfig/)."""
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": title,
            "module_name": str(capfirst(self.model._meta.verbose_name_plural)),
            "limit": settings.DATA_UPLOAD_MAX_MEMORY_SIZE,
            **context,
        }
        return TemplateResponse(request, f"admin/personas/personaconfig/{template}", context)

    # --- History, revert and recover (django-reversion's revisions) ----------------------------------

    def _persona_viewable(self, request: HttpRequest, object_id: str) -> PersonaConfig:
        persona = self.get_object(request, unquote(object_id))
        if persona is None:
            raise Http404("No persona with that id.")
        if not self.has_view_or_change_permission(request, persona):
            raise PermissionDenied
        return persona

    def history_view(
        self, request: HttpRequest, object_id: str, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        """Every revision, newest first: who, when, the comment, and its changes part by part.
        Anyone who may view the persona may see its history (it shows nothing the read-only page hides
        but the editors' names); reverting needs the change permission."""
        persona = self._persona_viewable(request, object_id)
        revisions, more = selectors.persona_history(persona_pk=persona.pk)
        return self._page(
            request,
            "object_history.html",
            f"History of {persona}",
            object=persona,
            revisions=revisions,
            more=more,
            shown=selectors.HISTORY_MAX_REVISIONS,
            has_change_permission=self.has_change_permission(request, persona),
        )

    def revision_view(
        self,
        request: HttpRequest,
        object_id: str,
        version_id: str,
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        """One revision, what reverting to it would change; POST reverts (change permission)."""
        persona = self._persona_viewable(request, object_id)
        version = selectors.persona_version_get(persona_pk=persona.pk, version_id=version_id)
        if version is None:
            raise Http404("No such revision of this persona.")
        if request.method == "POST":
            return self._revert(request, persona, version)
        # is_active is not reverted (see services.persona_revert), so it is left out of what changes.
        current = selectors.persona_current_state(persona=persona)
        target = selectors.version_state(version=version)
        changes = state_changes(before=current, after={**target, "Active": current["Active"]})
        return self._page(
            request,
            "revision.html",
            f"Revision of {persona}",
            object=persona,
            version=version,
            changes=changes,
            can_revert=self.has_change_permission(request, persona),
        )

    def _revert(self, request: HttpRequest, persona: PersonaConfig, version: Version) -> HttpResponse:
        if not self.has_change_permission(request, persona):
            raise PermissionDenied
        try:
            # Read as the change form reads it: str.isdigit() let "²" and 5,000 digits through to int(),
            # a ValueError and a 500.
            loaded = _LOADED_VERSION.clean(request.POST.get("loaded_version"))
        except ValidationError:
            loaded = None
        try:
            if loaded is None:
                raise ValidationError("The form is incomplete; open the revision again.")
            persona = services.persona_revert(
                persona_pk=persona.pk, version=version, loaded_version=loaded, user=request.user
            )
        except ValidationError as error:
            self.message_user(request, " ".join(error.messages), messages.ERROR)
            return HttpResponseRedirect(request.path)
        self.message_user(request, f"{persona} was reverted to the chosen revision.", messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:personas_personaconfig_change", args=[persona.pk]))

    def recoverlist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        """Deleted personas that can be brought back: recovering adds a persona, so "add" is needed."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        deleted = selectors.personas_deleted()
        return self._page(request, "recover_list.html", "Recover deleted personas", deleted=deleted)

    def recover_view(
        self, request: HttpRequest, version_id: str, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        if not self.has_add_permission(request):
            raise PermissionDenied
        version = selectors.persona_deleted_version_get(version_id=version_id)
        if version is None:
            raise Http404("No deleted persona with that revision.")
        if request.method != "POST":
            changes = state_changes(before=None, after=selectors.version_state(version=version))
            return self._page(
                request,
                "recover.html",
                f"Recover {_deleted_label(version)}",
                version=version,
                changes=changes,
            )
        try:
            persona = services.persona_recover(version=version, user=request.user)
        except ValidationError as error:
            self.message_user(request, " ".join(error.messages), messages.ERROR)
            return HttpResponseRedirect(reverse("admin:personas_personaconfig_recoverlist"))
        self.message_user(request, f"{persona} was recovered.", messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:personas_personaconfig_change", args=[persona.pk]))


_LOADED_VERSION = forms.IntegerField(min_value=1)
_EDITING_ONLY = {"deactivate_anyway", "loaded_version", "live_preview"}


def _view_only(fieldsets: Any) -> list[tuple[Any, dict[str, Any]]]:
    """The change page's fieldsets for one who may only view: each part as its read-only text."""
    shown = []
    for name, options in fieldsets:
        fields = [f"shown_{f}" if f in PARTS else f for f in options["fields"] if f not in _EDITING_ONLY]
        if fields:
            shown.append((name, {**options, "fields": fields}))
    return shown


def _part_shown(key: str) -> Any:
    @admin.display(description=PersonaConfigForm.base_fields[key].label or capfirst(key.replace("_", " ")))
    def shown(model_admin: PersonaConfigAdmin, persona: PersonaConfig) -> str:
        return part_text(persona.config_data, key)

    return shown


for _key in PARTS:
    setattr(PersonaConfigAdmin, f"shown_{_key}", _part_shown(_key))


def _deleted_label(version: Version) -> str:
    # As PersonaConfig.__str__ says it (its right-to-left text isolated), from the revision's fields:
    # the object_repr stored before that isolation was added draws the page's title backwards.
    fields = version.field_dict
    return str(PersonaConfig(name=fields["name"], display_name=fields["display_name"]))


def _download(queryset: QuerySet[PersonaConfig], *, kind: str) -> HttpResponse:
    """One persona as its file, several as a zip of files."""
    personas = list(queryset.order_by("name"))
    if len(personas) == 1:
        exported = persona_file(personas[0], kind=kind)
        response = HttpResponse(exported.data, content_type=exported.content_type)
        filename = exported.filename
    else:
        response = HttpResponse(persona_files_zip(personas, kind=kind), content_type="application/zip")
        filename = f"personas-{kind}.zip"
    response["Content-Disposition"] = content_disposition_header(True, filename)
    return response
