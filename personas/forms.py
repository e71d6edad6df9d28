"""The persona editor's form: a field per part of the config, with the raw JSON kept for power users.

How a save builds ``config_data``: it starts from the raw JSON field (rendered from the stored config,
so keys the form has no field for, the older nested ``context`` and anything else are kept untouched),
then applies each per-part field *that the editor changed*. A context field the top level lacks is
shown from the nested ``context`` when it is there (it is what the model gets), and moves to the top
level when edited (``config_merge``). A part left as it was rendered is not
rewritten, so its stored value (key order, spacing, lines with commas) survives byte for byte.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from django import forms
from django.conf import settings
from django.core import signing
from django.forms.fields import InvalidJSONInput

from personas import selectors, services
from personas.cards import CardError, PersonaImport, persona_file_read
from personas.context import CONTEXT_FIELDS, context_field_nested, context_field_value
from personas.models import PersonaConfig
from personas.schema import PERSONA_CONFIG_SCHEMA, persona_config_errors
from storyproject.forms import ServerCountsLength, UntrustedJSONField

_SENT = "Reaches the model, in the context paragraph"
CONTEXT_KEYS = frozenset(key for key, _ in CONTEXT_FIELDS)
# What the schema lets one text part hold; example lines are up to EXAMPLE_LINES_MAX of them, one per
# line of their field, so that field holds as much as the schema lets the list hold (the schema names
# a line that is too long, and the config's byte limit still applies).
TEXT_MAX_CHARS = PERSONA_CONFIG_SCHEMA["properties"]["description"]["maxLength"]
EXAMPLE_LINES_MAX = PERSONA_CONFIG_SCHEMA["properties"]["example_lines"]["maxItems"]


@dataclass(frozen=True)
class _Part:
    """How one config key is shown in its form field, and how the field's text goes back."""

    show: Callable[[object], object]
    store: Callable[[Any], object]  # None: the key is removed


def _text_show(value: object) -> str:
    return value if isinstance(value, str) else ""


def _text_store(text: str) -> str | None:
    return text if text.strip() else None


# Example lines are one per line. A Character Card's example is a dialogue of several lines (one
# <START> block, imported as one item): where an example spans lines, examples are shown separated by
# a blank line, and a text with a blank line in it is read back that way, so editing the field no
# longer splits each imported dialogue into lines of its own.
_BLANK_LINE = re.compile(r"\n\s*\n")


def _lines_show(value: object) -> str:
    lines = [item for item in value if isinstance(item, str)] if isinstance(value, list) else []
    return ("\n\n" if any("\n" in line for line in lines) else "\n").join(lines)


def _lines_store(text: str) -> list[str] | None:
    examples = _BLANK_LINE.split(text) if _BLANK_LINE.search(text.strip()) else text.split("\n")
    return [example.strip() for example in examples if example.strip()] or None


# Tags are comma-separated, read as CSV: a tag holding a comma or a double quote (a Character Card's
# "Smith, John") is shown quoted, so saving the field unchanged no longer splits it in two.


def _tags_show(value: object) -> str:
    tags = [item.strip() for item in value if isinstance(item, str)] if isinstance(value, list) else []
    return ", ".join(_tag_shown(tag) for tag in tags)


def _tag_shown(tag: str) -> str:
    return '"' + tag.replace('"', '""') + '"' if "," in tag or '"' in tag else tag


def _tags_store(text: str) -> list[str] | None:
    row = next(csv.reader([" ".join(text.splitlines())], skipinitialspace=True), [])
    return [tag.strip() for tag in row if tag.strip()] or None


def _object_show(value: object) -> object:
    return value if isinstance(value, dict) else None


def _object_store(value: object) -> object:
    # An empty field or {} removes the part; anything else is kept for the schema to judge, so [] or 0
    # is refused as not an object instead of silently deleting what the part held.
    return None if value is None or value == {} else value


_TEXT = _Part(_text_show, _text_store)
PARTS: dict[str, _Part] = {
    **dict.fromkeys(
        ["summary", "system_prompt", "description", "personality", "voice", "scenario", "backstory"], _TEXT
    ),
    "example_lines": _Part(_lines_show, _lines_store),
    "tags": _Part(_tags_show, _tags_store),
    "private": _Part(_object_show, _object_store),
    "extensions": _Part(_object_show, _object_store),
}


class PersonaTextField(forms.CharField):
    """Text as typed (not stripped), with the browser's CRLF line ends read as LF."""

    def __init__(
        self,
        *,
        rows: int = 4,
        widget: forms.Widget | None = None,
        max_length: int = TEXT_MAX_CHARS,
        **kwargs: Any,
    ) -> None:
        widget = widget or forms.Textarea(attrs={"rows": rows, "cols": 100})
        super().__init__(required=False, strip=False, widget=widget, max_length=max_length, **kwargs)

    def to_python(self, value: Any) -> str:
        return form_line_ends(str(super().to_python(value)))


# A browser reads a CRLF or a lone CR in the page as LF, and sends every line end back as CRLF.
_LINE_END = re.compile(r"\r\n?")


def form_line_ends(text: str) -> str:
    """``text`` with its line ends as a form's field gets them back from a browser: LF."""
    return _LINE_END.sub("\n", text)


class PrettyJSONField(UntrustedJSONField):
    """``UntrustedJSONField`` shown indented, non-ASCII text as itself, so editors can read it."""

    def prepare_value(self, value: Any) -> str:
        if isinstance(value, InvalidJSONInput):
            return value
        return json.dumps(value, indent=2, ensure_ascii=False)


def _json_widget(rows: int) -> forms.Textarea:
    # A class, not a style attribute: the Content-Security-Policy blocks inline styles.
    return forms.Textarea(attrs={"rows": rows, "cols": 100, "class": "persona-config-json"})


class PersonaConfigForm(ServerCountsLength, forms.ModelForm):
    summary = PersonaTextField(
        rows=1,
        # The schema's own bound, said on this field (it was an error on the raw JSON box).
        max_length=PERSONA_CONFIG_SCHEMA["properties"]["summary"]["maxLength"],
        help_text="One line shown in persona pickers and lists. Never sent to the model.",
    )
    system_prompt = PersonaTextField(
        help_text=f"How the model should play this persona. {_SENT} 'Instructions:', first, so it is "
        "the last text cut when the context is over the token budget."
    )
    description = PersonaTextField(help_text=f"Who the persona is. {_SENT} 'Description:'.")
    personality = PersonaTextField(help_text=f"Temperament, habits, wants. {_SENT} 'Personality:'.")
    voice = PersonaTextField(help_text=f"How the persona speaks: rhythm, vocabulary, tics. {_SENT} 'Voice:'.")
    example_lines = PersonaTextField(
        rows=6,
        max_length=EXAMPLE_LINES_MAX * (TEXT_MAX_CHARS + 2),
        help_text="Lines of dialogue in the persona's voice, one per line. An example of several lines "
        "(a card's <START> block) is kept whole when examples are separated by a blank line. "
        f"{_SENT} 'Example lines:', one bullet each.",
    )
    scenario = PersonaTextField(
        help_text=f"The situation the persona is usually found in. {_SENT} 'Scenario:', near the end: "
        "cut before anything but the backstory."
    )
    backstory = PersonaTextField(
        rows=6,
        help_text=f"Where the persona comes from. {_SENT} 'Backstory:', last, so it is the first text "
        "cut when the context is over the token budget.",
    )
    tags = PersonaTextField(
        widget=forms.TextInput(attrs={"size": 80}),
        help_text="Comma-separated labels for finding personas, e.g. noir, detective (quote a label holding a "
        'comma: "Smith, John"). Never sent to the model.',
    )
    private = PrettyJSONField(
        required=False,
        widget=_json_widget(6),
        help_text="A JSON object kept with the persona (creator, notes, card version). Never sent to the "
        "model, nor shown by the API.",
    )
    extensions = PrettyJSONField(
        required=False,
        widget=_json_widget(6),
        help_text="A JSON object for anything else, e.g. Character Card extensions, kept so an export "
        "loses nothing. Never sent to the model.",
    )
    config_data = PrettyJSONField(
        required=False,  # "{}" is empty to Django; the parts above may fill it.
        label="Raw JSON",
        widget=_json_widget(16),
        help_text="The whole config as JSON, for power users. Keys without a field above are kept here "
        "untouched; where you change both a field above and its key here, the field above wins. "
        "See docs/personas.md, 'Persona configs'.",
    )

    deactivate_anyway = forms.BooleanField(
        required=False,
        help_text="Needed to deactivate a persona that stories cast: generating those stories fails while "
        "it is inactive.",
    )
    # The version this page was rendered from: a save from an older one is refused (see _version_check).
    loaded_version = forms.IntegerField(required=False, min_value=1, widget=forms.HiddenInput)

    class Meta:
        model = PersonaConfig
        fields = ["name", "display_name", "is_active", "config_data"]

    class Media:
        css = {"all": ["css/admin-personas.css"]}
        js = ["js/csrf-cookie.js", "js/persona-preview.js"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        stored = self.instance.config_data if isinstance(self.instance.config_data, dict) else {}
        for key, part in PARTS.items():
            self.fields[key].initial = part.show(_stored_value(stored, key))
        if self.instance.pk is not None:
            self.fields["loaded_version"].initial = self.instance.version
            self.fields["loaded_version"].required = True

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or self.cleaned_data
        # The key before the row (_version_check locks it), in the order every write takes them (an
        # import holds its keys, then locks its rows): taken the other way, a rename and an import of
        # the same keys each waited for the other (a deadlock PostgreSQL broke with a 500).
        self._key_hold(cleaned.get("name"))
        self._version_check(cleaned.get("loaded_version"))
        self._key_check(cleaned.get("name"))
        self._deactivation_check(cleaned)
        if "config_data" not in cleaned or any(key in self.errors for key in PARTS):
            return cleaned
        if cleaned["config_data"] is None and self.instance.config_data:
            # An emptied box: saving it would drop every key without a field and every untouched part.
            self.add_error(
                "config_data",
                "The Raw JSON box is empty: saving it would clear the persona's whole config. Nothing was "
                "saved. Write {} to clear it on purpose, or reload the page to get it back.",
            )
            return cleaned
        config = self._config_built(cleaned)
        errors = persona_config_errors(config)
        if errors:
            self.add_error("config_data", ["The persona config is not valid:", *errors])
        else:
            cleaned["config_data"] = config
        return cleaned

    def _version_check(self, loaded: int | None) -> None:
        # Optimistic concurrency: the row stays locked from this check to the save (the admin saves in
        # one transaction), so two editors who loaded the same version cannot both get through.
        if self.instance.pk is None or loaded is None:
            return
        current = services.persona_version_lock(persona_pk=self.instance.pk)
        if current is None:
            # Deleted after the admin read it: the save would have inserted it again (and failed, a 500).
            raise forms.ValidationError(
                "Another editor deleted this persona while you were saving it. Nothing was saved. Your edits "
                "are still below: copy what you need; 'Recover deleted personas' on the list brings it back.",
                code="deleted",
            )
        if current != loaded:
            raise forms.ValidationError(
                f"Another editor saved this persona after you opened it (you opened version {loaded}; "
                f"it is now version {current}). Nothing was saved. Your edits are still below: copy what "
                "you need, open the persona again to see their changes, and make yours there.",
                code="stale",
            )

    def _key_check(self, name: str | None) -> None:
        # After _version_check, which locks the row: a story saved meanwhile is counted.
        if self.instance.pk is None or name is None:
            return
        try:
            services.persona_key_keep_check(
                persona_pk=self.instance.pk, key=self.initial["name"], new_key=name
            )
        except forms.ValidationError as error:
            self.add_error("name", error)

    def _key_hold(self, name: str | None) -> None:
        # A key given now (a new persona, a rename) is held until the save commits, before the
        # uniqueness check that follows clean(): another editor giving it at the same time waits, then
        # is told it is taken.
        if name and (self.instance.pk is None or name != self.initial.get("name")):
            services.persona_key_hold(name=name)

    def _deactivation_check(self, cleaned: dict[str, Any]) -> None:
        was_active = self.instance.pk is not None and self.initial.get("is_active")
        if not was_active or cleaned.get("is_active", True) or cleaned.get("deactivate_anyway"):
            return
        count = selectors.persona_story_count(persona_pk=self.instance.pk)
        if count:
            self.add_error(
                "is_active",
                f"{count} {'story casts' if count == 1 else 'stories cast'} this persona; generating them "
                "fails while it is inactive. Tick 'Deactivate anyway' to confirm.",
            )

    def config_preview(self) -> tuple[object, list[str]]:
        """The config a save of the bound data would store, and what is wrong with it (the live preview).

        Only the config's fields are cleaned: the name, the version and the rest do not change the context.
        """
        values, problems = {}, []
        for name in [*PARTS, "config_data"]:
            field = self.fields[name]
            try:
                values[name] = field.clean(
                    field.widget.value_from_datadict(self.data, self.files, self.add_prefix(name))
                )
            except forms.ValidationError as error:
                problems += [f"{self[name].label}: {message}" for message in error.messages]
        if problems:
            return None, problems
        config = self._config_built(values)
        return config, persona_config_errors(config)

    def _config_built(self, values: dict[str, Any]) -> object:
        raw = {} if values["config_data"] is None else values["config_data"]
        return config_merge(raw=raw, edits=self._edited_parts(values))

    def _edited_parts(self, values: dict[str, Any]) -> dict[str, object]:
        # A part counts as edited when its value differs from the one the page was rendered with, as
        # the browser sends that back: not an edit, or every save rewrote it.
        edited = {}
        for key, part in PARTS.items():
            field = self.fields[key]
            if values.get(key) != _sent_back(field, field.initial):
                edited[key] = part.store(values.get(key))
        return edited


def _sent_back(field: forms.Field, initial: object) -> object:
    """``initial`` as a browser sends it back from ``field``: a text area's line ends as LF (a card
    written on Windows has CRLF; a multi-line example was split in two), a one-line input's dropped
    (a tag holding a line break, from a card)."""
    if not isinstance(initial, str):
        return initial
    if isinstance(field.widget, forms.Textarea):
        return form_line_ends(initial)
    return _LINE_END.sub("", initial.replace("\n", ""))


def part_text(config: object, key: str) -> str:
    """One part of ``config`` as its field on the change page shows it (the view-only page's text)."""
    stored = config if isinstance(config, dict) else {}
    value = PARTS[key].show(_stored_value(stored, key))
    if value is None or isinstance(value, str):
        return value or ""
    return json.dumps(value, indent=2, ensure_ascii=False)


def _stored_value(stored: dict[str, Any], key: str) -> object:
    # A context field that reaches the model from the older nested `context` is shown from there, not
    # as an empty field beside a text the model still gets.
    return context_field_value(stored, key) if key in CONTEXT_KEYS else stored.get(key)


def config_merge(*, raw: object, edits: dict[str, object]) -> object:
    """``raw`` with each edited part set (or removed when it is None); a non-object ``raw`` as is.

    A context field edited where it lived in the older nested ``context`` moves to the top level: its
    nested copy is removed (a nested object left empty goes with it), so clearing the field removes the
    text from the context rather than letting the nested copy fill in again.
    """
    if not isinstance(raw, dict):
        return raw  # persona_config_errors names the problem.
    config = dict(raw)
    for key, value in edits.items():
        if key in CONTEXT_KEYS and context_field_nested(config, key):
            _nested_remove(config, key)
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    return config


def _nested_remove(config: dict[str, Any], key: str) -> None:
    nested = config["context"]
    if isinstance(nested, dict):
        nested = {name: value for name, value in nested.items() if name != key}
    if isinstance(nested, str) or not nested:
        del config["context"]
    else:
        config["context"] = nested


# --- The card import: upload, preview, confirm ------------------------------------------------------


class PersonaImportForm(forms.Form):
    file = forms.FileField(
        help_text="Our persona JSON (one persona or a list), or a Character Card V1, V2 or V3 as JSON or PNG, "
        "or a zip of them (as exporting several personas makes)."
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


# The preview page carries what it showed to the confirming POST, signed (so the import written is the
# one previewed, read and checked once) and compressed; a preview older than this must be made again.
IMPORT_PREVIEW_MAX_AGE = 3600
_IMPORT_SALT = "personas.import-preview"


def import_payload(
    *, personas: Sequence[PersonaImport], plans: Sequence[selectors.ImportPlan], source: str
) -> str:
    data = {
        "source": source,
        "personas": [dataclasses.asdict(persona) for persona in personas],
        "versions": {plan.name: plan.version for plan in plans},
    }
    return signing.dumps(data, salt=_IMPORT_SALT, compress=True)


class PersonaImportConfirmForm(forms.Form):
    payload = forms.CharField(widget=forms.HiddenInput, strip=False)

    def clean_payload(self) -> str:
        payload = self.cleaned_data["payload"]
        try:
            data = signing.loads(payload, salt=_IMPORT_SALT, max_age=IMPORT_PREVIEW_MAX_AGE)
        except signing.SignatureExpired:
            raise forms.ValidationError(
                "The preview is more than an hour old: upload the file again."
            ) from None
        except signing.BadSignature:
            raise forms.ValidationError("The preview cannot be read: upload the file again.") from None
        self.cleaned_data["personas"] = [PersonaImport(**persona) for persona in data["personas"]]
        self.cleaned_data["versions"] = data["versions"]
        self.cleaned_data["source"] = data["source"]
        return payload
