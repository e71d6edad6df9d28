"""Structured outputs write required properties first: a reply cut at max_tokens still carries its cast.

The fake server orders every JSON reply as the API does under ``output_config`` (required properties
first, in schema order, then optional ones) and cuts it at the request's max_tokens. With a schema that
required only the title and the scenes, the cast came after the scenes and a cut reply lost it.
"""

from __future__ import annotations

from typing import Any

import pytest

from stories.models import GenerationRun, ScreenplayVersion
from tests.fake_anthropic import FakeAnthropic
from tests.stories.generation.conftest import continuing_writer, screenplay, ws_generate

pytestmark = pytest.mark.django_db(transaction=True)


async def test_a_required_first_reply_cut_at_max_tokens_completes_with_its_cast_and_is_saved(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    expected = screenplay(scenes=4)
    for scene in expected["scenes"]:
        scene["summary"] = f"What happens in {scene['heading']}."
    fake_anthropic.default = continuing_writer(expected)
    events = await ws_generate(writer, max_tokens=300)
    assert events[-1]["type"] == "done", events[-1]
    version = await ScreenplayVersion.objects.aget()
    assert version.content == expected
    run = await GenerationRun.objects.aget()
    assert run.continuations >= 1 and run.status == "succeeded"
    # The first reply was cut after its cast (it came before the scenes), and the cast went back to
    # the model with the scenes so far.
    partial = fake_anthropic.requests[1].body["messages"][1]["content"]
    assert partial.index('"characters"') < partial.index('"scenes"')
    assert '"SAM SPADE"' in partial and '"BRIGID"' in partial
