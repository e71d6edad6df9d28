"""DRF shapes for personas: list and detail, contexts, and the batch query's input."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework import serializers

from personas.context import persona_summary
from personas.models import PersonaConfig

NAME_MAX_CHARS: int = PersonaConfig._meta.get_field("name").max_length or 100
SEARCH_MAX_CHARS = 100


class PersonaListSerializer(serializers.ModelSerializer):
    summary = serializers.SerializerMethodField(help_text="One line for pickers.")
    tags = serializers.SerializerMethodField()

    class Meta:
        model = PersonaConfig
        fields = ["name", "display_name", "summary", "tags", "version", "updated_at"]

    def get_summary(self, persona: PersonaConfig) -> str:
        return persona_summary(persona.config_data or {})

    def get_tags(self, persona: PersonaConfig) -> list[str]:
        tags = (persona.config_data or {}).get("tags")
        return [tag for tag in tags if isinstance(tag, str)] if isinstance(tags, list) else []


class PersonaDetailSerializer(PersonaListSerializer):
    config = serializers.SerializerMethodField(
        help_text="The persona's config, without its 'private' part (editors' notes)."
    )

    class Meta(PersonaListSerializer.Meta):
        fields = [*PersonaListSerializer.Meta.fields, "config", "created_at"]

    def get_config(self, persona: PersonaConfig) -> dict[str, Any]:
        return {key: value for key, value in (persona.config_data or {}).items() if key != "private"}


class PersonaContextSerializer(serializers.Serializer):
    name = serializers.CharField()
    display_name = serializers.CharField()
    # DRF's metaclass moves declared fields out of the class, so this does not shadow Field.context.
    context = serializers.CharField(help_text="The text that goes into a prompt.")  # type: ignore[assignment]
    tokens = serializers.IntegerField(help_text="Estimated tokens (docs/personas.md).")
    shortened = serializers.BooleanField(help_text="True when cut to the token budget.")


class PersonaContextsSerializer(serializers.Serializer):
    contexts = PersonaContextSerializer(many=True, help_text="In the order asked, without duplicates.")
    missing = serializers.ListField(child=serializers.CharField(), help_text="Names no persona has.")
    inactive = serializers.ListField(child=serializers.CharField(), help_text="Deactivated personas.")


class PersonaSearchSerializer(serializers.Serializer):
    search = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=SEARCH_MAX_CHARS,
        trim_whitespace=True,
        help_text="Part of a name or display name (100 chars max).",
    )


# What persona_names_parse accepts, for the OpenAPI schema: 1 to 50 names, each 1 to 100 characters once
# its surrounding spaces are trimmed. (The parser also takes more than 50 when repeats bring the
# different ones down to 50: the pattern is the stricter.)
_NAME_PATTERN = rf"\s*[^,\s](?:[^,]{{0,{NAME_MAX_CHARS - 2}}}[^,\s])?\s*"
NAMES_PATTERN = rf"^{_NAME_PATTERN}(?:,{_NAME_PATTERN}){{0,49}}$"


def persona_names_parse(raw: str) -> list[str]:
    """``?names=a,b,c``: de-duplicated in order, each non-empty and bounded, at most the batch limit.

    A plain function rather than a serializer: it runs on every batch request, the hot path.
    """
    if not raw.strip():
        raise serializers.ValidationError({"names": ["Give at least one persona name: ?names=a,b,c."]})
    names = [part.strip() for part in raw.split(",")]
    if "" in names:
        raise serializers.ValidationError({"names": ["A persona name is empty: check for a stray comma."]})
    too_long = next((name for name in names if len(name) > NAME_MAX_CHARS), None)
    if too_long is not None:
        message = (
            f"The name {too_long[:20]!r}... is {len(too_long)} characters; the limit is {NAME_MAX_CHARS}."
        )
        raise serializers.ValidationError({"names": [message]})
    unique = list(dict.fromkeys(names))
    limit = settings.STORY_MAX_BATCH_NAMES
    if len(unique) > limit:
        message = f"At most {limit} different names per request; got {len(unique)}."
        raise serializers.ValidationError({"names": [message]})
    return unique


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField()
    code = serializers.CharField(required=False)
