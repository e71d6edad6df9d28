"""schemathesis against our own OpenAPI schema, as a signed-in writer with stories of their own.

Every operation gets a bounded, derandomized set of generated requests (valid and invalid). A 5xx or
a response that does not match the schema fails the test. Runs in the default suite.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from django.core.wsgi import get_wsgi_application
from hypothesis import HealthCheck, settings
from rest_framework.authtoken.models import Token
from schemathesis.checks import content_type_conformance, not_a_server_error, response_schema_conformance

from stories.models import GenerationRun, ScreenplayVersion, Story

SCREENPLAY = {
    "title": "Fuzz",
    "characters": [{"name": "ANA", "persona": "hero"}],
    "scenes": [
        {"heading": "INT. LAB - DAY", "elements": [{"type": "dialogue", "character": "ANA", "text": "Go."}]}
    ],
}


@pytest.fixture
def auth_headers(user_factory: Any, persona_factory: Any, settings: Any) -> dict[str, str]:
    # The blocking generation endpoint runs the offline model: no pacing, so examples stay fast.
    settings.STORY_OFFLINE_TOKENS_PER_SECOND = 0
    writer = user_factory("fuzzer")
    persona_factory("hero")
    # Objects with small ids, so generated path parameters sometimes hit real rows.
    for index in range(3):
        story = Story.objects.create(owner=writer, title=f"Story {index}", plot="A plot.")
        run = GenerationRun.objects.create(
            user=writer, story=story, status="succeeded", model="offline", max_tokens=1024
        )
        ScreenplayVersion.objects.create(story=story, number=1, content=SCREENPLAY, model="offline", run=run)
        Story.objects.filter(pk=story.pk).update(latest_version_number=1)
    # Rows whose references are null, as every failed run and every edited version has: the schema
    # said "integer" for them and the responses held null.
    GenerationRun.objects.create(user=writer, status="failed", model="offline", max_tokens=1024)
    ScreenplayVersion.objects.create(story=story, number=2, content=SCREENPLAY, origin="edited", based_on=1)
    Story.objects.filter(pk=story.pk).update(latest_version_number=2)
    return {"Authorization": f"Token {Token.objects.create(user=writer).key}"}


# The schema endpoint needs no database; the app is called in-process through WSGI, so requests
# share the test's database transaction.
schema = schemathesis.openapi.from_wsgi("/api/schema/", get_wsgi_application())


# transaction=True: the blocking generation endpoint reaches the database through
# database_sync_to_async, which closes connections between calls; on PostgreSQL that cannot happen
# inside the test-case transaction a plain django_db test wraps everything in.
@pytest.mark.django_db(transaction=True)
@schema.parametrize()
@settings(
    max_examples=25,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_request_makes_the_api_fail_or_break_its_schema(case: Any, auth_headers: dict[str, str]) -> None:
    case.call_and_validate(
        headers=auth_headers,
        checks=[not_a_server_error, response_schema_conformance, content_type_conformance],
    )
