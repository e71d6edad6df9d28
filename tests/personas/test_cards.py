from __future__ import annotations

import base64
import io
import json
import re
import unicodedata
import zipfile
from pathlib import Path
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.test import Client, override_settings
from PIL import Image, PngImagePlugin

from personas.cards import CardError, persona_card_v2, persona_file, persona_file_read
from personas.models import PersonaConfig
from personas.selectors import persona_contexts
from personas.services import persona_import

EXTENSIONS = {
    "depth_prompt": {"prompt": "Stay in character.", "depth": 4},
    "talkativeness": "0.7",
    "some_app/unknown": [1, {"nested": True}],
}
CARD_V2: dict[str, Any] = {
    "spec": "chara_card_v2",
    "spec_version": "2.0",
    "data": {
        "name": "Captain Vega",
        "description": "Commander of the salvage tug Persistence.",
        "personality": "Blunt, loyal, allergic to paperwork.",
        "scenario": "Adrift near Saturn.",
        "first_mes": "You're late.",
        "mes_example": "<START>\n{{char}}: Strap in.\n<START>\n{{char}}: Not my first wreck.",
        "creator_notes": "SECRET-NOTES: tested with v1.2 of the app",
        "system_prompt": "You are Captain Vega.",
        "post_history_instructions": "",
        "alternate_greetings": ["Hey."],
        "tags": ["sci-fi", "captain"],
        "creator": "SECRET-CREATOR",
        "character_version": "SECRET-VERSION-3",
        "extensions": EXTENSIONS,
    },
}


def card_png(chunks: dict[str, bytes], size: tuple[int, int] = (64, 96)) -> bytes:
    """A PNG made with Pillow, each chunk base64-encoded in a tEXt chunk, like card editors write them."""
    info = PngImagePlugin.PngInfo()
    for key, value in chunks.items():
        info.add_text(key, base64.b64encode(value).decode())
    buffer = io.BytesIO()
    Image.new("RGB", size, "navy").save(buffer, "PNG", pnginfo=info)
    return buffer.getvalue()


@pytest.mark.django_db
def test_a_v2_card_png_imports_exports_and_reimports_to_the_same_persona(tmp_path: Path) -> None:
    source = tmp_path / "vega.png"
    source.write_bytes(card_png({"chara": json.dumps(CARD_V2).encode()}))

    call_command("import_personas", str(source), stdout=io.StringIO())
    persona = PersonaConfig.objects.get(name="captain-vega")
    assert persona.display_name == "Captain Vega"
    assert persona.config_data["extensions"] == EXTENSIONS
    assert persona.config_data["example_lines"] == ["{{char}}: Strap in.", "{{char}}: Not my first wreck."]
    first_config = persona.config_data

    out = tmp_path / "out"
    call_command("export_personas", "captain-vega", "--png", "--out", str(out), stdout=io.StringIO())
    exported = out / "captain-vega.card.png"
    with Image.open(exported) as image:
        assert isinstance(image, PngImagePlugin.PngImageFile)
        card = json.loads(base64.b64decode(image.text["chara"]))
    assert card["spec"] == "chara_card_v2"
    assert card["data"]["name"] == "Captain Vega"
    assert card["data"]["creator_notes"] == CARD_V2["data"]["creator_notes"]
    assert card["data"]["alternate_greetings"] == ["Hey."]
    assert {k: v for k, v in card["data"]["extensions"].items() if k != "screenplay_studio"} == EXTENSIONS

    PersonaConfig.objects.filter(name="captain-vega").update(display_name="Renamed", config_data={})
    output = io.StringIO()
    call_command("import_personas", str(exported), stdout=output)
    assert "updated captain-vega" in output.getvalue()
    assert PersonaConfig.objects.count() == 1
    persona = PersonaConfig.objects.get(name="captain-vega")
    assert persona.display_name == "Captain Vega"
    assert persona.config_data == first_config


@pytest.mark.django_db
def test_creator_fields_are_kept_but_never_reach_the_prompt_context() -> None:
    (imported,) = persona_file_read(data=json.dumps(CARD_V2).encode())
    private = imported.config_data["private"]
    assert (private["creator_notes"], private["creator"], private["character_version"]) == (
        "SECRET-NOTES: tested with v1.2 of the app",
        "SECRET-CREATOR",
        "SECRET-VERSION-3",
    )
    persona_import(personas=[imported])
    (context,) = persona_contexts(names=["captain-vega"]).contexts
    assert "Commander of the salvage tug" in context.context
    assert "SECRET" not in context.context
    assert "talkativeness" not in context.context


@pytest.mark.parametrize(
    "private",
    [
        {"creator": 5},
        {"creator": "", "character_version": 2.5, "creator_notes": ["a", "b"]},
        {"creator": None, "card": "not an object"},
        {"creator": "Ann", "character_version": {"major": 3}},
    ],
)
def test_a_card_v2_round_trip_keeps_private_values_a_card_field_cannot_hold(private: dict[str, Any]) -> None:
    # A card's creator, creator_notes and character_version are strings: a persona's private values
    # of another type (or empty) were written as "" and lost on re-import.
    persona = PersonaConfig(
        name="vega", display_name="Vega", config_data={"description": "d", "private": private}
    )
    card = persona_card_v2(persona)
    assert all(
        isinstance(card["data"][key], str) for key in ("creator", "creator_notes", "character_version")
    )
    (imported,) = persona_file_read(data=json.dumps(card).encode())
    assert imported.name == "vega"
    assert imported.config_data == persona.config_data


def test_a_v3_png_is_read_from_ccv3_before_chara() -> None:
    v3 = {"spec": "chara_card_v3", "spec_version": "3.0", "data": {**CARD_V2["data"], "name": "Vega Three"}}
    v2 = {**CARD_V2, "data": {**CARD_V2["data"], "name": "Vega Two"}}
    data = card_png({"chara": json.dumps(v2).encode(), "ccv3": json.dumps(v3).encode()})
    (imported,) = persona_file_read(data=data)
    assert imported.display_name == "Vega Three"


def test_a_v1_card_and_our_own_list_are_read() -> None:
    v1 = {"name": "Old Tom", "description": "A ferryman.", "personality": "Quiet.", "first_mes": "Fare?"}
    (imported,) = persona_file_read(data=json.dumps(v1).encode())
    assert (imported.name, imported.config_data["description"]) == ("old-tom", "A ferryman.")
    assert imported.config_data["private"]["card"] == {"first_mes": "Fare?"}
    demo = Path(__file__).resolve().parents[2] / "personas" / "demo" / "personas.json"
    assert len(persona_file_read(data=demo.read_bytes())) == len(json.loads(demo.read_text()))


def test_a_card_whose_examples_are_not_text_keeps_them_with_its_other_card_fields() -> None:
    # Was dropped without a word: a card from another tool with its examples as a list of strings
    # imported with neither example lines nor the examples anywhere.
    examples = ["{{char}}: Strap in.", "{{char}}: Not my first wreck."]
    card = {**CARD_V2, "data": {**CARD_V2["data"], "mes_example": examples}}
    (imported,) = persona_file_read(data=json.dumps(card).encode())
    assert "example_lines" not in imported.config_data
    assert imported.config_data["private"]["card"]["mes_example"] == examples


def test_a_name_without_latin_letters_gets_a_stable_key() -> None:
    card = {**CARD_V2, "data": {**CARD_V2["data"], "name": "李小龍"}}
    first, second = (persona_file_read(data=json.dumps(card).encode())[0] for _ in range(2))
    assert first.name == second.name and first.name.startswith("persona-")


@pytest.mark.parametrize(
    ("name", "read"),
    [
        # Repeated spaces (which the admin accepts) came back as one, and the preview called it updated.
        ("Sam  Spade", "Sam  Spade"),
        ("  Sam Spade ", "Sam Spade"),
        ("Sam\n\tSpade", "Sam Spade"),
        # A tab, which a display name may no longer hold (one line, no control character): a space.
        ("Sam\tSpade", "Sam Spade"),
        ("Sam  \u202eSpade", "Sam  \u202eSpade"),
    ],
)
def test_a_display_name_comes_back_as_exported_unless_it_spans_lines_or_has_tabs(
    name: str, read: str
) -> None:
    card = {**CARD_V2, "data": {**CARD_V2["data"], "name": name}}
    (imported,) = persona_file_read(data=json.dumps(card).encode())
    assert imported.display_name == read
    ours = {"name": "sam", "display_name": name, "config_data": {"description": "A detective."}}
    assert persona_file_read(data=json.dumps([ours]).encode())[0].display_name == read


@pytest.mark.django_db
@pytest.mark.parametrize("key", ["Noir-Detective", "_sam", "sam--spade", "sam-"])
def test_a_key_the_admin_accepts_but_slugify_would_change_comes_back_to_its_persona(
    key: str, persona_factory: Any
) -> None:
    # Another persona holds the key of the display name: the re-import must not overwrite it.
    other = persona_factory("sam-spade", "Someone else", description="Not Sam.")
    persona = persona_factory(key, "Sam Spade", description="Sam.")
    persona.full_clean()  # the admin's own rule: a valid key
    for kind in ["ours", "card-v2", "card-v2-png"]:
        (imported,) = persona_file_read(data=persona_file(persona, kind=kind).data)
        assert imported.name == key, kind
    persona_import(personas=persona_file_read(data=persona_file(persona, kind="ours").data))
    other.refresh_from_db()
    assert other.config_data == {"description": "Not Sam."}
    assert PersonaConfig.objects.count() == 2
    # A name that is no valid key (hand-written files) still gets one made from the display name.
    hand_written = {"name": "Sam Spade!", "display_name": "Sam Spade", "config_data": {"description": "x"}}
    assert persona_file_read(data=json.dumps(hand_written).encode())[0].name == "sam-spade"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"hello", "is not valid JSON"),
        (b"\xff\xfe\x00", "neither a PNG nor UTF-8"),
        (b'{"spec": "chara_card_v2"}', "without a 'data' object"),
        (b'{"title": "a story"}', "not a persona or a Character Card"),
        (b"[1, 2]", "without a 'config_data' object"),
        (b'{"spec": "chara_card_v2", "data": {"description": "no name"}}', "has no name"),
        (b'{"name": "x", "config_data": {"tags": "noir"}}', "tags: \"noir\" is not of type 'array'"),
        (b"[" * 100_000 + b"]" * 100_000, "nested deeper than 32 levels"),
        # Each of these reached the database (or json.loads' own ValueError) and was a 500 on import.
        (b'{"name": "x", "config_data": {"voice": "a\\u0000b"}}', "config_data/voice: contains a NUL"),
        (b'{"name": "x", "config_data": {"voice": "\\ud800"}}', "unpaired UTF-16 surrogate"),
        (b'{"name": "x", "config_data": {"x": 1e400}}', "config_data/x: holds a number that is not finite"),
        (b'{"name": "x", "config_data": {"x": ' + b"9" * 5000 + b"}}", "integer longer than 64 digits"),
        # json.loads kept the second description without a word.
        (
            b'{"spec": "chara_card_v2", "data": {"name": "x", "description": "One.", "description": "Two."}}',
            'has the key "description" twice in one object',
        ),
        (card_png({}), "PNG without a character card"),
        (card_png({"chara": b"not json"}), "is not valid JSON"),
        (b"\x89PNG\r\n\x1a\n" + b"garbage", "not a readable PNG"),
    ],
)
def test_bad_files_are_refused_with_a_clear_error(data: bytes, message: str) -> None:
    with pytest.raises(CardError, match=re.escape(message)) as raised:
        persona_file_read(data=data, filename="upload")
    # Nothing of the server's insides (Pillow named its in-memory buffer: "<_io.BytesIO object at 0x...>").
    assert "object at 0x" not in str(raised.value)


@pytest.mark.parametrize(
    ("data", "limit"),
    [
        (
            {"description": "A long life. " * 2000},
            "description: is 26000 characters long; the limit is 20000",
        ),
        ({"mes_example": "<START>Hi.\n" * 60}, "example_lines: holds 60 items; the limit is 50"),
        ({"description": "d", "tags": ["noir " * 20]}, "tags/0: is 100 characters long; the limit is 60"),
    ],
)
def test_a_card_over_a_config_limit_is_refused_naming_the_size_and_the_limit(
    data: dict[str, Any], limit: str
) -> None:
    card = {"spec": "chara_card_v2", "spec_version": "2.0", "data": {"name": "Verbose", **data}}
    with pytest.raises(CardError) as raised:
        persona_file_read(data=json.dumps(card).encode(), filename="verbose.json")
    # jsonschema's message quoted the whole value ("'A long life. A long life. ...' is too long", 26 KB
    # in the admin's form error) and never said the limit.
    assert str(raised.value) == f"verbose.json gives a persona config that is not valid: {limit}"


def _animated_card(frames: int, size: tuple[int, int]) -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text("chara", base64.b64encode(json.dumps(CARD_V2).encode()).decode())
    images = [Image.new("RGB", size, (n, 0, 0)) for n in range(frames)]
    buffer = io.BytesIO()
    images[0].save(buffer, "PNG", save_all=True, append_images=images[1:], pnginfo=info)
    return buffer.getvalue()


def test_an_animated_card_counts_every_frame_against_the_pixel_bound() -> None:
    # Reading its text decodes every frame: 40 frames of 4096x4096 took 12 s and 200 MB per upload.
    with pytest.raises(CardError, match="is a 2048x2048 image of 5 frames; a card is at most 4096x4096"):
        persona_file_read(data=_animated_card(5, (2048, 2048)), filename="upload")
    [persona] = persona_file_read(data=_animated_card(3, (64, 64)), filename="small.png")
    assert persona.display_name == CARD_V2["data"]["name"]


@override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=2048)
def test_an_oversized_file_is_refused_before_it_is_read() -> None:
    with pytest.raises(CardError, match="The file is 4096 bytes; the limit is 2048 bytes"):
        persona_file_read(data=b" " * 4096, filename="")


@pytest.mark.django_db
def test_one_key_twice_in_an_import_is_refused_not_overwritten(tmp_path: Path) -> None:
    # The second persona overwrote the first ("created twin", "updated twin"); the admin's preview
    # showed two new rows and its confirmation then failed with a false "changed by someone else".
    twins = [
        {"name": "twin", "display_name": "Twin A", "config_data": {"voice": "A."}},
        {"name": "twin", "display_name": "Twin B", "config_data": {"voice": "B."}},
    ]
    with pytest.raises(CardError, match="has more than one persona with the key 'twin'"):
        persona_file_read(data=json.dumps(twins).encode(), filename="twins.json")
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    first.write_text(json.dumps(twins[0]))
    second.write_text(json.dumps(twins[1]))
    with pytest.raises(CommandError, match="Nothing imported: more than one persona has the key 'twin'"):
        call_command("import_personas", str(first), str(second), stdout=io.StringIO())
    assert not PersonaConfig.objects.exists()


@pytest.mark.django_db
@override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=2048)
def test_import_of_a_file_over_the_limit_says_its_size(tmp_path: Path) -> None:
    # The command reads a byte past the limit and stops: it said a 5,000-byte file "is 2049 bytes".
    big = tmp_path / "big.json"
    big.write_bytes(b" " * 5000)
    with pytest.raises(CommandError, match=r"big\.json is 5000 bytes; the limit is 2048 bytes\."):
        call_command("import_personas", str(big), stdout=io.StringIO())
    assert not PersonaConfig.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("fields", "refusal"),
    [
        ({"version": 99}, r"is version 99 of 'screenplay-studio/persona'; this site reads version 1 only\."),
        ({"version": True}, r"is version true of .*; this site reads version 1 only\."),
        ({"version": "1"}, r"is version \"1\" of .*; this site reads version 1 only\."),
        ({"format": "someone-else/persona"}, r"is in the format \"someone-else/persona\"; this site reads"),
    ],
)
def test_import_refuses_a_format_or_version_of_ours_it_does_not_know(
    tmp_path: Path, fields: dict[str, Any], refusal: str
) -> None:
    # A file of version 99 (a newer site's export) was imported as if it were version 1, without a word.
    future = tmp_path / "future.json"
    document = {
        "format": "screenplay-studio/persona",
        "version": 1,
        "name": "future",
        "config_data": {"voice": "x"},
    }
    future.write_text(json.dumps({**document, **fields}))
    with pytest.raises(CommandError, match=r"^Nothing imported: .*future\.json " + refusal):
        call_command("import_personas", str(future), stdout=io.StringIO())
    assert not PersonaConfig.objects.exists()
    # Version 1, and a file that names no version (written by hand, like the demo's), are read.
    future.write_text(json.dumps({key: value for key, value in document.items() if key != "version"}))
    call_command("import_personas", str(future), stdout=io.StringIO())
    assert PersonaConfig.objects.filter(name="future").exists()


@pytest.mark.django_db
def test_import_of_several_files_changes_nothing_when_one_is_bad(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.json", tmp_path / "bad.png"
    good.write_text(json.dumps(CARD_V2))
    bad.write_bytes(card_png({}))
    with pytest.raises(CommandError, match=r"Nothing imported: .*bad\.png is a PNG without a character card"):
        call_command("import_personas", str(good), str(bad))
    assert not PersonaConfig.objects.exists()


@pytest.mark.django_db
def test_export_refuses_unknown_names_and_writes_ours(tmp_path: Path, persona_factory: Any) -> None:
    persona_factory("hero", voice="Loud.")
    with pytest.raises(CommandError, match="No persona named: 'ghost'"):
        call_command("export_personas", "hero", "ghost", "--out", str(tmp_path))
    call_command("export_personas", "--out", str(tmp_path), stdout=io.StringIO())
    ours = json.loads((tmp_path / "hero.json").read_text())
    assert (ours["name"], ours["config_data"]["voice"]) == ("hero", "Loud.")
    # A file already there (an editor's own edit of the last export) is replaced only when asked.
    (tmp_path / "hero.json").write_text("my edits")
    with pytest.raises(
        CommandError, match=r"1 file\(s\) already in .*'hero.json'. Nothing exported; pass --overwrite"
    ):
        call_command("export_personas", "--out", str(tmp_path), stdout=io.StringIO())
    assert (tmp_path / "hero.json").read_text() == "my edits"
    call_command("export_personas", "--out", str(tmp_path), "--overwrite", stdout=io.StringIO())
    assert json.loads((tmp_path / "hero.json").read_text())["name"] == "hero"
    call_command("export_personas", "--format", "card-v2", "--out", str(tmp_path), stdout=io.StringIO())
    card = json.loads((tmp_path / "hero.card.json").read_text())
    assert card["data"]["extensions"]["screenplay_studio"]["config"]["voice"] == "Loud."
    # A place that cannot be a directory: one line saying so, no traceback. A file there was said as
    # "File exists", which read as if an exported file were in the way.
    for out, reason in (
        (tmp_path / "hero.json", "it is a file, not a directory"),
        (tmp_path / "hero.json" / "below", "Not a directory"),
    ):
        with pytest.raises(CommandError, match=re.escape(f"Could not write to {out}: {reason}.")):
            call_command("export_personas", "--out", str(out), stdout=io.StringIO())


# --- Admin ----------------------------------------------------------------------------------------


def _upload(client: Client, name: str, data: bytes) -> Any:
    return client.post("/admin/personas/personaconfig/import/", {"file": SimpleUploadedFile(name, data)})


def _confirm(client: Client, preview: Any) -> Any:
    """The preview page's "Import" button: its form posts back the signed payload."""
    return client.post("/admin/personas/personaconfig/import/", {"payload": preview.context["payload"]})


@pytest.mark.django_db
def test_the_admin_imports_a_card_png_and_links_the_page(editor_client: Client) -> None:
    assert "Import personas" in editor_client.get("/admin/personas/personaconfig/").content.decode()
    assert editor_client.get("/admin/personas/personaconfig/import/").status_code == 200
    preview = _upload(editor_client, "vega.png", card_png({"chara": json.dumps(CARD_V2).encode()}))
    assert preview.status_code == 200 and not PersonaConfig.objects.exists()
    response = _confirm(editor_client, preview)
    assert response.status_code == 302
    assert "captain-vega (created)" in editor_client.get(response["Location"]).content.decode()
    assert PersonaConfig.objects.get(name="captain-vega").config_data["extensions"] == EXTENSIONS


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("story.txt", b"just text", "story.txt is refused. The text is not valid JSON"),
        ("plain.png", card_png({}), "plain.png is a PNG without a character card"),
        ("big.json", b" " * 3000, "The file is 3000 bytes; the limit is 2048 bytes."),
    ],
)
@override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=2048)
def test_the_admin_reports_a_bad_file_and_changes_nothing(
    editor_client: Client, persona_factory: Any, name: str, data: bytes, message: str
) -> None:
    persona_factory("hero")
    response = _upload(editor_client, name, data)
    assert response.status_code == 200
    assert message in response.content.decode()
    assert list(PersonaConfig.objects.values_list("name", "version")) == [("hero", 1)]


@pytest.mark.django_db
def test_a_writer_cannot_reach_the_import_page(user_factory: Any) -> None:
    client = Client()
    client.force_login(user_factory("plain", is_staff=True))
    assert client.get("/admin/personas/personaconfig/import/").status_code == 403


@pytest.mark.django_db
def test_the_admin_action_exports_one_file_or_a_zip(editor_client: Client, persona_factory: Any) -> None:
    hero, villain = persona_factory("hero"), persona_factory("villain")
    url = "/admin/personas/personaconfig/"
    one = editor_client.post(url, {"action": "export_card_png", "_selected_action": [hero.pk]})
    assert one["Content-Disposition"] == 'attachment; filename="hero.card.png"'
    (imported,) = persona_file_read(data=one.content)
    assert imported.name == "hero"
    both = editor_client.post(url, {"action": "export_ours", "_selected_action": [hero.pk, villain.pk]})
    assert both["Content-Type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(both.content)) as archive:
        assert sorted(archive.namelist()) == ["hero.json", "villain.json"]
        assert json.loads(archive.read("villain.json"))["name"] == "villain"


@pytest.mark.django_db(transaction=True)
def test_reimporting_a_card_replaces_the_cached_context() -> None:
    (imported,) = persona_file_read(data=json.dumps(CARD_V2).encode())
    persona_import(personas=[imported])
    assert "salvage tug" in persona_contexts(names=["captain-vega"]).contexts[0].context
    changed = {**CARD_V2, "data": {**CARD_V2["data"], "description": "Now she runs a noodle bar."}}
    persona_import(personas=persona_file_read(data=json.dumps(changed).encode()))
    (context,) = persona_contexts(names=["captain-vega"]).contexts
    assert "noodle bar" in context.context and "salvage tug" not in context.context


@pytest.mark.django_db
def test_a_card_reimported_for_a_deactivated_persona_leaves_it_deactivated(tmp_path: Path) -> None:
    # A card has no "active" field: it made the persona active again, without a word in the command.
    source = tmp_path / "vega.png"
    source.write_bytes(card_png({"chara": json.dumps(CARD_V2).encode()}))
    call_command("import_personas", str(source), stdout=io.StringIO())
    PersonaConfig.objects.filter(name="captain-vega").update(is_active=False)
    call_command("import_personas", str(source), stdout=io.StringIO())
    assert PersonaConfig.objects.get(name="captain-vega").is_active is False
    # Our own format says it, and is followed; a new persona from a card is active.
    ours = tmp_path / "ours.json"
    ours.write_text(
        json.dumps(
            {
                "name": "captain-vega",
                "display_name": "Vega",
                "is_active": True,
                "config_data": {"voice": "Steady."},
            }
        )
    )
    call_command("import_personas", str(ours), stdout=io.StringIO())
    assert PersonaConfig.objects.get(name="captain-vega").is_active is True


def test_a_card_chunk_that_is_not_utf8_is_named_as_such() -> None:
    data = card_png({"chara": b"\xff\xfe not text"})
    with pytest.raises(CardError, match="has a card chunk whose text is not UTF-8"):
        persona_file_read(data=data, filename="upload.png")


@pytest.mark.django_db
def test_the_import_command_writes_no_control_characters_from_a_file(tmp_path: Path) -> None:
    # A display name is one line of text: a bell and an escape sequence are refused (they went on into
    # the model's character names), and the refusal names them by code point, never writes them.
    source = tmp_path / "red.json"
    name = "Ctrl\x07\x1b[31m Red"
    source.write_text(json.dumps({"name": "red", "display_name": name, "config_data": {"voice": "Loud."}}))
    with pytest.raises(CommandError) as failure:
        call_command("import_personas", str(source), stdout=io.StringIO())
    message = str(failure.value)
    assert "contains a line break or another control character (U+0007)" in message
    assert "\x1b" not in message and "\x07" not in message
    assert not PersonaConfig.objects.exists()


def test_export_quotes_unknown_names_short_and_few(tmp_path: Path, persona_factory: Any) -> None:
    # Every unknown name was echoed whole: a 5,000-character name, or a thousand names, made the line.
    persona_factory("hero")
    names = ["g" * 5000, *(f"ghost-{n:04}" for n in range(1000))]
    with pytest.raises(CommandError) as failure:
        call_command("export_personas", "hero", *names, "--out", str(tmp_path))
    assert str(failure.value) == (
        "No persona named: '" + "g" * 80 + "…' (5000 characters), 'ghost-0000', 'ghost-0001', 'ghost-0002', "
        "'ghost-0003' and 996 more. Nothing exported."
    )


def _zip(*entries: tuple[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for name, data in entries:
            archive.writestr(name, data)
    return buffer.getvalue()


def _deflate_damaged() -> bytes:
    data = bytearray(_zip(("a.json", b'{"name": "x"}' * 50)))
    start = 30 + len("a.json")  # past the first entry's local header and name: its deflated bytes
    data[start : start + 10] = bytes(b ^ 0xFF for b in data[start : start + 10])
    return bytes(data)


def _big_card_png() -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text("chara", base64.b64encode(json.dumps(CARD_V2).encode()).decode())
    buffer = io.BytesIO()
    Image.new("RGB", (4096, 4096)).save(buffer, "PNG", pnginfo=info)
    return buffer.getvalue()


BIG_CARD_PNG = _big_card_png()


def _ours_file(name: str) -> bytes:
    return json.dumps({"name": name, "display_name": name.title(), "config_data": {"voice": "Low."}}).encode()


def test_a_zip_of_persona_files_and_cards_reads_every_persona_in_it() -> None:
    png = persona_file(
        PersonaConfig(name="vega", display_name="Vega", config_data={"voice": "Dry."}), kind="card-v2-png"
    )
    data = _zip(("a.json", _ours_file("ann")), ("cards/vega.png", png.data), ("b.json", _ours_file("bob")))
    assert [p.name for p in persona_file_read(data=data, filename="set.zip")] == ["ann", "vega", "bob"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_zip(), "set.zip is an empty zip: no persona to import."),
        (
            _zip(("a.json", _ours_file("ann")), ("b.json", _ours_file("ann"))),
            "more than one persona with the key 'ann'",
        ),
        (_zip(("a.json", b"{not json")), "set.zip: a.json is refused."),
        (
            _zip(("inner.zip", _zip(("a.json", _ours_file("ann"))))),
            "set.zip: inner.zip is neither a PNG nor UTF-8 JSON",
        ),
        # 64 MB of zeros packs into some 64 KB: it is not unpacked past the limit.
        (_zip(("bomb.json", b"0" * 64_000_000)), "set.zip unpacks to more than 2621440 bytes"),
        (
            _zip(*((f"{i}.json", b"0" * 1_000_000) for i in range(3))),
            "set.zip unpacks to more than 2621440 bytes",
        ),
        (
            _zip(*((f"{i}.json", _ours_file(f"p{i}")) for i in range(1001))),
            "holds 1001 files; one zip may hold at most 1000",
        ),
        (b"PK\x03\x04" + b"\x00" * 100, "set.zip is not a zip this site can read"),
        # Deflated data zlib cannot read (was: zlib.error, a 500 in the admin's import).
        (_deflate_damaged(), "set.zip is not a zip this site can read (Error -3 while decompressing data"),
        (_zip(("\x1b]0;owned\x07.json", b"{")), "set.zip: ?]0;owned?.json is refused."),
        # Each card's image within the limit, five of the largest together cost 1.6 s of a core.
        (_zip(*((f"{i}.png", BIG_CARD_PNG) for i in range(5))), "images of 83886080 pixels together"),
    ],
)
def test_a_bad_zip_imports_nothing_and_says_why(data: bytes, message: str) -> None:
    with pytest.raises(CardError, match=re.escape(message)):
        persona_file_read(data=data, filename="set.zip")


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("Mei 李", "Mei 王"),
        ("Dr. Иванов", "Dr. Петров"),
        ("Agent 김민준", "Agent 이서연"),
        ("Herr Groß", "Herr Gro"),
    ],
)
def test_cards_whose_names_differ_only_outside_latin_letters_become_two_personas(
    first: str, second: str
) -> None:
    # Their keys were the slug of their Latin letters alone ("mei", "dr"): the second card's import
    # updated the first persona, and a zip of both was refused as one key twice.
    cards = [{**CARD_V2, "data": {**CARD_V2["data"], "name": name}} for name in (first, second)]
    imported = [persona_file_read(data=json.dumps(card).encode())[0] for card in cards]
    assert imported[0].name != imported[1].name
    persona_import(personas=imported)
    assert sorted(PersonaConfig.objects.values_list("display_name", flat=True)) == sorted([first, second])


def test_a_card_name_typed_decomposed_gets_the_key_of_the_same_name_composed() -> None:
    names = ["한국어", "Zoë 李"]
    for name in names:
        keys = {
            persona_file_read(
                data=json.dumps({**CARD_V2, "data": {**CARD_V2["data"], "name": form}}).encode()
            )[0].name
            for form in (unicodedata.normalize("NFC", name), unicodedata.normalize("NFD", name))
        }
        assert len(keys) == 1, name


def _name_drawn(display_name: str) -> bytes:
    """The pixels of a card PNG's name, closer to white than to its portrait's colour."""
    persona = PersonaConfig(name="someone", display_name=display_name, config_data={"voice": "Soft."})
    image = Image.open(io.BytesIO(persona_file(persona, kind="card-v2-png").data)).convert("L")
    background = image.getpixel((0, 0))
    assert isinstance(background, int)
    half = background + (255 - background) / 2
    return image.crop((0, 520, 400, 600)).point(lambda value: 255 if value > half else 0).tobytes()


@pytest.mark.parametrize("name", ["José", "Zoë", "Müller", "Ñandú", "façade"])
def test_a_card_portrait_draws_accented_letters_not_the_missing_glyph_box(name: str) -> None:
    # Pillow's default font has ASCII letters only: "José" was drawn "Jos" and a box, the same box as
    # for a character no font has (U+0378, unassigned).
    missing = "".join(char if char.isascii() else "\u0378" for char in name)
    assert _name_drawn(name) != _name_drawn(missing)
