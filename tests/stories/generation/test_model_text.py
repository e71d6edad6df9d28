"""What a model may write inside valid-looking JSON that is no screenplay we can keep: a scene that
does not parse (a lone surrogate escape), text the database cannot store (NUL). Each is one clean
``invalid_output``, the failed run recorded with its text, and nothing saved, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from typing import Any

import pytest

from stories.models import GenerationRun, ScreenplayVersion
from tests.fake_anthropic import FakeAnthropic, Reply
from tests.fake_screenwriter import FakeScreenwriter, screenplay_as_assembled, screenplay_outline
from tests.stories.generation.conftest import continuing_writer, screenplay, ws_generate

pytestmark = pytest.mark.django_db(transaction=True)


async def test_a_scene_that_is_not_json_in_a_reply_cut_at_max_tokens_fails_and_is_not_skipped(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    # Scene 2 holds "\ud83d" alone: valid JSON syntax, which no JSON parser here turns into text. It
    # was skipped: scene 3 went out as index 1, the continuation was asked for the scenes after the
    # second and wrote scene 3 again, and the screenplay was saved without scene 2.
    expected = screenplay(scenes=5)
    broken = json.dumps(expected).replace("take 2.", "take 2 \\ud83d.")
    writes = continuing_writer(expected)

    def reply(body: dict[str, Any]) -> Reply:
        if len(body["messages"]) == 1:
            return Reply(text=broken, cut_at_max_tokens=True)
        return writes(body)

    fake_anthropic.default = reply
    events = await ws_generate(writer, max_tokens=400)
    error = events[-1]
    assert (error["type"], error["code"], error["retryable"]) == ("error", "invalid_output", False)
    assert "scene 2" in error["message"]
    scenes = [(e["index"], e["scene"]["heading"]) for e in events if e["type"] == "scene"]
    # Scene 1 may come in the same read as the end of scene 2, so it may not be shown; nothing after is.
    assert set(scenes) <= {(0, "INT. OFFICE 1 - NIGHT")}
    assert len(fake_anthropic.requests) == 1
    assert await ScreenplayVersion.objects.acount() == 0
    run = await GenerationRun.objects.aget()
    assert (run.status, run.error_code, run.continuations) == ("failed", "invalid_output", 0)
    assert "\\ud83d" in run.raw_text


async def test_a_nul_in_a_single_mode_scene_is_invalid_output_not_a_database_failure(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    # "\u0000" parses (into a NUL), which PostgreSQL refuses in jsonb: the scene's checkpoint failed and
    # the writer was told the server's database failed (llm_unavailable, retryable); SQLite saved it.
    text = json.dumps(screenplay(scenes=2)).replace("take 1.", "take \\u0000 1.")
    fake_anthropic.script(Reply(text=text))
    events = await ws_generate(writer)
    error = events[-1]
    assert (error["type"], error["code"], error["retryable"]) == ("error", "invalid_output", False)
    assert "scene 1: elements/0/text: contains a NUL" in error["message"]
    assert "scene" not in [e["type"] for e in events]
    assert await ScreenplayVersion.objects.acount() == 0
    run = await GenerationRun.objects.aget()
    assert (run.status, run.error_code) == ("failed", "invalid_output")
    # The text received up to the failure (the call is hung up on at once).
    assert text.startswith(run.raw_text) and "\\u0000" in run.raw_text


async def test_a_nul_in_a_parallel_scene_is_retried_like_any_invalid_scene(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    expected = screenplay(scenes=2)
    screenwriter = FakeScreenwriter(expected, tokens_per_second=4000, chunk_chars=8)
    bad = json.loads(json.dumps(expected["scenes"][1]))
    bad["elements"][0]["text"] = "Rain\x00 on the window."
    screenwriter.fail_scene(1, Reply(text=json.dumps({"outline": None, "scene": bad}), chunk_chars=8))
    fake_anthropic.default = screenwriter
    events = await ws_generate(writer, timeout=20, mode="parallel")
    assert events[-1]["type"] == "done", events[-1]
    assert [e["code"] for e in events if e["type"] == "scene_retry"] == ["invalid_output"]
    version = await ScreenplayVersion.objects.aget()
    assert "\x00" not in json.dumps(version.content, ensure_ascii=False)
    assert version.content == screenplay_as_assembled(expected)


async def test_a_nul_in_the_outline_is_invalid_output(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    outline = screenplay_outline(screenplay(scenes=2))
    outline["logline"] = "A detective\x00 and a liar."
    fake_anthropic.script(Reply(text=json.dumps({"outline": outline, "scene": None})))
    events = await ws_generate(writer, timeout=20, mode="parallel")
    error = events[-1]
    assert (error["type"], error["code"]) == ("error", "invalid_output"), error
    assert "NUL" in error["message"]
    run = await GenerationRun.objects.aget()
    assert (run.status, run.error_code) == ("failed", "invalid_output")


async def test_a_failed_run_whose_text_holds_a_nul_is_still_recorded(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    # A NUL character in the text itself (the stream's JSON sends it as "\u0000"): the reply is not
    # JSON, and on PostgreSQL the failed run's raw_text could not be written, so the run stayed
    # "streaming" with its usage unrecorded until a resume closed it "interrupted".
    text = json.dumps(screenplay(scenes=2)).replace("take 1.", "take \x00 1.")
    fake_anthropic.script(Reply(text=text))
    events = await ws_generate(writer)
    assert (events[-1]["type"], events[-1]["code"]) == ("error", "invalid_output")
    run = await GenerationRun.objects.aget()
    assert (run.status, run.error_code) == ("failed", "invalid_output")
    assert run.lease_owner == "" and run.output_tokens > 0
    # The text received up to the scene that does not parse (the run ends there: the rest may not have
    # arrived yet), its NUL kept as U+FFFD.
    assert "take \ufffd 1." in run.raw_text
    assert text.replace("\x00", "\ufffd").startswith(run.raw_text)


async def test_a_model_s_character_with_an_open_override_is_isolated_in_the_error(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    # The message quotes the model's name for the speaker: an open U+202E in it drew the rest of the
    # message ("who is not in the cast list") backwards on the page.
    content = screenplay(scenes=1)
    content["scenes"][0]["elements"].append({"type": "dialogue", "character": "\u202eGHOST", "text": "Boo."})
    fake_anthropic.script(Reply(text=json.dumps(content)))
    events = await ws_generate(writer)
    error = events[-1]
    assert error["type"] == "error" and error["code"] == "invalid_output"
    assert "gives a line to '\u2068\u202eGHOST\u2069', who is not in the cast list" in error["message"]


@pytest.mark.parametrize("mode", ["single", "parallel"])
async def test_a_model_s_character_listed_in_two_capitals_is_saved_as_one_under_its_first_spelling(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic, mode: str
) -> None:
    # "SAM SPADE" and "Sam Spade" were saved as two characters, each with lines: the page and every
    # export print both cues as SAM SPADE. Now one, as first listed (with its persona), every cue his.
    written = screenplay(scenes=2)
    written["characters"].append({"name": "Sam Spade", "description": "The same man."})
    written["scenes"][1]["elements"][1]["character"] = "Sam Spade"
    if mode == "parallel":
        fake_anthropic.default = FakeScreenwriter(written)
    else:
        fake_anthropic.script(Reply(text=json.dumps(written)))
    events = await ws_generate(writer, timeout=20, mode=mode)
    assert events[-1]["type"] == "done", events[-1]
    version = await ScreenplayVersion.objects.aget()
    assert [c["name"] for c in version.content["characters"]] == ["SAM SPADE", "BRIGID"]
    assert version.content["characters"][0]["persona"] == "noir-detective"
    cues = {
        e["character"] for s in version.content["scenes"] for e in s["elements"] if e["type"] == "dialogue"
    }
    assert cues == {"SAM SPADE", "BRIGID"}
