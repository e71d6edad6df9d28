from __future__ import annotations

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from storyproject.bidi import bidi_isolated


class GenerationSettings(models.Model):
    """Settings editors change without a deploy. One row (pk=1); read through stories.selectors."""

    default_model = models.CharField(max_length=100, blank=True, help_text="Empty: the STORY_MODEL setting.")
    default_max_tokens = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(256), MaxValueValidator(64_000)],
        help_text="Empty: STORY_MAX_TOKENS.",
    )
    formatting_rules = models.TextField(
        blank=True,
        help_text="Screenplay format rules added to the system prompt. Empty: the built-in rules.",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "generation settings"
        verbose_name_plural = "generation settings"

    def __str__(self) -> str:
        return "Generation settings"

    def save(self, *args: object, **kwargs: object) -> None:
        # There is one row; whatever the admin posts lands on it.
        self.pk = 1
        super().save(*args, **kwargs)  # type: ignore[arg-type]


class Story(models.Model):
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="stories")
    title = models.CharField(max_length=200)
    plot = models.TextField()
    # The highest version number handed out; incremented in one UPDATE so numbers are race-free.
    latest_version_number = models.PositiveIntegerField(default=0, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at", "-id"]
        verbose_name_plural = "stories"
        indexes = [models.Index(fields=["owner", "-updated_at"], name="story_owner_recent")]

    def __str__(self) -> str:
        # Django's admin puts this in its own sentences, breadcrumbs and titles (as a version's and a
        # run's name too): a writer's title with a right-to-left override left open drew the rest of a
        # delete confirmation backwards. Isolated as a persona's display name is (storyproject.bidi).
        return bidi_isolated(self.title)


class GenerationRun(models.Model):
    class Status(models.TextChoices):
        STREAMING = "streaming"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"

    class Mode(models.TextChoices):
        SINGLE = "single"
        PARALLEL = "parallel"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="generation_runs"
    )
    story = models.ForeignKey(Story, null=True, blank=True, on_delete=models.SET_NULL, related_name="runs")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.STREAMING)
    mode = models.CharField(max_length=16, choices=Mode.choices, default=Mode.SINGLE)
    model = models.CharField(max_length=100)
    max_tokens = models.PositiveIntegerField()
    persona_names = models.JSONField(default=list)
    context_ms = models.PositiveIntegerField(null=True, blank=True)
    prompt_ms = models.PositiveIntegerField(null=True, blank=True)
    ttft_ms = models.PositiveIntegerField(null=True, blank=True)
    llm_ms = models.PositiveIntegerField(null=True, blank=True)
    save_ms = models.PositiveIntegerField(null=True, blank=True)
    total_ms = models.PositiveIntegerField(null=True, blank=True)
    input_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    cache_read_tokens = models.PositiveIntegerField(default=0)
    cache_write_tokens = models.PositiveIntegerField(default=0)
    # True when a call was cut off (cancelled, dropped) before the provider's final usage: its
    # output tokens are estimated from the text received (stories.generation.backends.base).
    usage_estimated = models.BooleanField(default=False)
    continuations = models.PositiveIntegerField(default=0)
    stop_reason = models.CharField(max_length=40, blank=True)
    error_code = models.CharField(max_length=40, blank=True)
    error_message = models.TextField(blank=True)
    # A failed run keeps the model text it received, so nothing paid for is lost.
    raw_text = models.TextField(blank=True)
    details = models.JSONField(default=dict, blank=True, help_text="Per-call usage and other diagnostics.")
    # The lease of a running run (docs/generation.md, "Leases, checkpoints and resume"): the process
    # that runs it ("host:pid:random") renews lease_expires_at every third of STORY_RUN_LEASE_SECONDS;
    # a "streaming" run whose lease has expired is orphaned, and any process may claim it and resume it.
    lease_owner = models.CharField(max_length=120, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    # What a resumed run needs: its request, and the finished work so far (the outline and finished
    # scenes in parallel mode, the complete scenes in single mode) with the usage it cost.
    # Emptied when the run ends (the version, or raw_text, keeps the text).
    checkpoint = models.JSONField(default=dict, blank=True)
    # A digest of the credential (API token or session) that started the run, "" when none did (a
    # command): its revocation cancels the run wherever it is followed from (stories.consumers).
    started_by = models.CharField(max_length=64, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["user", "-created_at"], name="run_user_recent"),
            models.Index(fields=["-created_at"], name="run_recent"),
            models.Index(fields=["status", "created_at"], name="run_status"),
            # The orphan scan reads the streaming runs (a few hundred at most) and keeps those whose lease
            # has expired. lease_expires_at is in no index, so a lease renewal or a checkpoint, which
            # change only it and checkpoint, can be a HOT update on PostgreSQL (no new index entries;
            # migration 0005 leaves room on each page for it).
            models.Index(fields=["created_at"], condition=models.Q(status="streaming"), name="run_streaming"),
        ]

    def __str__(self) -> str:
        return f"Run {self.pk} ({self.status})"


class ScreenplayVersion(models.Model):
    class Origin(models.TextChoices):
        # Written by a model: it has a model, usually a run, and a cost.
        GENERATED = "generated"
        # Written by the writer: no model, no run, no cost.
        EDITED = "edited", "edited by the writer"
        RESTORED = "restored", "restored by the writer"
        IMPORTED = "imported", "imported by the writer"

    story = models.ForeignKey(Story, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    content = models.JSONField(help_text="A screenplay matching stories/contract/screenplay.schema.json.")
    origin = models.CharField(max_length=16, choices=Origin.choices, default=Origin.GENERATED)
    # The version an edit started from, or the one a restore copied; None for the rest.
    based_on = models.PositiveIntegerField(null=True, blank=True)
    model = models.CharField(max_length=100, blank=True)
    max_tokens = models.PositiveIntegerField(null=True, blank=True)
    run = models.OneToOneField(
        GenerationRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="version"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["story", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["story", "number"], name="version_unique_number"),
        ]

    def __str__(self) -> str:
        return f"{self.story} v{self.number}"


class StoryCast(models.Model):
    story = models.ForeignKey(Story, on_delete=models.CASCADE, related_name="cast")
    persona = models.ForeignKey("personas.PersonaConfig", on_delete=models.PROTECT, related_name="castings")
    character_name = models.CharField(max_length=80)
    order = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["story", "order"]
        verbose_name = "cast member"
        constraints = [
            models.UniqueConstraint(fields=["story", "persona"], name="cast_unique_persona"),
        ]

    def __str__(self) -> str:
        return f"{bidi_isolated(self.character_name)} ({self.persona_id})"
