"""Public sample screenplays (tests/data/screenplays/README.md) import with the right scenes and cast."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from stories.generation.prompt import screenplay_schema
from stories.generation.validation import schema_check
from stories.imports import ScreenplayImportError, screenplay_from_fdx, screenplay_from_fountain

DATA = Path(__file__).resolve().parents[2] / "data" / "screenplays"


def test_the_library_freak_out_has_its_three_scenes_and_nine_speakers() -> None:
    content = screenplay_from_fountain((DATA / "the-library-freak-out.fountain").read_text())
    schema_check(document=content, schema=screenplay_schema, what="screenplay")
    assert content["title"] == "THE LIBRARY FREAK-OUT"
    assert [scene["heading"] for scene in content["scenes"]] == [
        "EXT. LIBRARY--DAY",
        "INT. LIBRARY--DAY",
        "EXT. LIBRARY--DAY",
    ]
    assert [c["name"] for c in content["characters"]] == [
        "CHALF",
        "NAR",
        "YOR",
        "CHARYA",
        "PATRON ONE",
        "PATRON TWO",
        "PATRONS THREE AND FOUR",
        "THRAIN",
        "PATRON FIVE",
    ]
    first = content["scenes"][0]["elements"]
    # What comes before the first heading (a note, FADE IN:) opens the first scene; nothing is lost.
    assert first[0]["text"].startswith("**Note: the production values")
    assert first[1] == {"type": "transition", "text": "FADE IN:"}
    speeches = [e for s in content["scenes"] for e in s["elements"] if e["type"] == "dialogue"]
    assert len(speeches) == 51
    assert {
        "type": "dialogue",
        "character": "NAR",
        "parenthetical": "sings",
        "text": (
            "Neema-sasim neema-sah\nNEEEE-ma-sasim neemasasim,\nNeema-sasim neema-sah\nNEEEE-ma-sasim neemasasim--"
        ),
    } in speeches
    assert content["scenes"][-1]["elements"][-2:] == [
        {"type": "transition", "text": "FADE OUT:"},
        {"type": "action", "text": "THE END"},
    ]


def test_screenplains_sample_reads_the_same_from_fountain_and_fdx() -> None:
    fountain = screenplay_from_fountain((DATA / "screenplain-simple.fountain").read_text())
    fdx = screenplay_from_fdx((DATA / "screenplain-simple.fdx").read_bytes())
    assert fountain == fdx
    assert [c["name"] for c in fdx["characters"]] == ["GUY", "GURL"]
    assert len(fdx["scenes"]) == 1
    assert fdx["scenes"][0]["elements"][3]["text"] == "Nothing much.\nJust thinking.\nAnd you?"


def test_a_final_draft_shaped_file_keeps_styled_runs_dual_dialogue_and_directions() -> None:
    content = screenplay_from_fdx((DATA / "night-shift.fdx").read_bytes())
    schema_check(document=content, schema=screenplay_schema, what="screenplay")
    assert content["title"] == "Night Shift"
    assert [s["heading"] for s in content["scenes"]] == [
        "INT. NIGHT BUS - MOVING - NIGHT",
        "EXT. HOSPITAL LOADING DOCK - CONTINUOUS",
    ]
    assert [c["name"] for c in content["characters"]] == ["ODILE", "DRIVER (O.S.)", "THEO"]
    bus, dock = (s["elements"] for s in content["scenes"])
    assert (
        bus[1]["text"]
        == "Rain streaks the windows. The bus is empty but for ODILE (60s, a nurse in scrubs) and the driver."
    )
    # A direction in the middle of a speech starts a new element for the same character.
    assert bus[2:4] == [
        {
            "type": "dialogue",
            "character": "ODILE",
            "parenthetical": "to the driver",
            "text": "You missed my stop.",
        },
        {"type": "dialogue", "character": "ODILE", "parenthetical": "beat", "text": "Again."},
    ]
    assert [e.get("character") for e in dock if e["type"] == "dialogue"] == ["THEO", "ODILE"]


@pytest.mark.parametrize(
    "document",
    [
        b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "xxxxxxxxxx"><!ENTITY b "&a;&a;&a;&a;&a;&a;">]>'
        b"<FinalDraft><Content><Paragraph Type='Action'><Text>&b;</Text></Paragraph></Content></FinalDraft>",
        b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        b"<FinalDraft><Content><Paragraph Type='Action'><Text>&x;</Text></Paragraph></Content></FinalDraft>",
    ],
)
def test_fdx_with_entities_is_refused(document: bytes) -> None:
    with pytest.raises(ScreenplayImportError, match="DTD or entities"):
        screenplay_from_fdx(document)


_FDX_BODY = (
    '<FinalDraft><Content><Paragraph Type="Scene Heading"><Text>INT. 東京 - 夜</Text></Paragraph>'
    '<Paragraph Type="Action"><Text>雨が降る。</Text></Paragraph></Content></FinalDraft>'
)


@pytest.mark.parametrize("encoding", ["shift_jis", "euc-jp", "big5", "utf-8"])
def test_fdx_in_a_declared_multi_byte_encoding_is_read(encoding: str) -> None:
    # expat reads none of these but UTF-8 itself ("multi-byte encodings are not supported": a 500).
    data = f'<?xml version="1.0" encoding="{encoding}"?>'.encode() + _FDX_BODY.encode(encoding)
    content = screenplay_from_fdx(data)
    assert content["scenes"] == [
        {"heading": "INT. 東京 - 夜", "elements": [{"type": "action", "text": "雨が降る。"}]}
    ]


@pytest.mark.parametrize("encoding", ["utf8", "UTF8", "utf_8", "latin1", "windows-1252"])
def test_fdx_declaring_its_encoding_by_another_name_python_knows_is_read(encoding: str) -> None:
    # expat knows no aliases: a file declaring "utf8" was "not well-formed XML" at its first accent.
    body = _FDX_BODY.replace("東京 - 夜", "CAFÉ - DAY").replace("雨が降る。", "Crème brûlée.")
    data = f'<?xml version="1.0" encoding="{encoding}"?>'.encode() + body.encode(encoding)
    content = screenplay_from_fdx(data)
    assert content["scenes"] == [
        {"heading": "INT. CAFÉ - DAY", "elements": [{"type": "action", "text": "Crème brûlée."}]}
    ]


@pytest.mark.parametrize(
    ("encoding", "message"),
    [
        ("x-nope", "declares an encoding we do not know (x-nope)"),
        ("rot13", "not readable as the encoding it declares (rot13)"),
        ("zlib", "not readable as the encoding it declares (zlib)"),
        ("utf-32", "not readable as the encoding it declares (utf-32)"),
    ],
)
def test_fdx_in_an_encoding_that_cannot_be_read_is_refused_by_name(encoding: str, message: str) -> None:
    data = f'<?xml version="1.0" encoding="{encoding}"?><FinalDraft><Content/></FinalDraft>'.encode()
    with pytest.raises(ScreenplayImportError, match=re.escape(message)):
        screenplay_from_fdx(data)


def test_fountain_errors_name_the_line() -> None:
    with pytest.raises(ScreenplayImportError) as long_name:
        screenplay_from_fountain("INT. A - DAY\n\nText.\n\n" + "B" * 81 + "\nHello.\n")
    assert long_name.value.message == "line 5: a character name is longer than 80 characters (81)"
    with pytest.raises(ScreenplayImportError) as nul:
        screenplay_from_fountain("Title: x\n\n.HEAD\x00ING\n")
    assert nul.value.message.startswith("line 3: a scene heading contains a NUL")


def test_fountain_the_contract_has_no_place_for_is_left_out_as_exports_md_says() -> None:
    # docs/exports.md ("Importing") lists each of these: a writer's notes, boneyard, outline and
    # production marks are not imported, and centered text and lyrics keep their words as action.
    content = screenplay_from_fountain(
        "Title: The Test\nAuthor: Me\nContact: me@example.com\n\n# Act One\n\n= Before any scene\n\n"
        "INT. HOUSE - DAY #1A#\n\n= The scene's synopsis\n\n> THE END <\n\n~Sing a song\n\n"
        "A [[note]] and /* boneyard */ here.\n\n===\n\nMAX\nHi.\n"
    )
    assert content == {
        "title": "The Test",
        "characters": [{"name": "MAX"}],
        "scenes": [
            {
                "heading": "INT. HOUSE - DAY",
                "summary": "The scene's synopsis",
                "elements": [
                    {"type": "action", "text": "THE END"},
                    {"type": "action", "text": "~Sing a song"},
                    {"type": "action", "text": "A  and  here."},
                    {"type": "dialogue", "character": "MAX", "text": "Hi."},
                ],
            }
        ],
    }


def _fdx_action(text_xml: bytes) -> bytes:
    return (
        b"<FinalDraft><Content><Paragraph Type='Scene Heading'><Text>INT. A</Text></Paragraph>"
        b"<Paragraph Type='Action'>" + text_xml + b"</Paragraph></Content></FinalDraft>"
    )


def test_fdx_text_runs_inside_one_another_are_read_once() -> None:
    content = screenplay_from_fdx(_fdx_action(b"<Text>The <Text>door</Text> opens.</Text>"))
    assert content["scenes"][0]["elements"] == [{"type": "action", "text": "The door opens."}]


def test_fdx_text_runs_nested_deep_cannot_multiply_the_text() -> None:
    # Each run's text held all its nested runs' text again: 20,000 runs deep around 4,000 characters
    # (a 300 KB file) made 80 million characters before the length check refused them.
    depth = 20_000
    content = screenplay_from_fdx(_fdx_action(b"<Text>" * depth + b"x" * 4000 + b"</Text>" * depth))
    assert content["scenes"][0]["elements"] == [{"type": "action", "text": "x" * 4000}]


def test_a_first_scene_heading_with_a_colon_is_a_scene_not_a_title_page() -> None:
    # "EXT. PARK: NIGHT" reads as a title page key ("Ext. park") with a value: the heading vanished and
    # its action joined the next scene.
    content = screenplay_from_fountain("EXT. PARK: NIGHT\n\nBob walks.\n\nINT. CAR - DAY\n\nHe drives.\n")
    assert content["scenes"] == [
        {"heading": "EXT. PARK: NIGHT", "elements": [{"type": "action", "text": "Bob walks."}]},
        {"heading": "INT. CAR - DAY", "elements": [{"type": "action", "text": "He drives."}]},
    ]
    forced = screenplay_from_fountain(".FLASHBACK: 1999\n\nSnow.\n")
    assert forced["scenes"] == [
        {"heading": "FLASHBACK: 1999", "elements": [{"type": "action", "text": "Snow."}]}
    ]
    titled = screenplay_from_fountain("Title: Park\nAuthor: Me\n\nEXT. PARK: NIGHT\n\nBob walks.\n")
    assert titled["title"] == "Park"
    assert [scene["heading"] for scene in titled["scenes"]] == ["EXT. PARK: NIGHT"]


def _fdx(*paragraphs: tuple[str, str]) -> bytes:
    body = "".join(f'<Paragraph Type="{kind}"><Text>{text}</Text></Paragraph>' for kind, text in paragraphs)
    return f"<FinalDraft><Content>{body}</Content></FinalDraft>".encode()


def test_fdx_empty_paragraphs_final_draft_leaves_behind_are_skipped_not_refused_or_made_scenes() -> None:
    # Was: an empty Character paragraph (Enter pressed after a speech) refused the whole file, and an
    # empty Scene Heading after the last transition became an extra empty scene called "SCENE".
    content = screenplay_from_fdx(
        _fdx(
            ("Scene Heading", "INT. KITCHEN - NIGHT"),
            ("Character", "ANNA"),
            ("Dialogue", "Is it done?"),
            ("Character", ""),
            ("Action", "She waits."),
            ("Character", "  "),
            ("Dialogue", "Nobody says this."),
            ("Scene Heading", ""),
            ("Action", "A hallway nobody named."),
            ("Transition", "CUT TO:"),
            ("Scene Heading", ""),
        )
    )
    assert content["scenes"] == [
        {
            "heading": "INT. KITCHEN - NIGHT",
            "elements": [
                {"type": "dialogue", "character": "ANNA", "text": "Is it done?"},
                {"type": "action", "text": "She waits."},
                {"type": "action", "text": "Nobody says this."},
            ],
        },
        {
            "heading": "SCENE",
            "elements": [
                {"type": "action", "text": "A hallway nobody named."},
                {"type": "transition", "text": "CUT TO:"},
            ],
        },
    ]
    assert content["characters"] == [{"name": "ANNA"}]


@pytest.mark.parametrize("declaration", ['<?xml version="1.0" encoding="UTF-8"?>\n', ""])
def test_fdx_in_latin1_where_utf8_is_read_says_it_is_not_utf8(declaration: str) -> None:
    # An FDX saved in Windows-1252 by some tool, declaring UTF-8 or nothing (so UTF-8): the answer was
    # "line 2: this is not well-formed XML (column 95)", which says nothing of the encoding.
    body = _FDX_BODY.replace("東京 - 夜", "CAFÉ - DAY").replace("雨が降る。", "Crème brûlée.")
    data = declaration.encode() + body.encode("latin-1")
    with pytest.raises(ScreenplayImportError) as refused:
        screenplay_from_fdx(data)
    byte = data.index("É".encode("latin-1")) + 1
    assert f"the file is not UTF-8 text (byte {byte} cannot be read)" in str(refused.value)
    assert "save it as UTF-8" in str(refused.value)
