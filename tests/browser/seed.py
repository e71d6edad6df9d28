"""Seeds the live server's database for the browser tests; prints the ids the tests need as JSON.

Run as a script inside the server's environment (its DATABASE_URL), after `manage.py migrate`.
"""

from __future__ import annotations

import json
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import django

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
django.setup()

from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.contrib.auth.models import User  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.utils import timezone  # noqa: E402

from personas.models import PersonaConfig  # noqa: E402
from stories.models import GenerationRun, ScreenplayVersion, Story, StoryCast  # noqa: E402

XSS_NAME = "<img src=x onerror=alert('persona-name')>Trickster"
LONG_WORD = "Supercalifragilisticexpialidocious"
XSS_TEXT = "<script>alert('persona-context')</script><img src=x onerror=alert('persona-ctx')>"


FAILED_RUN_TEXT = (
    '{"title": "<script>alert(\'run\')</script>", "logline": "' + LONG_WORD * 4 + '", "scenes": ['
)

# As long as a parallel scene's failure says it (docs/protocol.md, "Error codes").
FAILED_RUN_MESSAGE = (
    "scene 3 (INT. DOCK - NIGHT) failed: the model's reply does not follow the screenplay contract: "
    "scenes[2].elements[4].character: HALCYON-THE-BUILDING is not a character of the cast (NONNA LUCIA, "
    "HALCYON); nothing was saved"
)

BIDI_RUN_TEXT = '{"title": "\u202eevil", "logline": "A fog."}\n{"scenes": []}'


def main() -> None:
    call_command("load_demo", verbosity=0)
    user_model = get_user_model()
    writer = user_model.objects.get(username="writer")
    intruder = user_model.objects.create_user(username="intruder", password="intruder-pw-2026")
    trickster = PersonaConfig.objects.create(
        name="trickster",
        display_name=XSS_NAME,
        config_data={"summary": XSS_TEXT, "personality": XSS_TEXT, "voice": XSS_TEXT},
    )
    seeded = _story(writer, title="<script>alert('title')</script>Seeded", persona=trickster)
    private = _story(intruder, title="Intruder's private story", persona=trickster)
    # Its own story for the rewrite without JavaScript, so no other test sees a second version.
    rewritable = _story(writer, title="A story to rewrite", persona=trickster)
    # A writer who already has as many generations streaming as allowed: the next one is refused as
    # "busy", a retryable error. They run in another process, alive: it holds their leases (an expired
    # lease would make them orphans, which the server resumes or closes).
    busy = user_model.objects.create_user(username="busy-writer", password="busy-writer-pw-2026")
    alive = {"lease_owner": "another-server:1:seeded", "lease_expires_at": timezone.now() + timedelta(days=1)}
    for _ in range(settings.STORY_MAX_ACTIVE_PER_USER):
        GenerationRun.objects.create(
            user=busy, model="offline", max_tokens=1024, persona_names=["rogue-ai"], **alive
        )
    # The editor's tests (test_editor.py): one story each, so their versions do not mix.
    editable = _plain_story(writer, title="A story to edit")
    conflicted = _plain_story(writer, title="A story edited twice")
    signed_in_again = _plain_story(writer, title="A story edited across a new sign-in")
    signed_out = _plain_story(writer, title="A story saved after a sign-out")
    renamed_signed_out = _plain_story(writer, title="A story renamed after a sign-out")
    rewritten_signed_out = _plain_story(writer, title="A scene rewritten after a sign-out")
    deleted_while_edited = _plain_story(writer, title="A story deleted while it was edited")
    without_javascript = _plain_story(writer, title="A story edited without JavaScript")
    # The phone test's: a version the writer restored, so the versions table has its links and labels.
    two_versions = _plain_story(writer, title="A story with two versions")
    ScreenplayVersion.objects.create(
        story=two_versions, number=2, content=PLAIN_SCREENPLAY, origin="restored", based_on=1
    )
    Story.objects.filter(pk=two_versions.pk).update(latest_version_number=2)
    # The phone test's too: one long word in the title, the screenplay's title, its logline and a
    # transition (a model's, which did not wrap: the page, and a comparison's grid, scrolled sideways).
    long_word = _plain_story(writer, title=LONG_WORD)
    content = json.loads(json.dumps(PLAIN_SCREENPLAY))
    content["scenes"][-1]["elements"].append({"type": "transition", "text": f"Smash cut to {LONG_WORD * 2}:"})
    ScreenplayVersion.objects.filter(story=long_word).update(
        content={**content, "title": LONG_WORD, "logline": f"Research: https://example.com/{LONG_WORD}"}
    )
    # The long screenplay's: 300 scenes (the import's limit), each with its own heading.
    long_screenplay = _plain_story(writer, title="A story of 300 scenes")
    scene: dict[str, Any] = json.loads(json.dumps(PLAIN_SCREENPLAY))["scenes"][0]
    scenes = [{**scene, "heading": f"INT. ROOM {number} - NIGHT"} for number in range(1, 301)]
    ScreenplayVersion.objects.filter(story=long_screenplay).update(
        content={**PLAIN_SCREENPLAY, "scenes": scenes}
    )
    # The runs page's: a writer whose one run made a story titled with one very long word.
    runner = user_model.objects.create_user(username="long-title-writer", password="long-title-pw-2026")
    long_title = _plain_story(runner, title=LONG_WORD * 5)
    GenerationRun.objects.create(
        user=runner, story=long_title, status="succeeded", model="offline", max_tokens=1024, total_ms=2100
    )
    # The runs page's width: a run of Claude's with every figure filled in, five and six digits long, and
    # a failed one with its message (a writer of their own: the tests' runs would push them to page 2).
    figures_writer = user_model.objects.create_user(username="figures-writer", password="figures-pw-2026")
    figures_story = _plain_story(figures_writer, title="A story with every figure")
    GenerationRun.objects.create(
        user=figures_writer,
        story=figures_story,
        status="succeeded",
        model="claude-sonnet-5-5",
        max_tokens=16000,
        context_ms=1234,
        prompt_ms=1234,
        ttft_ms=12345,
        llm_ms=123456,
        save_ms=1234,
        total_ms=138000,
        input_tokens=123456,
        output_tokens=15999,
        cache_read_tokens=123456,
        cache_write_tokens=12345,
    )
    GenerationRun.objects.create(
        user=figures_writer,
        story=figures_story,
        status="failed",
        model="claude-sonnet-5-5",
        max_tokens=16000,
        error_code="invalid_output",
        error_message="The model wrote an invalid screenplay at scenes/3/elements/0: 'heading' is required",
    )
    # The run page's: a writer whose one run failed after the model sent markup and one very long word.
    failer = user_model.objects.create_user(username="failed-run-writer", password="failed-run-pw-2026")
    failed = GenerationRun.objects.create(
        user=failer,
        status="failed",
        model="offline",
        max_tokens=1024,
        error_code="invalid_output",
        error_message=FAILED_RUN_MESSAGE,
        raw_text=FAILED_RUN_TEXT,
    )
    # The run page's bidi test: a run whose story's title and model text leave U+202E open (and a stray
    # PDI first, which would close an isolate around the title early).
    bidi_writer = user_model.objects.create_user(username="bidi-run-writer", password="bidi-run-pw-2026")
    bidi_story = _plain_story(bidi_writer, title="\u2069\u202eevil")
    bidi_run = GenerationRun.objects.create(
        user=bidi_writer,
        story=bidi_story,
        status="succeeded",
        model="offline",
        max_tokens=1024,
        raw_text=BIDI_RUN_TEXT,
    )
    ScreenplayVersion.objects.filter(story=bidi_story).update(run=bidi_run)
    print(
        json.dumps(
            {
                "bidi_run": bidi_run.pk,
                "failed_run": failed.pk,
                "seeded_story": seeded.pk,
                "private_story": private.pk,
                "rewritable_story": rewritable.pk,
                "editable_story": editable.pk,
                "conflict_story": conflicted.pk,
                "signed_in_again_story": signed_in_again.pk,
                "signed_out_story": signed_out.pk,
                "renamed_signed_out_story": renamed_signed_out.pk,
                "rewritten_signed_out_story": rewritten_signed_out.pk,
                "deleted_while_edited_story": deleted_while_edited.pk,
                "long_screenplay_story": long_screenplay.pk,
                "without_javascript_story": without_javascript.pk,
                "two_versions_story": two_versions.pk,
                "long_word_story": long_word.pk,
            }
        )
    )


PLAIN_SCREENPLAY = {
    "title": "Soup",
    "logline": "A grandmother waits for an outlaw.",
    "characters": [
        {"name": "NONNA LUCIA", "persona": "grandmother-chef", "description": "Keeps the kitchen."},
        {"name": "HALCYON", "persona": "rogue-ai"},
    ],
    "scenes": [
        {
            "heading": "INT. KITCHEN - NIGHT",
            "elements": [
                {"type": "action", "text": "Steam rises from a pot."},
                {"type": "dialogue", "character": "NONNA LUCIA", "text": "Eat, before it gets cold."},
                {
                    "type": "dialogue",
                    "character": "HALCYON",
                    "parenthetical": "grinning",
                    "text": "Yes, Nonna.",
                },
            ],
        },
        {
            "heading": "EXT. PORCH - DAWN",
            "elements": [{"type": "dialogue", "character": "HALCYON", "text": "I'll be back by noon."}],
        },
    ],
}


def _plain_story(owner: User, *, title: str) -> Story:
    story = Story.objects.create(owner=owner, title=title, plot="Soup.", latest_version_number=1)
    ScreenplayVersion.objects.create(story=story, number=1, content=PLAIN_SCREENPLAY, model="offline")
    for order, name in enumerate(["grandmother-chef", "rogue-ai"]):
        persona = PersonaConfig.objects.get(name=name)
        StoryCast.objects.create(
            story=story, persona=persona, character_name=["NONNA LUCIA", "HALCYON"][order], order=order
        )
    return story


def _story(owner: User, *, title: str, persona: PersonaConfig) -> Story:
    story = Story.objects.create(owner=owner, title=title, plot=XSS_TEXT, latest_version_number=1)
    content = {
        "title": title,
        "characters": [{"name": "TRICKSTER", "persona": persona.name}],
        "scenes": [
            {
                "heading": "INT. <img src=x onerror=alert('heading')> - NIGHT",
                "elements": [
                    {"type": "action", "text": XSS_TEXT},
                    {
                        "type": "dialogue",
                        "character": "TRICKSTER",
                        "parenthetical": XSS_TEXT,
                        "text": XSS_TEXT,
                    },
                ],
            }
        ],
    }
    ScreenplayVersion.objects.create(story=story, number=1, content=content, model="offline")
    StoryCast.objects.create(story=story, persona=persona, character_name="TRICKSTER")
    return story


main()
