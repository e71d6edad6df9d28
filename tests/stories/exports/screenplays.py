"""Hypothesis strategies: screenplays valid per stories/contract/screenplay.schema.json, full of text
that means something in Fountain, XML or reportlab markup."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

HOSTILE_FRAGMENTS = [
    "INT. ",
    "EXT. ",
    "int. ",
    "I/E ",
    "EST ",
    ".",
    "...",
    "===",
    "=",
    "[[",
    "]]",
    "/*",
    "*/",
    "*",
    "**",
    "_",
    "\\",
    ":",
    "TO:",
    "CUT TO:",
    "FADE OUT.",
    "ALL CAPS",
    "\n",
    "\n\n",
    "\r\n",
    "  ",
    " ",
    "\t",
    "!",
    "@",
    "#",
    "#1#",
    "~",
    ">",
    "<",
    "<b>",
    "&amp;",
    "(",
    ")",
    "^",
    "Ωμέγα",
    "ΣΙΓΜΑ",
    "李小龍",
    "مرحبا",
    "Zoë",
]

# Model text may hold any printable character; controls, surrogates and private-use characters are
# tested on their own (see test_control_characters_are_removed).
_CHARACTERS = st.characters(exclude_categories=("Cc", "Cs", "Co"))
_FRAGMENT = st.one_of(st.sampled_from(HOSTILE_FRAGMENTS), st.text(_CHARACTERS, min_size=1, max_size=6))


def hostile_text(*, max_size: int) -> st.SearchStrategy[str]:
    return (
        st.lists(_FRAGMENT, min_size=1, max_size=10)
        .map(lambda parts: "".join(parts)[:max_size])
        .filter(lambda text: len(text) >= 1)
    )


def _name() -> st.SearchStrategy[str]:
    # A name somebody can read: at least one visible character.
    return hostile_text(max_size=80).filter(lambda name: name.strip())


@st.composite
def screenplays(draw: Any) -> dict[str, Any]:
    names = draw(st.lists(_name(), min_size=1, max_size=4))
    scenes = draw(st.lists(_scene(names), min_size=1, max_size=4))
    return {
        "title": draw(hostile_text(max_size=200).filter(lambda title: title.strip())),
        "characters": [{"name": name} for name in names],
        "scenes": scenes,
    }


def _scene(names: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    element = st.one_of(
        st.fixed_dictionaries(
            {"type": st.sampled_from(["action", "transition"]), "text": hostile_text(max_size=300)}
        ),
        st.fixed_dictionaries(
            {
                "type": st.just("dialogue"),
                "character": st.sampled_from(names),
                "text": hostile_text(max_size=300),
            },
            optional={"parenthetical": st.one_of(st.just(""), st.just("()"), hostile_text(max_size=60))},
        ),
    )
    return st.fixed_dictionaries(
        {"heading": hostile_text(max_size=200), "elements": st.lists(element, max_size=6)},
        optional={"summary": hostile_text(max_size=100)},
    )
