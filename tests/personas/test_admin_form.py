"""The persona editor's per-part form (issue 18), used through the admin pages as a browser would."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from django.forms import Textarea
from django.test import Client

from personas.context import persona_context_text
from personas.models import PersonaConfig

CONFIG: dict[str, Any] = {
    "voice": "Gravel.",
    "description": "Ein müder Detektiv aus Köln. 東京にも行った。",
    "tags": ["noir", "détective"],
    "example_lines": ["Ça suffit, hein.", "Rain again, of course."],
    "private": {"creator": "Zoë", "notes": ["ne pas oublier", {"深い": [1, 2.5, None]}]},
    "extensions": {"depth_prompt": {"prompt": "«Toujours»", "depth": 4}, "talkativeness": "0.5", "x": []},
    "x_custom": {"nested": {"emoji": "🕵️", "list": [True, False]}},
    "context": {"voice": "older shape, kept as is"},
    "z_last": "Ünknown top-level key",
}
KEPT = ["description", "tags", "example_lines", "private", "extensions", "x_custom", "context", "z_last"]


def _change_url(persona: PersonaConfig) -> str:
    return f"/admin/personas/personaconfig/{persona.pk}/change/"


def _as_browser_posts(client: Client, url: str, **changes: str) -> dict[str, Any]:
    """The form's fields as the page renders them, sent back the way a browser does (CRLF line ends)."""
    form = client.get(url).context["adminform"].form
    data = {}
    for field in form:
        value = field.value()
        if isinstance(value, bool):
            if value:
                data[field.html_name] = "on"
            continue
        # The page's HTML parser reads CRLF and a lone CR as LF; a form sends each line end of a text
        # area as CRLF, and drops those of a one-line input.
        text = "" if value is None else re.sub(r"\r\n?", "\n", str(value))
        one_line = not isinstance(field.field.widget, Textarea)
        data[field.html_name] = text.replace("\n", "") if one_line else text.replace("\n", "\r\n")
    return {**data, **changes}


def _dumped(value: object) -> str:
    return json.dumps(value, ensure_ascii=False)


@pytest.mark.django_db
def test_unknown_keys_extensions_and_non_ascii_text_survive_a_form_save_byte_for_byte(
    editor_client: Client,
) -> None:
    persona = PersonaConfig.objects.create(name="kommissar", display_name="Kommissar", config_data=CONFIG)
    persona.refresh_from_db()
    before = persona.config_data
    url = _change_url(persona)
    response = editor_client.post(url, _as_browser_posts(editor_client, url, voice="Gravel, now softer."))
    assert response.status_code == 302
    persona.refresh_from_db()
    assert persona.config_data["voice"] == "Gravel, now softer."
    for key in KEPT:
        assert _dumped(persona.config_data[key]) == _dumped(before[key]), key
    assert list(persona.config_data) == list(before)


@pytest.mark.django_db
def test_text_with_windows_line_ends_survives_an_edit_of_another_part_byte_for_byte(
    editor_client: Client,
) -> None:
    # A card written on Windows has CRLF line ends (a lone CR from older tools): the browser sends the
    # untouched fields back with its own line ends, which counted as an edit and rewrote them.
    config = {
        "description": "Line one.\r\nLine two.",
        "backstory": "Old\rMac line end.",
        "example_lines": ["Hey.\r\nYou there."],
        "tags": ["two\nlines", "noir"],  # a one-line input drops the line break
        "voice": "Plain.",
    }
    persona = PersonaConfig.objects.create(name="windows", display_name="Windows", config_data=config)
    url = _change_url(persona)
    response = editor_client.post(url, _as_browser_posts(editor_client, url, voice="Gravel."))
    assert response.status_code == 302
    persona.refresh_from_db()
    assert persona.config_data == {**config, "voice": "Gravel."}


@pytest.mark.django_db
def test_an_emptied_raw_json_box_is_refused_not_saved_as_an_empty_config(editor_client: Client) -> None:
    # Was: saved as {}; every key without a field and every untouched part gone, without a word.
    persona = PersonaConfig.objects.create(name="kommissar", display_name="Kommissar", config_data=CONFIG)
    url = _change_url(persona)
    response = editor_client.post(url, _as_browser_posts(editor_client, url, config_data=""))
    assert response.status_code == 200
    assert "The Raw JSON box is empty" in response.context["adminform"].form.errors["config_data"][0]
    persona.refresh_from_db()
    assert persona.config_data == CONFIG
    # Clearing it on purpose is still possible: {}.
    response = editor_client.post(url, _as_browser_posts(editor_client, url, config_data="{}"))
    assert response.status_code == 302
    persona.refresh_from_db()
    assert persona.config_data == {}


@pytest.mark.django_db
def test_each_part_has_its_own_field_showing_the_stored_value(editor_client: Client) -> None:
    persona = PersonaConfig.objects.create(name="kommissar", display_name="Kommissar", config_data=CONFIG)
    form = editor_client.get(_change_url(persona)).context["adminform"].form
    assert form["voice"].value() == "Gravel."
    assert form["tags"].value() == "noir, détective"
    assert form["example_lines"].value() == "Ça suffit, hein.\nRain again, of course."
    # Pretty-printed (indented), non-ASCII shown as itself; PostgreSQL's jsonb orders keys its own way.
    assert '\n    "prompt": "«Toujours»"' in form["extensions"].value()
    assert '\n  "z_last": "Ünknown top-level key"' in form["config_data"].value()


@pytest.mark.django_db
def test_the_help_texts_say_which_parts_reach_the_model(editor_client: Client) -> None:
    response = editor_client.get("/admin/personas/personaconfig/add/")
    page = response.content.decode()
    form = response.context["adminform"].form
    for name in [
        "system_prompt",
        "description",
        "personality",
        "voice",
        "example_lines",
        "scenario",
        "backstory",
    ]:
        assert "Reaches the model" in form.fields[name].help_text, name
    for name in ["summary", "tags", "private", "extensions"]:
        assert "Never sent to the model" in form.fields[name].help_text, name
    assert "Advanced" in page


@pytest.mark.django_db
def test_tags_and_example_lines_are_typed_as_text_and_stored_as_lists(editor_client: Client) -> None:
    response = editor_client.post(
        "/admin/personas/personaconfig/add/",
        {
            "name": "new-one",
            "display_name": "New One",
            "is_active": "on",
            "voice": "Quiet.\r\nVery quiet.",
            "tags": " noir,  detective ,,",
            "example_lines": "First line.\r\n\r\n  Second line.  \r\n",
            "extensions": '{"mine": {"deep": "ß"}}',
            "config_data": "{}",
        },
    )
    assert response.status_code == 302
    assert PersonaConfig.objects.get(name="new-one").config_data == {
        "voice": "Quiet.\nVery quiet.",
        "tags": ["noir", "detective"],
        "example_lines": ["First line.", "Second line."],
        "extensions": {"mine": {"deep": "ß"}},
    }


@pytest.mark.django_db
def test_example_lines_longer_together_than_one_text_part_can_be_saved_and_edited(
    editor_client: Client,
) -> None:
    # Each line within the schema's 20,000 characters, the config far below its byte limit: valid, as an
    # import or the raw JSON stores it. Their field, one line each, holds more than one text part does.
    lines = ["Ha. " * 3750, "Hm. " * 3750]
    persona = PersonaConfig.objects.create(
        name="talker", display_name="Talker", config_data={"description": "Talks.", "example_lines": lines}
    )
    url = _change_url(persona)
    response = editor_client.post(url, _as_browser_posts(editor_client, url, description="Talks a lot."))
    assert response.status_code == 302
    persona.refresh_from_db()
    assert persona.config_data == {"description": "Talks a lot.", "example_lines": lines}
    # Edited in their own field too; a line over the schema's length is still refused, naming it.
    longer = "\r\n".join([*lines, "Huh."])
    response = editor_client.post(url, _as_browser_posts(editor_client, url, example_lines=longer))
    assert response.status_code == 302
    persona.refresh_from_db()
    assert persona.config_data["example_lines"] == [line.strip() for line in lines] + ["Huh."]
    too_long = _as_browser_posts(editor_client, url, example_lines="x" * 20_001)
    response = editor_client.post(url, too_long)
    assert response.status_code == 200
    assert "example_lines/0" in response.content.decode()


@pytest.mark.django_db
def test_clearing_a_field_removes_its_key_and_raw_json_edits_still_work(editor_client: Client) -> None:
    persona = PersonaConfig.objects.create(name="kommissar", display_name="Kommissar", config_data=CONFIG)
    url = _change_url(persona)
    raw = json.dumps({**CONFIG, "added_in_raw": 1})
    data = _as_browser_posts(editor_client, url, tags="", config_data=raw)
    assert editor_client.post(url, data).status_code == 302
    persona.refresh_from_db()
    assert "tags" not in persona.config_data
    assert persona.config_data["added_in_raw"] == 1
    assert persona.config_data["voice"] == "Gravel."


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("private", "{not json", "is not valid JSON"),
        ("private", '["a list"]', "private: [&quot;a list&quot;] is not of type &#x27;object&#x27;"),
        ("extensions", '{"x": 1e400}', "holds a number that is not finite"),
        # On its own field (was: "summary: is 501 characters long" on the raw JSON box).
        ("summary", "s" * 501, "Ensure this value has at most 500 characters (it has 501)."),
        ("voice", "a\x00b", "Null characters are not allowed."),
    ],
)
def test_a_bad_part_is_a_form_error_and_nothing_is_saved(
    editor_client: Client, field: str, value: str, message: str
) -> None:
    persona = PersonaConfig.objects.create(name="kommissar", display_name="Kommissar", config_data=CONFIG)
    url = _change_url(persona)
    response = editor_client.post(url, _as_browser_posts(editor_client, url, **{field: value}))
    assert response.status_code == 200
    assert message in response.content.decode()
    if field == "summary":
        assert response.context["adminform"].form.errors["summary"] == [message]
    persona.refresh_from_db()
    assert (persona.config_data, persona.version) == (CONFIG, 1)


@pytest.mark.django_db
def test_an_imported_cards_multi_line_examples_stay_whole_when_the_examples_are_edited(
    editor_client: Client,
) -> None:
    # A card's <START> blocks are dialogues of several lines, imported as one example each. Shown one
    # line under the other, any edit of the field split every dialogue into lines of its own.
    dialogues = ["{{user}}: Who hired you?\n{{char}}: Nobody you'd know.", "{{char}}: Rain again."]
    persona = PersonaConfig.objects.create(
        name="sam", display_name="Sam", config_data={"voice": "Dry.", "example_lines": dialogues}
    )
    url = _change_url(persona)
    shown = editor_client.get(url).context["adminform"].form["example_lines"].value()
    assert shown == "\n\n".join(dialogues)
    edited = shown + "\n\n{{user}}: And now?\n{{char}}: Now we wait."
    saved = editor_client.post(
        url, _as_browser_posts(editor_client, url, example_lines=edited.replace("\n", "\r\n"))
    )
    assert saved.status_code == 302
    persona.refresh_from_db()
    assert persona.config_data["example_lines"] == [*dialogues, "{{user}}: And now?\n{{char}}: Now we wait."]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("typed", "stored"),
    [
        ("One.\nTwo.\nThree.", ["One.", "Two.", "Three."]),
        ("One.\n\n \nTwo.", ["One.", "Two."]),
        ("\n  One.\nTwo.  \n", ["One.", "Two."]),
        ("One.\nStill one.\n\nTwo.", ["One.\nStill one.", "Two."]),  # a blank line separates examples
    ],
)
def test_example_lines_are_one_per_line_unless_a_blank_line_separates_them(
    editor_client: Client, typed: str, stored: list[str]
) -> None:
    persona = PersonaConfig.objects.create(name="sam", display_name="Sam", config_data={"voice": "Dry."})
    url = _change_url(persona)
    saved = editor_client.post(url, _as_browser_posts(editor_client, url, example_lines=typed))
    assert saved.status_code == 302
    persona.refresh_from_db()
    assert persona.config_data["example_lines"] == stored


@pytest.mark.django_db
@pytest.mark.parametrize("typed", ["[]", "0", "false", '""'])
@pytest.mark.parametrize("part", ["private", "extensions"])
def test_a_private_or_extensions_part_that_is_no_object_is_refused_not_deleted(
    editor_client: Client, part: str, typed: str
) -> None:
    # Was: any empty-looking JSON removed the part, and what it held, without a word.
    persona = PersonaConfig.objects.create(name="kommissar", display_name="Kommissar", config_data=CONFIG)
    url = _change_url(persona)
    response = editor_client.post(url, _as_browser_posts(editor_client, url, **{part: typed}))
    assert response.status_code == 200  # the form again, with its error
    assert "object" in str(response.context["adminform"].form.errors)
    persona.refresh_from_db()
    assert persona.config_data[part] == CONFIG[part]


@pytest.mark.django_db
@pytest.mark.parametrize("typed", ["", "{}"])
def test_an_empty_private_part_removes_it(editor_client: Client, typed: str) -> None:
    persona = PersonaConfig.objects.create(name="kommissar", display_name="Kommissar", config_data=CONFIG)
    url = _change_url(persona)
    response = editor_client.post(url, _as_browser_posts(editor_client, url, private=typed))
    assert response.status_code == 302
    persona.refresh_from_db()
    assert "private" not in persona.config_data


@pytest.mark.django_db
def test_a_tag_holding_a_comma_or_a_quote_survives_an_edit_of_the_tags(editor_client: Client) -> None:
    # A card's tag "Smith, John" was shown as two comma-separated labels and saved back as two tags.
    tags = ["Smith, John", 'say "hi"', "noir"]
    persona = PersonaConfig.objects.create(
        name="sam", display_name="Sam", config_data={"voice": "Dry.", "tags": tags}
    )
    url = _change_url(persona)
    shown = editor_client.get(url).context["adminform"].form["tags"].value()
    assert shown == '"Smith, John", "say ""hi""", noir'
    saved = editor_client.post(url, _as_browser_posts(editor_client, url, tags=shown + ", new one"))
    assert saved.status_code == 302
    persona.refresh_from_db()
    assert persona.config_data["tags"] == [*tags, "new one"]


OLDER: dict[str, Any] = {
    "system_prompt": "Speak in riddles.",
    "voice": "",
    "context": {"voice": "A whisper.", "backstory": "Grew up at sea.", "x_note": "kept"},
}


@pytest.mark.django_db
def test_a_persona_in_the_older_nested_shape_shows_what_the_model_gets_in_its_fields(
    editor_client: Client,
) -> None:
    nested = PersonaConfig.objects.create(name="sibyl", display_name="Sibyl", config_data=OLDER)
    form = editor_client.get(_change_url(nested)).context["adminform"].form
    assert (form["voice"].value(), form["backstory"].value()) == ("A whisper.", "Grew up at sea.")
    assert form["system_prompt"].value() == "Speak in riddles."
    plain = PersonaConfig.objects.create(name="old", display_name="Old", config_data={"context": "A sailor."})
    assert (
        editor_client.get(_change_url(plain)).context["adminform"].form["description"].value() == "A sailor."
    )


@pytest.mark.django_db
def test_a_nested_field_edited_moves_to_the_top_level_and_a_cleared_one_leaves_the_context(
    editor_client: Client,
) -> None:
    persona = PersonaConfig.objects.create(name="sibyl", display_name="Sibyl", config_data=OLDER)
    url = _change_url(persona)
    untouched = _as_browser_posts(editor_client, url)
    assert editor_client.post(url, untouched).status_code == 302
    persona.refresh_from_db()
    assert persona.config_data == OLDER  # nothing edited, nothing moved
    data = _as_browser_posts(editor_client, url, voice="A shout.", backstory="")
    assert editor_client.post(url, data).status_code == 302
    persona.refresh_from_db()
    assert persona.config_data["voice"] == "A shout."
    assert "backstory" not in persona.config_data
    assert persona.config_data["context"] == {"x_note": "kept"}
    context = persona_context_text(persona.config_data)
    assert "Voice: A shout." in context
    assert "whisper" not in context and "sea" not in context


@pytest.mark.django_db
def test_a_plain_string_context_edited_as_the_description_is_replaced_by_it(editor_client: Client) -> None:
    persona = PersonaConfig.objects.create(
        name="old", display_name="Old", config_data={"context": "A sailor."}
    )
    url = _change_url(persona)
    assert (
        editor_client.post(url, _as_browser_posts(editor_client, url, description="A pilot.")).status_code
        == 302
    )
    persona.refresh_from_db()
    assert persona.config_data == {"description": "A pilot."}


@pytest.mark.django_db
@pytest.mark.parametrize(
    "display_name", ["\u200f\u200f", "\u202e", "\u200b\u2069", "\u3164", "\u115f\u1160", "\u2800"]
)
def test_a_display_name_with_nothing_visible_is_refused(editor_client: Client, display_name: str) -> None:
    # Saved, it made an empty button in the writers' persona picker and an empty name in the cast list.
    persona = PersonaConfig.objects.create(name="kommissar", display_name="Kommissar", config_data=CONFIG)
    url = _change_url(persona)
    response = editor_client.post(url, _as_browser_posts(editor_client, url, display_name=display_name))
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["display_name"] == [
        "The display name has no visible character; writers pick the persona by it."
    ]
    persona.refresh_from_db()
    assert persona.display_name == "Kommissar"
    kept = editor_client.post(url, _as_browser_posts(editor_client, url, display_name="\u200fKommissar"))
    assert kept.status_code == 302


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("display_name", "code"), [("A\x1b[31mB", "001B"), ("Two\nlines", "000A"), ("Tab\there", "0009")]
)
def test_a_display_name_with_a_control_character_is_refused(
    editor_client: Client, display_name: str, code: str
) -> None:
    # Saved, an escape sequence or a line break went on into the character names the model wrote from
    # the persona ('A\x1b[31MB', 'TWO\nLINES' in a saved screenplay) and into generate_screenplay's
    # terminal; the Fountain export then dropped it, so a round trip changed the name.
    persona = PersonaConfig.objects.create(name="kommissar", display_name="Kommissar", config_data=CONFIG)
    url = _change_url(persona)
    response = editor_client.post(url, _as_browser_posts(editor_client, url, display_name=display_name))
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["display_name"] == [
        f"The display name contains a line break or another control character (U+{code}); it is one line."
    ]
    persona.refresh_from_db()
    assert persona.display_name == "Kommissar"


@pytest.mark.django_db
def test_a_display_name_of_emoji_is_not_cut_by_the_browser_and_its_limit_is_the_servers(
    editor_client: Client,
) -> None:
    # maxlength="200" on the field: a browser counts UTF-16 units, so a paste of 150 emoji was cut to
    # 100 without a word. The server counts characters (at most 200) and says so past it.
    persona = PersonaConfig.objects.create(name="emoji", display_name="Emoji", config_data={"voice": "Hi."})
    url = _change_url(persona)
    page = editor_client.get(url).content.decode()
    assert re.search(r'<input[^>]*name="display_name"[^>]*>', page)
    assert not re.search(r"<(input|textarea)[^>]*maxlength", page)
    response = editor_client.post(url, _as_browser_posts(editor_client, url, display_name="\U0001f3ac" * 150))
    assert response.status_code == 302
    persona.refresh_from_db()
    assert persona.display_name == "\U0001f3ac" * 150
    refused = editor_client.post(url, _as_browser_posts(editor_client, url, display_name="x" * 201))
    assert refused.status_code == 200
    assert "at most 200 characters (it has 201)" in refused.content.decode()
