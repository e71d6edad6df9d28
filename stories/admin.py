from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin
from django.contrib.admin.views.main import ChangeList
from django.contrib.admin.widgets import AdminTextareaWidget
from django.db import transaction
from django.db.models import QuerySet
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest
from django.utils import timezone

from stories import limits, services
from stories.errors import ERROR_CODES
from stories.forms import StoryDetailsChecks, TitleField, plot_field
from stories.generation.models_registry import MODELS, max_tokens_limit, model_get
from stories.generation.requests import allowed_models
from stories.models import GenerationRun, GenerationSettings, ScreenplayVersion, Story, StoryCast
from stories.selectors import RUN_SEARCH_HELP, generation_runs_search, generation_settings_forget
from storyproject.forms import ServerCountsLength
from storyproject.search import CaseFoldedAdminSearch


class OwnStoriesMixin:
    """Staff who are not superusers see only their own stories and runs in the admin, and what they
    add is theirs: the owner is read-only for them, so they cannot file a story under another user."""

    owner_field = "owner"

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        queryset = super().get_queryset(request)  # type: ignore[misc]
        if request.user.is_superuser:
            return queryset
        return queryset.filter(**{self.owner_field: request.user})

    def get_readonly_fields(self, request: HttpRequest, obj: object = None) -> list[str]:
        fields = list(super().get_readonly_fields(request, obj))  # type: ignore[misc]
        if request.user.is_superuser:
            return fields
        return [*fields, self.owner_field]

    def save_model(self, request: HttpRequest, obj: Any, form: object, change: bool) -> None:
        if not change and not request.user.is_superuser:
            setattr(obj, self.owner_field, request.user)
        super().save_model(request, obj, form, change)  # type: ignore[misc]


# The story's change page lists this many of its versions, the latest first: a story can hold thousands
# (a script's edits), and all of them, each with its content, made a page of 3,000 versions 6,000 queries
# and 4 MB. Every version is on the writer's story page, paginated.
ADMIN_VERSIONS_SHOWN = 50


class LatestVersionsFormSet(BaseInlineFormSet):
    def get_queryset(self) -> QuerySet[ScreenplayVersion]:
        if not hasattr(self, "_latest"):
            self._latest = super().get_queryset().order_by("-number")[:ADMIN_VERSIONS_SHOWN]
        return self._latest


class ScreenplayVersionInline(admin.TabularInline):
    """The latest versions, read-only: numbers, models and runs, not their screenplays."""

    model = ScreenplayVersion
    formset = LatestVersionsFormSet
    verbose_name_plural = f"screenplay versions (the latest {ADMIN_VERSIONS_SHOWN})"
    fields = ("number", "model", "max_tokens", "run", "created_at")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = False

    def get_queryset(self, request: HttpRequest) -> QuerySet[ScreenplayVersion]:
        # The story too: each row is named after it (its title, "v3").
        return super().get_queryset(request).select_related("run", "story").defer("content", "story__plot")

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        # Nothing here is editable; view-only, the posted story form does not re-read the rows shown.
        return False


class StoryCastInline(admin.TabularInline):
    """The cast, read-only: it is what the latest version casts, each active persona playing one of its
    characters (stories.services), and changes with a new version. Edited here, a superuser cast a
    deactivated persona as a character the screenplay does not have, and Regenerate started from it."""

    model = StoryCast
    fields = ("persona", "character_name", "order")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def get_queryset(self, request: HttpRequest) -> QuerySet[StoryCast]:
        # Each row names its persona: read with it, not one query a member (a cast of 12 was 12 more).
        return super().get_queryset(request).select_related("persona")

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class StoryAdminForm(ServerCountsLength, StoryDetailsChecks, forms.ModelForm):
    """The title and plot checked as the writer's own edits are: saved here with a control character
    or past STORY_MAX_PLOT_CHARS, they made the story page's Regenerate refuse the writer's plot."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if "title" in self.fields:
            self.fields["title"] = TitleField(widget=self.fields["title"].widget)
            self.fields["title"].widget.attrs.pop("maxlength", None)  # as ServerCountsLength does
        if "plot" in self.fields:
            self.fields["plot"] = plot_field(widget=AdminTextareaWidget())
            self.fields["plot"].widget.attrs.pop("maxlength", None)  # as ServerCountsLength does


@admin.register(Story)
class StoryAdmin(OwnStoriesMixin, CaseFoldedAdminSearch):
    form = StoryAdminForm
    list_display = ["title", "owner", "latest_version_number", "updated_at"]
    search_fields = ["title", "plot", "owner__username"]
    list_filter = ["updated_at"]
    raw_id_fields = ["owner"]
    inlines = [StoryCastInline, ScreenplayVersionInline]

    def save_model(self, request: HttpRequest, obj: Story, form: Any, change: bool) -> None:
        if not change:
            super().save_model(request, obj, form, change)
            return
        # What the form changed, through the service: the whole row, saved as the admin had read it,
        # put back the version counter of a version saved meanwhile, whose number the next save of the
        # story then handed out again (an IntegrityError, that screenplay lost).
        fields = {name: form.cleaned_data[name] for name in ("title", "plot") if name in form.changed_data}
        services.story_update(story=obj, **fields)

    def get_readonly_fields(self, request: HttpRequest, obj: object = None) -> list[str]:
        # The owner is chosen when the story is added, never changed: its versions and runs are its
        # owner's; moved to another writer, the first one's run list showed the new owner's title for it,
        # and a generation of it under way failed ("forbidden"). The services have no such move.
        fields = super().get_readonly_fields(request, obj)
        return fields if obj is None or "owner" in fields else [*fields, "owner"]

    # Through the services, which lock the stories first: deleted as it came, a story whose version was
    # being saved meanwhile failed the delete at its commit on PostgreSQL (a 500).
    def delete_model(self, request: HttpRequest, obj: Story) -> None:
        services.story_delete(story=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Story]) -> None:
        services.stories_delete(stories=queryset)


class RunChangeList(ChangeList):
    """The runs' list reads none of what only a run's own page shows: the model text a run kept, its
    diagnostics and checkpoint (each up to hundreds of KB), and its story's plot."""

    def get_queryset(self, request: HttpRequest, exclude_parameters: Any = None) -> QuerySet:
        queryset = super().get_queryset(request, exclude_parameters)
        return queryset.defer("raw_text", "details", "checkpoint", "story__plot")


class RunModelFilter(admin.SimpleListFilter):
    """Runs by model, the choices being the models this site can run or has known (``MODELS``)."""

    title = "model"
    parameter_name = "model"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        names = dict.fromkeys([settings.OFFLINE_MODEL, *settings.STORY_MODELS, *MODELS])
        return [(name, name) for name in names]

    def queryset(self, request: HttpRequest, queryset: QuerySet[GenerationRun]) -> QuerySet[GenerationRun]:
        return queryset.filter(model=self.value()) if self.value() else queryset


class RunErrorFilter(admin.SimpleListFilter):
    """Runs by error code, the choices being the protocol's codes (reading none from the runs)."""

    title = "error code"
    parameter_name = "error_code"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(code, code) for code in sorted(ERROR_CODES)]

    def queryset(self, request: HttpRequest, queryset: QuerySet[GenerationRun]) -> QuerySet[GenerationRun]:
        return queryset.filter(error_code=self.value()) if self.value() else queryset


@admin.register(GenerationRun)
class GenerationRunAdmin(OwnStoriesMixin, CaseFoldedAdminSearch):
    owner_field = "user"
    list_display = [
        "id",
        "user",
        "story",
        "status",
        "mode",
        "model",
        "total_ms",
        "ttft_ms",
        "input_tokens",
        "output_tokens",
        "created_at",
    ]
    # The model's choices from the registry and the settings, and no date bar: both read their choices
    # from the whole runs table at every view (SELECT DISTINCT, 6-19 ms at 23,000 runs on PostgreSQL,
    # growing with it). The date filter's fixed ranges read nothing.
    list_filter = ["status", RunModelFilter, RunErrorFilter, "mode", "created_at"]
    # Searched by generation_runs_search (a username whole, a title's start: what an index serves), not
    # by Django's text-anywhere search of these fields; the error code is a filter.
    search_fields = ["user__username", "story__title"]
    search_help_text = RUN_SEARCH_HELP
    # Each row names its story: without it, one query per run (a page of 100 was 109 queries).
    list_select_related = ["user", "story"]

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return RunChangeList

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[GenerationRun], search_term: str
    ) -> tuple[QuerySet[GenerationRun], bool]:
        return generation_runs_search(runs=queryset, search=search_term), False

    def get_readonly_fields(self, request: HttpRequest, obj: object = None) -> list[str]:
        return [field.name for field in GenerationRun._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        # Viewable (read-only) but never editable: runs are measurements.
        return False

    def get_deleted_objects(self, objs: Any, request: HttpRequest) -> tuple[Any, Any, Any, list[str]]:
        # A run still going (or waiting to be resumed) cannot go: its save needs its row, and without it
        # the writer's screenplay was lost at the end, the run said to be "taken over" by another process.
        # A run of the last hour counts toward its user's STORY_GENERATIONS_PER_HOUR: deleted, it gave
        # its user (a staff author with the delete permission, on their own runs) that start back.
        deleted, counts, perms_needed, protected = super().get_deleted_objects(objs, request)
        hour_ago = timezone.now() - limits.RATE_WINDOW
        for run in objs:
            if run.status == GenerationRun.Status.STREAMING:
                protected.append(f"{run}: still running; delete it once it has ended.")
            elif run.created_at > hour_ago:
                until = timezone.localtime(run.created_at + limits.RATE_WINDOW)
                protected.append(
                    f"{run}: counts toward its writer's generations of the hour until "
                    f"{until:%Y-%m-%d %H:%M:%S %Z}; delete it after that."
                )
        return deleted, counts, perms_needed, protected


def default_model_choices() -> list[tuple[str, str]]:
    """The models an editor may make the default: the ones a writer may pick, named as the registry
    names them; empty keeps the STORY_MODEL setting."""
    labels = [
        (model, "Offline model" if model == settings.OFFLINE_MODEL else _model_label(model))
        for model in allowed_models()
    ]
    return [("", f"The STORY_MODEL setting ({settings.STORY_MODEL})"), *labels]


def _model_label(model_id: str) -> str:
    model = model_get(model_id)
    return f"{model.label} ({model_id})" if model else model_id


FORMATTING_RULES_MAX_CHARS = 20_000


class GenerationSettingsForm(forms.ModelForm):
    # A choice, not free text: a retired or misspelt model is refused here, not on every generation.
    default_model = forms.ChoiceField(
        choices=default_model_choices, required=False, help_text="Empty: the STORY_MODEL setting."
    )

    # The rules go into every system prompt: a bound, as a writer's plot has one.
    formatting_rules = forms.CharField(
        required=False,
        max_length=FORMATTING_RULES_MAX_CHARS,
        widget=forms.Textarea,
        strip=False,
        help_text="Screenplay format rules added to the system prompt. Empty: the built-in rules.",
    )

    class Meta:
        model = GenerationSettings
        fields = ["default_model", "default_max_tokens", "formatting_rules"]

    def clean_default_max_tokens(self) -> int | None:
        # A run takes the default within the bounds a writer's request has: a value outside them was
        # saved here and then silently clamped on every run.
        value: int | None = self.cleaned_data["default_max_tokens"]
        low, high = settings.STORY_MIN_MAX_TOKENS, settings.STORY_MAX_MAX_TOKENS
        if value is not None and not low <= value <= high:
            raise forms.ValidationError(
                f"Between {low} and {high} (STORY_MIN_MAX_TOKENS and STORY_MAX_MAX_TOKENS), the bounds "
                "of a writer's own max_tokens."
            )
        if value is not None and (
            refusal := _max_output_refusal(value, self.cleaned_data.get("default_model"))
        ):
            raise forms.ValidationError(refusal)
        return value


def _max_output_refusal(value: int, default_model: str | None) -> str | None:
    """Why ``value`` cannot be every run's default: the default model, or another a writer may pick,
    cannot be given that much (it would be cut to its max output on every call, without a word)."""
    budget = settings.STORY_THINKING_BUDGET_TOKENS
    for model_id in dict.fromkeys([default_model or settings.STORY_MODEL, *allowed_models()]):
        limit = max_tokens_limit(model_id, budget_tokens=budget)
        if limit is not None and value > limit:
            return (
                f"At most {limit} for {_model_label(model_id)}, a model writers may use: its max output, "
                "less the tokens set aside for thinking. A larger default would be cut to that on every run."
            )
    return None


@admin.register(GenerationSettings)
class GenerationSettingsAdmin(admin.ModelAdmin):
    form = GenerationSettingsForm
    list_display = ["__str__", "default_model", "default_max_tokens", "updated_at"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        # The user's own add permission first: without it a staff user with no permissions at all
        # could create the row that sets every writer's defaults and format rules.
        return super().has_add_permission(request) and not GenerationSettings.objects.exists()

    def save_model(self, request: HttpRequest, obj: GenerationSettings, form: object, change: bool) -> None:
        super().save_model(request, obj, form, change)
        transaction.on_commit(generation_settings_forget)

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False
