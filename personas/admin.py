from __future__ import annotations

import json
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html, linebreaks
from django.utils.safestring import mark_safe

from personas import selectors, services
from personas.models import PersonaConfig
from personas.schema import persona_config_errors


class PersonaConfigForm(forms.ModelForm):
    config_data = forms.JSONField(
        widget=forms.Textarea(attrs={"rows": 24, "cols": 100, "style": "font-family: monospace"}),
        help_text="JSON object: description, summary, personality, voice, backstory, system_prompt, "
        "example_lines, tags, private, extensions. See README 'Persona configs'.",
    )

    class Meta:
        model = PersonaConfig
        fields = ["name", "display_name", "is_active", "config_data"]

    def clean_config_data(self) -> Any:
        config = self.cleaned_data["config_data"]
        errors = persona_config_errors(config)
        if errors:
            raise forms.ValidationError(["The persona config is not valid:", *errors])
        return config


@admin.register(PersonaConfig)
class PersonaConfigAdmin(admin.ModelAdmin):
    form = PersonaConfigForm
    list_display = ["display_name", "name", "is_active", "version", "updated_at"]
    list_filter = ["is_active", "updated_at"]
    search_fields = ["name", "display_name"]
    readonly_fields = ["context_preview", "version", "created_at", "updated_at"]
    actions = ["activate", "deactivate"]

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

    @admin.action(description="Activate selected personas")
    def activate(self, request: HttpRequest, queryset: QuerySet[PersonaConfig]) -> None:
        count = services.personas_set_active(queryset=queryset, active=True)
        self.message_user(request, f"{count} persona(s) activated.", messages.SUCCESS)

    @admin.action(description="Deactivate selected personas")
    def deactivate(self, request: HttpRequest, queryset: QuerySet[PersonaConfig]) -> None:
        count = services.personas_set_active(queryset=queryset, active=False)
        self.message_user(request, f"{count} persona(s) deactivated.", messages.SUCCESS)


def pretty_json(value: object) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)
