"""The writer's pages' forms (the API's fields are its serializers', stories/serializers.py)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings

from stories.selectors import DETAILS_STAMP
from stories.validation import text_field_problem, text_trimmed, title_problem


class StoryDetailsChecks:
    """The checks of a story's title and plot, for a form with those two fields: the writer's settings
    form below and the admin's story form (stories.admin) check them as ``PATCH`` does."""

    cleaned_data: dict[str, Any]

    def clean_title(self) -> str:
        title: str = self.cleaned_data["title"]
        problem = title_problem(title)
        if problem is not None:
            raise forms.ValidationError(f"The title {problem}.", code="invalid")
        return title

    def clean_plot(self) -> str:
        plot: str = self.cleaned_data["plot"]
        if not plot.strip():
            raise forms.ValidationError("Write the plot: Regenerate starts from it.", code="required")
        problem = text_field_problem(plot)
        if problem is not None:
            raise forms.ValidationError(f"The plot {problem}.", code="invalid")
        return plot


class TitleField(forms.CharField):
    """A story's title as a form field: trimmed of white space only, as the API's title is
    (``stories.validation.text_trimmed``): Django's ``strip`` cut a control character off its edge
    (U+001F, U+0085...) and saved the title, where the API and the checks refuse it."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(max_length=200, strip=False, **kwargs)

    def to_python(self, value: Any) -> str | None:
        text = super().to_python(value)
        return text_trimmed(text) if isinstance(text, str) else text


def plot_field(widget: forms.Widget | None = None) -> forms.CharField:
    """A story's plot as a form field, with STORY_MAX_PLOT_CHARS as it is now (tests change it)."""
    return forms.CharField(
        max_length=settings.STORY_MAX_PLOT_CHARS,
        strip=False,
        widget=widget or forms.Textarea(attrs={"rows": 8}),
    )


class StoryDetailsForm(StoryDetailsChecks, forms.Form):
    """A story's title and plot, as ``PATCH /api/stories/{id}/`` takes them, with the same checks."""

    title = TitleField()
    # The settings page's hidden stamp of the title and plot it showed (selectors.story_details_stamp);
    # a form without it saves as before. Any other shape was not sent by the page: it was taken for a
    # change made meanwhile (a 409 saying so) and echoed back into the page as it came.
    details_stamp = forms.RegexField(
        regex=DETAILS_STAMP,
        required=False,
        error_messages={
            "invalid": "This form is incomplete or was changed on the way, so nothing was saved: reload "
            "the page and make your change again."
        },
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["plot"] = plot_field()
