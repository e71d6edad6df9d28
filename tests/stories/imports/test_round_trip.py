"""Export then import gives the same screenplay, modulo what the format cannot express (normal.py)."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stories.exports import ExportMeta
from stories.exports.fdx import fdx_from_screenplay
from stories.exports.fountain import fountain_from_screenplay
from stories.generation.prompt import screenplay_schema
from stories.generation.validation import schema_check
from stories.imports import screenplay_from_fdx, screenplay_from_fountain
from tests.stories.exports.screenplays import hostile_text, screenplays
from tests.stories.imports.normal import fdx_normal, fountain_normal


@st.composite
def _with_logline(draw: Any) -> dict[str, Any]:
    screenplay = draw(screenplays())
    if draw(st.booleans()):
        screenplay["logline"] = draw(hostile_text(max_size=300))
    return screenplay


def _round_trip(screenplay: dict[str, Any], export: Any, read: Any, normal: Any) -> None:
    imported = read(export(content=screenplay, meta=ExportMeta(title=screenplay["title"])))
    assert imported == normal(screenplay)
    schema_check(document=imported, schema=screenplay_schema, what="screenplay")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_with_logline())
def test_fountain_export_then_import_is_the_same_screenplay(screenplay: dict[str, Any]) -> None:
    _round_trip(screenplay, fountain_from_screenplay, screenplay_from_fountain, fountain_normal)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(screenplays())
def test_fdx_export_then_import_is_the_same_screenplay(screenplay: dict[str, Any]) -> None:
    _round_trip(screenplay, fdx_from_screenplay, screenplay_from_fdx, fdx_normal)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_with_logline())
def test_an_imported_screenplay_exports_and_imports_unchanged(screenplay: dict[str, Any]) -> None:
    # The second trip is exact: what survived one round trip is exactly what Fountain expresses.
    once = screenplay_from_fountain(
        fountain_from_screenplay(content=screenplay, meta=ExportMeta(title=screenplay["title"]))
    )
    twice = screenplay_from_fountain(
        fountain_from_screenplay(content=once, meta=ExportMeta(title=once["title"]))
    )
    assert twice == once


def test_an_action_in_capitals_with_a_sharp_s_comes_back_as_action() -> None:
    # The importer reads "GROßMANN" over a line as a cue (German capitals keep "ß"): an action paragraph
    # whose first line is such capitals is written forced, as any action in capitals is.
    screenplay = {
        "title": "Berlin",
        "characters": [{"name": "GROßMANN"}],
        "scenes": [
            {
                "heading": "INT. BÜRO - TAG",
                "elements": [
                    {"type": "action", "text": "DIE STRAßE IST LEER.\nNiemand kommt."},
                    {"type": "dialogue", "character": "GROßMANN", "text": "Ja."},
                ],
            }
        ],
    }
    _round_trip(screenplay, fountain_from_screenplay, screenplay_from_fountain, fountain_normal)
