from __future__ import annotations

from typing import Any

import reversion
from django.core.exceptions import ValidationError
from django.db import models

from personas.schema import validate_persona_config
from storyproject.bidi import bidi_isolated
from storyproject.collation import user_ordering
from storyproject.json_sql import JsonFunc
from storyproject.untrusted import one_line_problem, text_visible

# Keys the API's URLs take for themselves: /api/personas/contexts/ is the batch of contexts, so a persona
# of that name could not be read at /api/personas/<name>/.
RESERVED_NAMES = frozenset({"contexts"})


class JsonIsObject(JsonFunc):
    """Whether a JSON column holds an object (``{...}``)."""

    output_field = models.BooleanField()
    template = "json_type(%(expressions)s) = 'object'"
    postgresql_template = "jsonb_typeof(%(expressions)s) = 'object'"


# Every list of personas: by display name, case and accents aside, whatever the database's collation
# (storyproject.collation), then by key.
PERSONA_ORDER: list[Any] = [*user_ordering("display_name"), "name"]


# Every save inside a revision block (the admin's views, personas.services) is kept as a revision.
@reversion.register()
class PersonaConfig(models.Model):
    """A character that editors maintain: its voice, backstory and prompt text, as nested JSON."""

    name = models.SlugField(
        max_length=100, unique=True, help_text="The key clients use, e.g. 'noir-detective'."
    )
    display_name = models.CharField(max_length=200)
    config_data = models.JSONField(default=dict, validators=[validate_persona_config])
    is_active = models.BooleanField(default=True)
    # Bumped on every write (see save() and personas.services); cached contexts are keyed by it.
    version = models.PositiveIntegerField(default=1, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = PERSONA_ORDER
        verbose_name = "persona"
        indexes = [models.Index(fields=["is_active", "display_name"], name="persona_active_name")]
        constraints = [
            # Every reader (contexts, the API, card exports, the prompt) takes the config as an object;
            # the validator checks it where a form or a service saves, and this where nothing does (the
            # shell, ``update()``), which made the persona a 500 everywhere it was read.
            models.CheckConstraint(
                condition=JsonIsObject("config_data"),
                name="persona_config_object",
                violation_error_message="The persona's config is a JSON object.",
            ),
        ]

    def __str__(self) -> str:
        # Django's admin puts this in its own sentences, breadcrumbs, headings and titles: a display
        # name from a card or an editor with a right-to-left override left open drew them backwards.
        # The isolate is the only change, and only for names holding right-to-left text or marks
        # (storyproject.bidi); django-reversion keeps the fields themselves, which revert puts back.
        return f"{bidi_isolated(self.display_name)} ({self.name})"

    def save(self, *args: object, **kwargs: object) -> None:
        # Every save is an edit: a new version makes every cached context of the old one unreachable.
        # A row loaded from the database is bumped; a new one (even with a given pk, as a recovered
        # persona is) is inserted with the version it was given.
        if not self._state.adding:
            self.version = models.F("version") + 1
        super().save(*args, **kwargs)  # type: ignore[arg-type]
        if self.pk is not None and not isinstance(self.version, int):
            self.refresh_from_db(fields=["version"])
            # django-reversion serialised the row in post_save, while ``version`` was still the F()
            # expression; serialised again here with the number (the later copy replaces the first).
            if reversion.is_active():
                reversion.add_to_revision(self)

    def clean(self) -> None:
        if self.name in RESERVED_NAMES:
            raise ValidationError({"name": reserved_name_message(self.name)})
        # A control character (an escape sequence, a line break) went on into the character names the
        # model wrote from it, and into generate_screenplay's terminal.
        if problem := one_line_problem(self.display_name):
            raise ValidationError({"display_name": f"The display name {problem}; it is one line."})
        # Only marks (U+200F, an override, zero-width spaces): the picker's button would be empty.
        if self.display_name and not text_visible(self.display_name):
            raise ValidationError(
                {"display_name": "The display name has no visible character; writers pick the persona by it."}
            )


def reserved_name_message(name: str) -> str:
    return (
        f"'{name}' is the address of the API's batch of contexts (/api/personas/{name}/): choose another key."
    )
