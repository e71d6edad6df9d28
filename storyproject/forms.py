"""Form fields shared by the admin and the pages."""

from __future__ import annotations

from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.forms.fields import InvalidJSONInput, JSONString

from storyproject.untrusted import UntrustedJSONError, json_loads_untrusted


class UntrustedJSONField(forms.JSONField):
    """Django's JSONField, parsing with ``json_loads_untrusted``: hostile JSON is a form error naming it.

    Django's own field catches ``JSONDecodeError`` only, so deep nesting and 5,000-digit integers
    escaped as 500s, and NUL, lone surrogates and 1e400 reached the database (or the page re-rendering
    the value) and failed there.
    """

    def to_python(self, value: Any) -> Any:
        if self.disabled or value in self.empty_values or not isinstance(value, str):
            return super().to_python(value)
        try:
            converted = json_loads_untrusted(value)
        except UntrustedJSONError as error:
            raise ValidationError(str(error), code="invalid") from None
        return JSONString(converted) if isinstance(converted, str) else converted

    def bound_data(self, data: Any, initial: Any) -> Any:
        # Re-rendering a refused value must not fail either: it is shown as the text that was sent.
        if self.disabled or not isinstance(data, str):
            return super().bound_data(data, initial)
        try:
            return json_loads_untrusted(data)
        except UntrustedJSONError:
            return InvalidJSONInput(data)


class ServerCountsLength:
    """A form mixin that renders no ``maxlength``: a browser counts it in UTF-16 units and cuts a paste
    there without a word (100 emoji, or rare CJK characters, filled a field of 200), where the field's
    own check counts characters, says what is too long and keeps the text."""

    fields: dict[str, forms.Field]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for field in self.fields.values():
            field.widget.attrs.pop("maxlength", None)
