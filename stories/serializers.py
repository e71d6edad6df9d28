"""DRF serializers for stories, screenplay versions and generation runs (shapes only, no rules)."""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.core.validators import MaxLengthValidator, ProhibitNullCharactersValidator
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.settings import api_settings
from rest_framework.utils import html
from rest_framework.validators import ProhibitSurrogateCharactersValidator

from stories.generation.prompt import screenplay_schema
from stories.models import GenerationRun, ScreenplayVersion, Story, StoryCast
from stories.validation import (
    VERSION_NUMBER_MAX,
    StorableTextValidator,
    text_field_problem,
    text_trimmed,
    title_problem,
)
from storyproject.openapi import json_schema_as_openapi30
from storyproject.parsers import form_fields_once
from storyproject.untrusted import UntrustedJSONError, json_loads_untrusted, text_problem


class StorableCharField(serializers.CharField):
    """A CharField that refuses text the database cannot store (NUL, lone surrogates) with a 400.

    DRF's CharField already refuses NUL; the surrogate check is ours. ``max_length_setting`` names a
    setting read at validation time, so a limit changed by the environment applies without a reload.
    A number is refused too, where DRF's CharField would store ``0`` as the text "0": a client that
    sends one has a bug to learn of, not a story titled "12.5". Text of whitespace only is blank,
    whether or not the field keeps its whitespace.
    """

    def __init__(
        self, *, max_length_setting: str | None = None, max_bytes_setting: str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        # Trimmed here, without the control characters DRF's str.strip() takes for white space
        # (stories.validation.text_trimmed): they are refused, at the text's edges as inside it.
        self.trimmed, self.trim_whitespace = self.trim_whitespace, False
        # Ours names the field and covers NUL and lone surrogates too: DRF's own checks would say it a
        # second time (and DRF's surrogate message names the code point, part of the value).
        theirs = (ProhibitNullCharactersValidator, ProhibitSurrogateCharactersValidator)
        self.validators = [v for v in self.validators if not isinstance(v, theirs)]
        self.validators.append(StorableTextValidator(field=kwargs.get("label") or "text"))
        if max_length_setting is not None:
            # A callable limit: read when a value is checked, and when the schema is built (drf-spectacular
            # calls it), so the schema's maxLength is the one applied.
            self.validators.append(
                MaxLengthValidator(
                    lambda: int(getattr(settings, max_length_setting)),
                    message="Ensure this field has no more than %(limit_value)d characters (it has %(show_value)d).",
                )
            )
        if max_bytes_setting is not None:
            self.validators.append(MaxBytesValidator(max_bytes_setting))

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        value = super().to_internal_value(data)
        if self.trimmed:
            value = text_trimmed(value)
        if not self.allow_blank and not text_trimmed(value):
            # DRF sees a blank only in "" unless it trims: a plot of spaces was stored, and every
            # generation from it refused ("plot must not be empty").
            self.fail("blank")
        return value


class MaxBytesValidator(MaxLengthValidator):
    """At most the setting's number of bytes of UTF-8, said as the import says it
    (stories.imports.import_too_large). A MaxLengthValidator, so that the schema gives the limit as the
    text's ``maxLength`` (no text of more characters is taken; one of fewer may still be refused)."""

    def __init__(self, setting: str) -> None:
        super().__init__(
            lambda: int(getattr(settings, setting)),
            message=f"the text is %(show_value)d bytes; the limit is %(limit_value)d bytes ({setting})",
        )

    def clean(self, x: Any) -> int:
        # "surrogatepass": a lone surrogate (a JSON "\ud800") counts its 3 bytes instead of raising, a 500
        # before StorableTextValidator, beside this one, could refuse it by name.
        return len(str(x).encode("utf-8", "surrogatepass"))


class WriteSerializer(serializers.Serializer):
    """The body of a write: every field it gives is one the endpoint writes, each given once.

    A field the endpoint does not write (a misspelt ``tilte``, a read-only ``latest_version``) is a 400
    naming it, at most ``_UNKNOWN_NAMED`` of them: DRF drops them without a word, and the write went on
    without what the client meant to send. A form (urlencoded or multipart) giving one of its fields more
    than once is refused too (``storyproject.parsers.form_fields_once``): DRF kept the last, silently.
    """

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, Mapping):
            _fields_known_check(data, self.fields, form=html.is_html_input(data))
        if html.is_html_input(data):
            form_fields_once(data, names=self.fields)
        return super().to_internal_value(data)


# The field an HTML form signed in by session carries (DRF's browsable API's forms): not the body's.
_FORM_CSRF_FIELD = "csrfmiddlewaretoken"
_UNKNOWN_NAMED = 5
_UNKNOWN_NAME_CHARS = 40


def _fields_known_check(
    data: Mapping[str, Any], fields: Mapping[str, serializers.Field], *, form: bool
) -> None:
    writable = [name for name, field in fields.items() if not field.read_only]
    # A form gives a dict or a list one key a member (cast.BOB=..., names[0]=...), as DRF reads them.
    grouped = [name for name in writable if isinstance(fields[name], _GROUPED_FIELDS)]
    unknown = [
        str(key)
        for key in data
        if key not in writable
        and not (form and (key == _FORM_CSRF_FIELD or str(key).startswith(_member_prefixes(grouped))))
    ]
    if not unknown:
        return
    message = f"Unknown field: this endpoint reads {', '.join(writable)}."
    errors: dict[str, Any] = {
        key if len(key) <= _UNKNOWN_NAME_CHARS else key[:_UNKNOWN_NAME_CHARS] + "…": [message]
        for key in heapq.nsmallest(_UNKNOWN_NAMED, unknown)
    }
    if len(unknown) > _UNKNOWN_NAMED:
        more = len(unknown) - _UNKNOWN_NAMED
        errors[api_settings.NON_FIELD_ERRORS_KEY] = [f"{more} more unknown fields ({len(unknown)} in all)."]
    raise serializers.ValidationError(errors)


_GROUPED_FIELDS = (serializers.DictField, serializers.ListField, serializers.BaseSerializer)


def _member_prefixes(names: list[str]) -> tuple[str, ...]:
    return tuple(prefix for name in names for prefix in (f"{name}.", f"{name}["))


class _FormText(str):
    """A form field's text, as opposed to a string in a JSON body."""


class _JSONTyped:
    """A field that takes, from a JSON body, a value of its own JSON type only (a form carries text,
    which the field reads as DRF does). DRF's BooleanField reads 1, "yes" and "false" as booleans and its
    IntegerField "1" and 1.0 as 1: a client's wrong type went unnoticed (``"save_anyway": 1`` saved over
    a newer version), where the generation's ``wait`` and the rewrite's ``base_version`` refuse it."""

    json_types: tuple[type, ...] = ()
    json_type_error = ""

    def get_value(self, dictionary: Any) -> Any:
        value = super().get_value(dictionary)  # type: ignore[misc]
        return _FormText(value) if html.is_html_input(dictionary) and isinstance(value, str) else value

    def to_internal_value(self, data: Any) -> Any:
        json_typed = isinstance(data, self.json_types) and (
            bool in self.json_types or not isinstance(data, bool)
        )
        if not (json_typed or isinstance(data, _FormText)):
            raise serializers.ValidationError(self.json_type_error, code="invalid")
        return super().to_internal_value(data)  # type: ignore[misc]


class JSONBooleanField(_JSONTyped, serializers.BooleanField):
    json_types = (bool,)
    json_type_error = "Must be a JSON boolean (true or false)."


class JSONIntegerField(_JSONTyped, serializers.IntegerField):
    json_types = (int,)  # bool, an int in Python, is refused in _JSONTyped
    json_type_error = "Must be a JSON integer."


class FormJSONDictField(serializers.DictField):
    """A dict, which a multipart form may also send as one field holding a JSON object
    (``cast={"BOB": "starship-captain"}``), besides DRF's one field per key (``cast.BOB=...``).

    DRF reads only the second from a form, so a JSON one was dropped without a word.
    """

    def get_value(self, dictionary: Any) -> Any:
        if html.is_html_input(dictionary) and self.field_name in dictionary:
            return _FormText(dictionary.get(self.field_name))  # parsed below; a JSON body's string is not
        return super().get_value(dictionary)

    def to_internal_value(self, data: Any) -> dict[Any, Any]:
        if isinstance(data, _FormText):
            try:
                data = json_loads_untrusted(data)
            except UntrustedJSONError as error:
                raise serializers.ValidationError(f"Send a JSON object: {error}", code="invalid") from None
        _keys_storable(data, label=self.field_name or "text")
        return super().to_internal_value(data)


def _keys_storable(data: Any, *, label: str) -> None:
    # Checked before DictField's own: its errors are keyed by the key sent, and a lone surrogate there
    # made the whole answer impossible to encode (a 500).
    if not isinstance(data, dict):
        return
    for key in data:
        problem = text_problem(str(key))
        if problem is not None:
            raise serializers.ValidationError(f"a name in the {label} {problem}.", code="unstorable_text")


class StoryCastSerializer(serializers.ModelSerializer):
    persona: serializers.SlugRelatedField[Any] = serializers.SlugRelatedField(
        slug_field="name", read_only=True
    )

    class Meta:
        model = StoryCast
        fields = ["persona", "character_name", "order"]


class StorySerializer(WriteSerializer, serializers.ModelSerializer):
    title = StorableCharField(label="title", max_length=200, trim_whitespace=True)
    plot = StorableCharField(label="plot", max_length_setting="STORY_MAX_PLOT_CHARS", trim_whitespace=False)
    latest_version = serializers.IntegerField(source="latest_version_number", read_only=True)
    cast = StoryCastSerializer(many=True, read_only=True)

    class Meta:
        model = Story
        fields = ["id", "title", "plot", "latest_version", "cast", "created_at", "updated_at"]
        read_only_fields = ["id", "created_at", "updated_at"]

    def validate_title(self, title: str) -> str:
        problem = title_problem(title)
        if problem is not None:
            raise serializers.ValidationError(f"title {problem}.", code="invalid")
        return title

    def validate_plot(self, plot: str) -> str:
        # As a generation's plot: the page's Regenerate sends this plot to generate.
        problem = text_field_problem(plot)
        if problem is not None:
            raise serializers.ValidationError(f"plot {problem}.", code="invalid")
        return plot


class ScreenplayVersionSummarySerializer(serializers.ModelSerializer):
    # Null for a version no run wrote (edited, restored, imported): the schema must say so.
    run: serializers.PrimaryKeyRelatedField[Any] = serializers.PrimaryKeyRelatedField(
        read_only=True, allow_null=True
    )
    title = serializers.SerializerMethodField()
    scene_count = serializers.SerializerMethodField()

    class Meta:
        model = ScreenplayVersion
        fields = [
            "number",
            "title",
            "scene_count",
            "model",
            "max_tokens",
            "run",
            "origin",
            "based_on",
            "created_at",
        ]

    # A list's versions come with their title and scene count read by the database
    # (stories.selectors.story_versions_list), not their contents: read for each one, a page of 20
    # versions was 25 queries, and all of each screenplay. A title that is not text is read as before.
    def get_title(self, version: ScreenplayVersion) -> str:
        title = getattr(version, "summary_title", None)
        if title is not None:
            return str(title)
        content = version.content if isinstance(version.content, dict) else {}
        return str(content.get("title", ""))

    def get_scene_count(self, version: ScreenplayVersion) -> int:
        count = getattr(version, "summary_scene_count", None)
        if count is not None:
            return int(count)
        content = version.content if isinstance(version.content, dict) else {}
        scenes = content.get("scenes")
        return len(scenes) if isinstance(scenes, list) else 0


@extend_schema_field(
    {
        "type": "object",
        "description": "A screenplay matching contract/screenplay.schema.json.",
        "additionalProperties": True,
    }
)
class ScreenplayContentField(serializers.JSONField):
    def to_internal_value(self, data: Any) -> Any:
        # A form (urlencoded or multipart) sends the JSON as text, which DRF parses with a bare
        # json.loads: deep nesting was a RecursionError, a 500. Parsed here like any JSON from outside.
        if getattr(data, "is_json_string", False):
            try:
                return json_loads_untrusted(data)
            except UntrustedJSONError as error:
                raise serializers.ValidationError(f"Send a JSON object: {error}", code="invalid") from None
        return super().to_internal_value(data)


# What a writer sends: the contract itself (what a version written earlier, or edited in the admin,
# holds may be looser, so the answers keep the open object above).
@extend_schema_field(json_schema_as_openapi30(screenplay_schema()))
class ScreenplayContentWriteField(ScreenplayContentField):
    pass


class ScreenplayVersionSerializer(ScreenplayVersionSummarySerializer):
    content = ScreenplayContentField(read_only=True)

    class Meta(ScreenplayVersionSummarySerializer.Meta):
        fields = [*ScreenplayVersionSummarySerializer.Meta.fields, "content"]


TIMING_FIELDS = ("context_ms", "prompt_ms", "ttft_ms", "llm_ms", "save_ms", "total_ms")
USAGE_FIELDS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")


class RunTimingsSerializer(serializers.Serializer):
    context_ms = serializers.IntegerField(allow_null=True)
    prompt_ms = serializers.IntegerField(allow_null=True)
    ttft_ms = serializers.IntegerField(allow_null=True)
    llm_ms = serializers.IntegerField(allow_null=True)
    save_ms = serializers.IntegerField(allow_null=True)
    total_ms = serializers.IntegerField(allow_null=True)


class RunUsageSerializer(serializers.Serializer):
    input_tokens = serializers.IntegerField()
    output_tokens = serializers.IntegerField()
    cache_read_tokens = serializers.IntegerField()
    cache_write_tokens = serializers.IntegerField()


class GenerationRunSerializer(serializers.ModelSerializer):
    # Null for a run that saved no new story (refused, failed or cancelled) or whose story was deleted.
    story: serializers.PrimaryKeyRelatedField[Any] = serializers.PrimaryKeyRelatedField(
        read_only=True, allow_null=True
    )
    version = serializers.SerializerMethodField()
    persona_names = serializers.ListField(child=serializers.CharField(), read_only=True)
    timings = serializers.SerializerMethodField()
    usage = serializers.SerializerMethodField()

    class Meta:
        model = GenerationRun
        fields = [
            "id",
            "story",
            "version",
            "status",
            "mode",
            "model",
            "max_tokens",
            "persona_names",
            "timings",
            "usage",
            "usage_estimated",
            "continuations",
            "stop_reason",
            "error_code",
            "error_message",
            "created_at",
            "finished_at",
        ]

    def get_version(self, run: GenerationRun) -> int | None:
        version = getattr(run, "version", None)
        return version.number if version is not None else None

    @extend_schema_field(RunTimingsSerializer)
    def get_timings(self, run: GenerationRun) -> dict[str, int | None]:
        return {name: getattr(run, name) for name in TIMING_FIELDS}

    @extend_schema_field(RunUsageSerializer)
    def get_usage(self, run: GenerationRun) -> dict[str, int]:
        return {name: getattr(run, name) for name in USAGE_FIELDS}


class GenerationRunDetailSerializer(GenerationRunSerializer):
    raw_text = serializers.CharField(
        read_only=True,
        help_text="The model text the run received, as it came (JSON, maybe cut off): all that is left of "
        "a failed or cancelled run's text; empty while the run streams and for a run that received none.",
    )

    class Meta(GenerationRunSerializer.Meta):
        fields = [*GenerationRunSerializer.Meta.fields, "raw_text"]


# --- The writer's own versions (issue 17) ------------------------------------------------------------


class FountainPreviewSerializer(WriteSerializer):
    """The editor's preview: ``fountain`` text and the ``base_version`` it edits.

    The save below inherits both fields, so the preview refuses what the save refuses (a boolean, a
    number past the stored range) instead of showing the latest version for it.
    """

    # STORY_IMPORT_MAX_BYTES is a number of bytes (not characters), said as for a file or pasted text.
    fountain = StorableCharField(
        label="fountain", trim_whitespace=False, max_bytes_setting="STORY_IMPORT_MAX_BYTES"
    )
    base_version = JSONIntegerField(
        required=False, allow_null=True, min_value=1, max_value=VERSION_NUMBER_MAX
    )


class VersionWriteSerializer(FountainPreviewSerializer):
    """Exactly one of ``content`` (the contract's JSON) or ``fountain`` (text); ``base_version`` optional."""

    content = ScreenplayContentWriteField(required=False)
    fountain = StorableCharField(
        label="fountain", required=False, trim_whitespace=False, max_bytes_setting="STORY_IMPORT_MAX_BYTES"
    )
    save_anyway = JSONBooleanField(
        required=False,
        default=False,
        help_text="With base_version: save even when a newer version exists (no 409); the edit keeps "
        "base_version's characters and is recorded as based on it.",
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        return _exactly_one(attrs, "content (screenplay JSON)", "fountain (text)")


class StoryImportSerializer(WriteSerializer):
    """A ``file`` (.fountain or .fdx, multipart) or pasted ``fountain``; ``cast`` maps names to personas."""

    file = serializers.FileField(required=False)
    fountain = StorableCharField(
        label="fountain", required=False, trim_whitespace=False, max_bytes_setting="STORY_IMPORT_MAX_BYTES"
    )
    cast = FormJSONDictField(
        child=StorableCharField(label="cast", allow_null=True, max_length=100), required=False
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        return _exactly_one(attrs, "file (.fountain or .fdx)", "fountain (text)")


def _exactly_one(attrs: dict[str, Any], first: str, second: str) -> dict[str, Any]:
    # Each label starts with its field's name: "content (screenplay JSON)" is the field "content".
    if (first.split()[0] in attrs) == (second.split()[0] in attrs):
        raise serializers.ValidationError(f"Send exactly one of {first} or {second}.")
    return attrs


class PersonaMatchSerializer(serializers.Serializer):
    character = serializers.CharField()
    persona = serializers.CharField(allow_null=True, help_text="The persona's key (name), or null: no match.")
    display_name = serializers.CharField(allow_null=True)


class DiffLineSerializer(serializers.Serializer):
    op = serializers.ChoiceField(choices=["equal", "delete", "insert"])
    text = serializers.CharField()


class SceneDiffSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["same", "changed", "added", "removed"])
    heading = serializers.CharField()
    from_scene = serializers.IntegerField(allow_null=True)
    to_scene = serializers.IntegerField(allow_null=True)
    lines = DiffLineSerializer(many=True)


class ScreenplayDiffSerializer(serializers.Serializer):
    from_version = serializers.IntegerField()
    to_version = serializers.IntegerField()
    scenes = SceneDiffSerializer(many=True)


class CharacterStatsSerializer(serializers.Serializer):
    name = serializers.CharField()
    lines = serializers.IntegerField(help_text="Speeches (dialogue elements).")
    words = serializers.IntegerField()
    scenes = serializers.IntegerField(help_text="Scenes the character speaks in.")


class ScreenplayStatsSerializer(serializers.Serializer):
    pages = serializers.FloatField(help_text="Estimated from the industry layout: about 55 lines a page.")
    scenes = serializers.IntegerField()
    characters = CharacterStatsSerializer(many=True)


# --- Response bodies the schema documents (the views build them as dicts) ---------------------------


class DetailSerializer(serializers.Serializer):
    """DRF's own error body."""

    detail = serializers.CharField()


class GenerationErrorBodySerializer(serializers.Serializer):
    """A GenerationError as stories.exception_handlers answers it; DRF's own refusals (a body it cannot
    parse or authenticate) answer ``{"detail": ...}``: both as one object with optional fields."""

    code = serializers.CharField(required=False)
    message = serializers.CharField(required=False)
    retryable = serializers.BooleanField(required=False)
    retry_after = serializers.IntegerField(required=False)
    run_id = serializers.IntegerField(required=False)
    detail = serializers.CharField(required=False)


class GeneratedStorySerializer(serializers.Serializer):
    id = serializers.IntegerField()
    title = serializers.CharField()
    plot = serializers.CharField()
    url = serializers.CharField()


class GeneratedVersionSerializer(serializers.Serializer):
    number = serializers.IntegerField()
    content = ScreenplayContentField()
    model = serializers.CharField()
    max_tokens = serializers.IntegerField()
    created_at = serializers.DateTimeField()


class CastDroppedSerializer(serializers.Serializer):
    persona = serializers.CharField()
    character_name = serializers.CharField()


class GenerationResultSerializer(serializers.Serializer):
    """The 201 of a blocking generation or scene rewrite (stories.api._generation_body)."""

    run_id = serializers.IntegerField()
    story = GeneratedStorySerializer()
    version = GeneratedVersionSerializer()
    timings = RunTimingsSerializer(help_text="Stage timings in ms (null for a stage the run did not record).")
    usage = RunUsageSerializer(help_text="Tokens summed over every model call.")
    cast_dropped = CastDroppedSerializer(
        many=True,
        help_text="Cast members left out: an editor deleted their persona while the run was writing.",
    )
