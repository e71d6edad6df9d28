from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect, JsonResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html, linebreaks
from django.utils.http import content_disposition_header
from django.utils.safestring import mark_safe

from personas import selectors, services
from personas.cards import CardError, persona_file, persona_file_read, persona_files_zip
from personas.forms import PersonaConfigForm
from personas.models import PersonaConfig


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


def _preview(config: object) -> dict[str, Any]:
    full = selectors.persona_context_build(persona=PersonaConfig(config_data=config), budget=10**9)
    sent = selectors.persona_context_build(persona=PersonaConfig(config_data=config))
    return {
        "context": sent.context,
        "tokens": sent.tokens,
        "full_tokens": full.tokens,  # before shortening: how far over the budget the editor is
        "budget": settings.PERSONA_CONTEXT_TOKEN_BUDGET,
        "shortened": sent.shortened,
    }


@admin.register(PersonaConfig)
class PersonaConfigAdmin(admin.ModelAdmin):
    form = PersonaConfigForm
    list_display = ["display_name", "name", "is_active", "story_count", "last_used", "version", "updated_at"]
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
    actions = ["activate", "deactivate", "export_ours", "export_card_json", "export_card_png"]
    change_list_template = "admin/personas/personaconfig/change_list.html"

    def get_queryset(self, request: HttpRequest) -> QuerySet[PersonaConfig]:
        # Every admin read of personas (the list, its actions, the delete pages) carries the usage counts.
        # A GROUP BY query drops Meta.ordering, so the order is given again (the autocomplete pages it).
        queryset = selectors.personas_with_usage(queryset=super().get_queryset(request))
        return queryset.order_by("display_name", "name")  # as PersonaConfig.Meta.ordering

    @admin.display(description="Stories", ordering="story_count")
    def story_count(self, persona: PersonaConfig) -> int:
        # A count only: the stories belong to their writers, whom editors do not see.
        return persona.story_count  # type: ignore[attr-defined]

    @admin.display(description="Last used", ordering="last_used", empty_value="never")
    def last_used(self, persona: PersonaConfig) -> Any:
        return persona.last_used  # type: ignore[attr-defined]

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
            '<div class="persona-live-preview" data-url="{}" data-persona-id="{}">'
            '<p class="persona-live-status">Change a field above: the context it would give appears here '
            "before you save.</p>"
            '<meter class="persona-live-meter" min="0" max="{}" value="0"></meter>'
            '<div class="persona-context persona-live-context"></div></div>',
            reverse("admin:personas_personaconfig_preview"),
            persona.pk or "",
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
        count = services.personas_set_active(queryset=queryset, active=True)
        self.message_user(request, f"{count} persona(s) activated.", messages.SUCCESS)

    @admin.action(permissions=["change"], description="Deactivate selected personas")
    def deactivate(self, request: HttpRequest, queryset: QuerySet[PersonaConfig]) -> HttpResponse | None:
        # Personas that stories cast need a second, informed click: generating those stories fails.
        used = [persona for persona in queryset if persona.story_count]  # type: ignore[attr-defined]
        if used and request.POST.get("confirm_deactivate") != "yes":
            return self._deactivate_confirm(request, queryset, used)
        count = services.personas_set_active(queryset=queryset, active=False)
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
        view = self.admin_site.admin_view(self.import_view)
        preview = self.admin_site.admin_view(self.preview_view)
        return [
            path("import/", view, name="personas_personaconfig_import"),
            path("preview/", preview, name="personas_personaconfig_preview"),
            *super().get_urls(),
        ]

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
        }
        return super().changelist_view(request, extra_context)

    def import_view(self, request: HttpRequest) -> HttpResponse:
        """Upload one persona file or card; a bad file is reported and changes nothing."""
        if not self.has_import_permission(request):
            raise PermissionDenied
        form = PersonaImportForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            try:
                results = services.persona_import(personas=form.cleaned_data["personas"])
            except ValidationError as error:
                form.add_error("file", error.messages)
            else:
                names = ", ".join(
                    f"{p.name} ({'created' if created else 'updated'})" for p, created in results
                )
                self.message_user(request, f"Imported {len(results)} persona(s): {names}.", messages.SUCCESS)
                return HttpResponseRedirect(reverse("admin:personas_personaconfig_changelist"))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Import personas",
            "form": form,
            "limit": settings.DATA_UPLOAD_MAX_MEMORY_SIZE,
        }
        return TemplateResponse(request, "admin/personas/personaconfig/import.html", context)


class PersonaImportForm(forms.Form):
    file = forms.FileField(
        help_text="Our persona JSON (one persona or a list), or a Character Card V1, V2 or V3 as JSON or PNG."
    )

    def clean_file(self) -> Any:
        upload = self.cleaned_data["file"]
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        if upload.size > limit:
            raise forms.ValidationError(f"The file is {upload.size} bytes; the limit is {limit} bytes.")
        try:
            self.cleaned_data["personas"] = persona_file_read(data=upload.read(), filename=upload.name)
        except CardError as error:
            raise forms.ValidationError(str(error)) from None
        return upload


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
