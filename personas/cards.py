"""Persona files: our own JSON and Character Cards (V1, V2, V3; JSON or PNG), in and out.

Reading turns a file's bytes into ``PersonaImport`` values and raises ``CardError`` with a sentence
an editor can act on; it writes nothing (``personas.services.persona_import`` does). Writing turns a
persona into our JSON, a Character Card V2 JSON, or a V2 PNG.

How card fields map onto a persona config (docs/personas.md, "Persona files and Character Cards"):

- ``name`` is the display name; the persona's key is its slug (or the key we exported it with).
- ``description``, ``personality``, ``scenario``, ``system_prompt`` and ``tags`` keep their names.
- ``mes_example`` becomes ``example_lines``, one per ``<START>`` block; one that is not text is kept
  under ``private.card``.
- ``creator_notes``, ``creator`` and ``character_version`` go to ``private``, which never reaches a
  prompt; so does every other card field (``first_mes``, ``alternate_greetings``, ``character_book``,
  V3 fields...), under ``private.card``, to be written back on export.
- ``extensions`` is kept as it is. On export we add one key of our own, ``screenplay_studio``, with
  the persona's key and the config fields cards have no place for (voice, backstory...), so that an
  export re-imports to the same persona. A ``private`` creator, creator notes or version that is not
  a non-empty string (a card field is a string) is written there too, as it is.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import importlib.resources
import io
import json
import re
import unicodedata
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_slug
from django.utils.text import slugify
from PIL import Image, ImageDraw, ImageFont, PngImagePlugin, UnidentifiedImageError

from personas.models import RESERVED_NAMES
from personas.schema import persona_config_errors
from storyproject.untrusted import UntrustedJSONError, json_loads_untrusted, one_line_problem, text_visible

OURS_FORMAT = "screenplay-studio/persona"
# The versions of our format this code reads. A file without "format" and "version" (one written by
# hand, like personas/demo/personas.json) is read as version 1.
OURS_VERSIONS = (1,)
NAMESPACE = "screenplay_studio"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# What the admin's export of several personas makes: a zip (an entry first, or an empty one's end).
ZIP_SIGNATURES = (b"PK\x03\x04", b"PK\x05\x06")
# A card PNG is a portrait; its pixels are decoded to reach text chunks stored after them.
PNG_MAX_PIXELS = 4096 * 4096
# The images of a zip's cards together, decoded one after the other (a 4096x4096 card takes some 0.3 s
# of a core): 279 of our exported portraits (400x600).
ZIP_MAX_PIXELS = 4 * PNG_MAX_PIXELS
# Personas in one file of ours. Each is checked, compared and shown in the admin's preview, then saved
# with a revision: 40,000 (2.3 MB) took 20 s of a core to preview, in a 20 MB page.
IMPORT_MAX_PERSONAS = 1000
NAME_MAX_CHARS = 100
DISPLAY_NAME_MAX_CHARS = 200

_TEXT_FIELDS = ("description", "personality", "scenario", "system_prompt")
_PRIVATE_FIELDS = ("creator_notes", "creator", "character_version")
_MAPPED_FIELDS = {"name", "tags", "mes_example", "extensions", *_TEXT_FIELDS, *_PRIVATE_FIELDS}
# Card V2 fields we have no use for but must write back; strict V2 readers refuse any others.
_V2_PASSTHROUGH = ("first_mes", "alternate_greetings", "post_history_instructions", "character_book")
_START = re.compile(r"<START>", re.IGNORECASE)


class CardError(ValueError):
    """A file that is not a persona or a card we can read; the message says why."""


@dataclass(frozen=True)
class PersonaImport:
    name: str
    display_name: str
    config_data: dict[str, Any]
    # None: the file does not say (a Character Card has no such field): a new persona is active, an
    # existing one keeps what it is (a card re-imported for a deactivated persona reactivated it).
    is_active: bool | None = None

    def active_after(self, stored: Any | None) -> bool:
        """Whether the persona is active once imported over ``stored`` (the persona of that key, or None)."""
        if self.is_active is not None:
            return self.is_active
        return stored.is_active if stored is not None else True


def keys_twice(personas: list[PersonaImport]) -> list[str]:
    """The keys more than one of ``personas`` has: importing them, the second would overwrite the first."""
    keys = [persona.name for persona in personas]
    return sorted({key for key in keys if keys.count(key) > 1})


class PersonaFile(Protocol):
    """What the writers need from a persona (a ``PersonaConfig`` fits)."""

    @property
    def name(self) -> str: ...
    @property
    def display_name(self) -> str: ...
    @property
    def config_data(self) -> Any: ...
    @property
    def is_active(self) -> bool: ...


# --- Reading ----------------------------------------------------------------------------------


def persona_file_read(*, data: bytes, filename: str = "", size: int | None = None) -> list[PersonaImport]:
    """The personas in one file (a card holds one; our JSON may hold a list). Raises ``CardError``.

    ``size``: the whole file's, when ``data`` is only its beginning (a reader that stops past the limit).
    """
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    if len(data) > limit:
        size = max(size or 0, len(data))
        raise CardError(f"{_label(filename)}is {size} bytes; the limit is {limit} bytes.")
    if data.startswith(PNG_SIGNATURE):
        return [_from_card(_png_card(data, filename), filename)]
    if data.startswith(ZIP_SIGNATURES):
        return _from_zip(data, filename)
    return _from_json_file(data, filename)


def _from_json_file(data: bytes, filename: str) -> list[PersonaImport]:
    parsed = _json_loads(data, filename)
    if isinstance(parsed, list):
        if not parsed:
            raise CardError(f"{_label(filename)}is an empty list: no persona to import.")
        if len(parsed) > IMPORT_MAX_PERSONAS:
            raise CardError(
                f"{_label(filename)}holds {len(parsed)} personas; one file may hold at most "
                f"{IMPORT_MAX_PERSONAS}: split it."
            )
        personas = [_from_ours(item, filename) for item in parsed]
        _keys_once(personas, filename)
        return personas
    if isinstance(parsed, dict) and "config_data" in parsed:
        return [_from_ours(parsed, filename)]
    return [_from_card(parsed, filename)]


def _from_zip(data: bytes, filename: str) -> list[PersonaImport]:
    """The personas of every file in a zip, as the admin's export of several personas writes it: one
    persona file or card (JSON or PNG) per entry; all of them within the limits one file has."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            entries = [info for info in archive.infolist() if not info.is_dir()]
            if not entries:
                raise CardError(f"{_label(filename)}is an empty zip: no persona to import.")
            if len(entries) > IMPORT_MAX_PERSONAS:
                raise CardError(
                    f"{_label(filename)}holds {len(entries)} files; one zip may hold at most "
                    f"{IMPORT_MAX_PERSONAS}: split it."
                )
            personas = _zip_entries_read(archive, entries, filename)
    except (zipfile.BadZipFile, zlib.error, NotImplementedError, RuntimeError, EOFError, OSError) as error:
        # A damaged (a bad CRC, or deflated data zlib cannot read), encrypted (RuntimeError), or oddly
        # compressed (NotImplementedError), or cut short (EOFError) archive.
        raise CardError(f"{_label(filename)}is not a zip this site can read ({error}).") from None
    if len(personas) > IMPORT_MAX_PERSONAS:
        raise CardError(
            f"{_label(filename)}holds {len(personas)} personas; one import may hold at most "
            f"{IMPORT_MAX_PERSONAS}: split it."
        )
    _keys_once(personas, filename)
    return personas


def _keys_once(personas: list[PersonaImport], filename: str) -> None:
    """Refuse a file that gives one key to more than one persona: the second would overwrite the first."""
    twice = keys_twice(personas)
    if twice:
        raise CardError(
            f"{_label(filename)}has more than one persona with the key {', '.join(map(repr, twice[:5]))}; "
            "each key names one persona."
        )


def _zip_entries_read(
    archive: zipfile.ZipFile, entries: list[zipfile.ZipInfo], filename: str
) -> list[PersonaImport]:
    # All the entries together unpack to no more than one file may hold, whatever sizes they claim (a
    # small zip can unpack to gigabytes), and they are all unpacked before any is read.
    limit = left = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    files = []
    for info in entries:
        with archive.open(info) as entry:
            files.append((info.filename, entry.read(left + 1)))
        left -= len(files[-1][1])
        if left < 0:
            raise CardError(
                f"{_label(filename)}unpacks to more than {limit} bytes; the limit is {limit} bytes."
            )
    pixels = sum(_png_pixels(data) for _, data in files)
    if pixels > ZIP_MAX_PIXELS:
        raise CardError(
            f"{_label(filename)}holds images of {pixels} pixels together; a zip's cards may hold at most "
            f"{ZIP_MAX_PIXELS}: import them in smaller zips."
        )
    personas = []
    for entry_name, data in files:
        # The entry's name is the file's author's: control characters (terminal escapes, in the
        # import_personas command's error) are not passed on.
        shown = "".join(c if c.isprintable() else "?" for c in entry_name)
        name = f"{filename}: {shown}" if filename else shown
        if data.startswith(PNG_SIGNATURE):
            personas.append(_from_card(_png_card(data, name), name))
        else:
            personas += _from_json_file(data, name)  # a zip inside the zip is not read: it is not JSON.
    return personas


def _png_pixels(data: bytes) -> int:
    """The pixels a card PNG's text costs to reach (every frame's), from its header; 0 if not a PNG."""
    if not data.startswith(PNG_SIGNATURE):
        return 0
    try:
        with Image.open(io.BytesIO(data)) as image:
            return int(image.size[0] * image.size[1] * getattr(image, "n_frames", 1))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return 0  # _png_card says what is wrong with it


def _label(filename: str) -> str:
    return f"{filename} " if filename else "The file "


def _json_loads(data: bytes, filename: str, *, in_png: bool = False) -> Any:
    try:
        return json_loads_untrusted(data.decode("utf-8-sig"))
    except UnicodeDecodeError:
        if in_png:
            raise CardError(f"{_label(filename)}has a card chunk whose text is not UTF-8.") from None
        raise CardError(f"{_label(filename)}is neither a PNG nor UTF-8 JSON text.") from None
    except UntrustedJSONError as error:
        raise CardError(f"{_label(filename)}is refused. {error}") from None


def _png_card(data: bytes, filename: str) -> Any:
    """The card JSON inside a PNG: the ``ccv3`` text chunk if there is one, else ``chara``."""
    chunks = _png_text_chunks(data, filename)
    encoded = chunks.get("ccv3") or chunks.get("chara")
    if not encoded:
        raise CardError(f"{_label(filename)}is a PNG without a character card (no 'chara' or 'ccv3' chunk).")
    try:
        decoded = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise CardError(f"{_label(filename)}has a card chunk that is not base64.") from None
    return _json_loads(decoded, filename, in_png=True)


def _png_text_chunks(data: bytes, filename: str) -> dict[str, str]:
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            # Reading the text chunks decodes every frame of an animated PNG (Pillow's PngImageFile.text
            # loads the image, seeking to its last frame): its frames count too (acTL, read at open).
            frames = getattr(image, "n_frames", 1)
            if width * height * frames <= PNG_MAX_PIXELS:
                return dict(image.text)  # type: ignore[attr-defined]
    except UnidentifiedImageError:
        # Pillow's message names its in-memory buffer ("cannot identify image file <_io.BytesIO ...>").
        raise CardError(
            f"{_label(filename)}is not a readable PNG image (not an image Pillow can identify)."
        ) from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise CardError(f"{_label(filename)}is not a readable PNG image ({error}).") from None
    size = f"{width}x{height} image" + (f" of {frames} frames" if frames > 1 else "")
    raise CardError(f"{_label(filename)}is a {size}; a card is at most 4096x4096 pixels, all frames counted.")


def _from_ours(raw: object, filename: str) -> PersonaImport:
    if not isinstance(raw, dict) or not isinstance(raw.get("config_data"), dict):
        raise CardError(f"{_label(filename)}has a persona without a 'config_data' object.")
    _ours_version_check(raw, filename)
    is_active = raw.get("is_active")
    if is_active is not None and not isinstance(is_active, bool):
        raise CardError(f"{_label(filename)}has an 'is_active' that is not true or false.")
    display_name = _display_name(raw.get("display_name") or raw.get("name"), filename)
    return _checked(
        PersonaImport(
            name=_persona_key(raw.get("name"), display_name),
            display_name=display_name,
            config_data=raw["config_data"],
            is_active=is_active,
        ),
        filename,
    )


def _ours_version_check(raw: dict[str, Any], filename: str) -> None:
    """Refuse a file of a format or version we do not know: a newer version may mean its fields
    differently, and reading it as version 1 would import something else than it says."""
    known = ", ".join(map(str, OURS_VERSIONS))
    form, version = raw.get("format", OURS_FORMAT), raw.get("version", 1)
    if form != OURS_FORMAT:
        raise CardError(
            f"{_label(filename)}is in the format {_shown(form)}; this site reads {OURS_FORMAT!r} "
            f"(version {known}) and Character Cards."
        )
    # A JSON true is a Python int equal to 1, and 1.0 equals 1: only an integer is a version.
    if type(version) is not int or version not in OURS_VERSIONS:
        raise CardError(
            f"{_label(filename)}is version {_shown(version)} of {OURS_FORMAT!r}; this site reads version "
            f"{known} only."
        )


def _shown(value: object) -> str:
    """A value from the file, quoted as JSON, at most 40 characters of it."""
    text = json.dumps(value, ensure_ascii=True)
    return text if len(text) <= 40 else text[:40] + "..."


def _from_card(raw: object, filename: str) -> PersonaImport:
    card = _card_data(raw, filename)
    extensions = dict(card.get("extensions") or {})
    ours = extensions.pop(NAMESPACE, None)
    ours = ours if isinstance(ours, dict) else {}
    config: dict[str, Any] = {key: card[key] for key in _TEXT_FIELDS if _nonempty(card.get(key))}
    if _nonempty(card.get("tags")):
        config["tags"] = card["tags"]
    examples = _example_lines(card.get("mes_example"))
    if examples:
        config["example_lines"] = examples
    if isinstance(ours.get("config"), dict):
        config.update(ours["config"])
    private = _private(card, ours)
    if private:
        config["private"] = private
    if extensions:
        config["extensions"] = extensions
    display_name = _display_name(card.get("name"), filename)
    imported = PersonaImport(
        name=_persona_key(ours.get("name"), display_name), display_name=display_name, config_data=config
    )
    return _checked(imported, filename)


def _card_data(raw: object, filename: str) -> dict[str, Any]:
    """The card's fields: ``data`` for V2 and V3, the object itself for V1."""
    if not isinstance(raw, dict):
        raise CardError(f"{_label(filename)}is not a persona or a Character Card (expected a JSON object).")
    spec = raw.get("spec")
    if spec in ("chara_card_v2", "chara_card_v3"):
        if not isinstance(raw.get("data"), dict):
            raise CardError(f"{_label(filename)}is a {spec} card without a 'data' object.")
        card = raw["data"]
    elif (
        spec is None
        and "name" in raw
        and any(key in raw for key in ("description", "personality", "first_mes"))
    ):
        card = raw  # Character Card V1: the fields at the top level.
    else:
        raise CardError(
            f"{_label(filename)}is not a persona or a Character Card (no 'config_data', no card 'spec')."
        )
    if not isinstance(card.get("extensions", {}), dict):
        raise CardError(f"{_label(filename)}has 'extensions' that is not an object.")
    return card


def _private(card: dict[str, Any], ours: dict[str, Any]) -> dict[str, Any]:
    private = {key: card[key] for key in _PRIVATE_FIELDS if _nonempty(card.get(key))}
    rest = {
        key: value
        for key, value in card.items()
        if (key not in _MAPPED_FIELDS or (key == "mes_example" and not isinstance(value, str)))
        and _nonempty(value)
    }
    if rest:
        private["card"] = rest
    if isinstance(ours.get("private"), dict):
        private.update(ours["private"])
    return private


def _example_lines(mes_example: object) -> list[str]:
    if not isinstance(mes_example, str):
        return []
    return [block.strip() for block in _START.split(mes_example) if block.strip()]


def _display_name(value: object, filename: str) -> str:
    if not isinstance(value, str) or not " ".join(value.split()):
        raise CardError(f"{_label(filename)}has no name.")
    # A name with line breaks or tabs (a card from elsewhere) is made one line; any other, as the admin
    # accepts it (repeated spaces, bidi marks), comes back as it was exported.
    name = value.strip()
    if any(char.isspace() and one_line_problem(char) for char in name):
        name = " ".join(name.split())
    if problem := one_line_problem(name):
        # Refused by the persona's own check too, but only once the import is confirmed.
        raise CardError(f"{_label(filename)}has a persona whose name {problem}; a name is one line.")
    if len(name) > DISPLAY_NAME_MAX_CHARS:
        raise CardError(f"{_label(filename)}has a name of {len(name)} characters; the limit is 200.")
    if not text_visible(name):
        # Refused by the persona's own check (PersonaConfig.clean) too, but only once the import is
        # confirmed: the preview showed it as new.
        raise CardError(
            f"{_label(filename)}has a persona whose name has no visible character (only marks such as "
            "U+200F): writers pick the persona by it."
        )
    return name


def _persona_key(value: object, display_name: str) -> str:
    """The key we exported it with when that is a valid key, else one made from the display name.

    Valid as the model's key field says (``validate_slug``): the admin accepts keys such as
    ``Noir-Detective`` or ``a--b`` that ``slugify`` would change, and such a persona's export must
    come back to it, not to the key of its display name (which may be another persona's).
    """
    if isinstance(value, str) and 0 < len(value) <= NAME_MAX_CHARS and _is_slug(value):
        return value
    # Composed first: the same name typed decomposed (NFD, an "e" and a combining accent) is the same key.
    display_name = unicodedata.normalize("NFC", display_name)
    digest = hashlib.sha256(display_name.encode()).hexdigest()[:10]
    slug = slugify(display_name)
    if any(_slug_drops(char) for char in display_name):
        # slugify keeps ASCII only: "Mei 李" and "Mei 王" were both "mei", so the second card updated
        # the first persona (a zip of both was refused). The hash tells them apart.
        slug = slug[: NAME_MAX_CHARS - len(digest) - 1].strip("-_")
        return f"{slug}-{digest}" if slug else "persona-" + digest
    # A name with nothing slugify keeps (no Latin letter) has a stable key from its hash instead.
    return slug[:NAME_MAX_CHARS].strip("-_") or "persona-" + digest


def _slug_drops(char: str) -> bool:
    """Whether ``slugify`` loses this letter or digit entirely (李, Ж, ß), not only its accent (é)."""
    return char.isalnum() and not unicodedata.normalize("NFKD", char).encode("ascii", "ignore")


def _is_slug(value: str) -> bool:
    try:
        validate_slug(value)
    except ValidationError:
        return False
    return True


def _checked(imported: PersonaImport, filename: str) -> PersonaImport:
    if imported.name in RESERVED_NAMES:
        raise CardError(
            f"{_label(filename)}has a persona named {imported.name!r}, the address of the API's batch of "
            f"contexts (/api/personas/{imported.name}/): give it another key."
        )
    if not imported.config_data:
        # The model refuses an empty config ("This field cannot be blank."): said here, before a preview
        # that would show it as new and an import that would then fail naming no persona.
        raise CardError(
            f"{_label(filename)}has a persona ({imported.name}) with an empty config: give it at least "
            "one field, such as a description."
        )
    errors = persona_config_errors(imported.config_data)
    if errors:
        raise CardError(f"{_label(filename)}gives a persona config that is not valid: {'; '.join(errors)}")
    return imported


def _nonempty(value: object) -> bool:
    return value not in (None, "", [], {})


# --- Writing ----------------------------------------------------------------------------------


def persona_ours_json(persona: PersonaFile) -> bytes:
    """Our own format: the persona as stored, readable back by ``persona_file_read``."""
    document = {
        "format": OURS_FORMAT,
        "version": 1,
        "name": persona.name,
        "display_name": persona.display_name,
        "is_active": persona.is_active,
        "config_data": persona.config_data,
    }
    return json.dumps(document, ensure_ascii=False, indent=2).encode()


def persona_card_v2(persona: PersonaFile) -> dict[str, Any]:
    """A Character Card V2 (``chara_card_v2``) for the persona; see the module docstring."""
    config = persona.config_data
    private = dict(config.get("private") or {})
    card_rest = private.pop("card", {}) if isinstance(private.get("card"), dict) else {}
    data: dict[str, Any] = {
        "name": persona.display_name,
        **{key: _str(config.get(key)) for key in _TEXT_FIELDS},
        "first_mes": "",
        "mes_example": "".join(f"<START>\n{line}\n" for line in config.get("example_lines") or []),
        "alternate_greetings": [],
        "post_history_instructions": "",
        "tags": list(config.get("tags") or []),
        **{key: _card_string(private, key) for key in _PRIVATE_FIELDS},
    }
    data.update({key: card_rest[key] for key in _V2_PASSTHROUGH if key in card_rest})
    leftover = {
        key: value
        for key, value in config.items()
        if key not in {*_TEXT_FIELDS, "tags", "private", "extensions"}
    }
    namespace: dict[str, Any] = {"name": persona.name, "config": leftover}
    if private:
        namespace["private"] = private
    if card_rest:
        namespace["private"] = {**namespace.get("private", {}), "card": card_rest}
    data["extensions"] = {**(config.get("extensions") or {}), NAMESPACE: namespace}
    return {"spec": "chara_card_v2", "spec_version": "2.0", "data": data}


def persona_card_v2_json(persona: PersonaFile) -> bytes:
    return json.dumps(persona_card_v2(persona), ensure_ascii=False, indent=2).encode()


def persona_card_v2_png(persona: PersonaFile) -> bytes:
    """A card PNG: a plain portrait with the name, the V2 card base64-encoded in a ``chara`` chunk."""
    card = json.dumps(persona_card_v2(persona), ensure_ascii=False).encode()
    info = PngImagePlugin.PngInfo()
    info.add_text("chara", base64.b64encode(card).decode("ascii"))
    buffer = io.BytesIO()
    _portrait(persona.display_name).save(buffer, "PNG", pnginfo=info)
    return buffer.getvalue()


def _portrait(display_name: str) -> Image.Image:
    # We keep no picture of a persona: a colour of its own, stable per name, and its name.
    digest = hashlib.sha256(display_name.encode()).digest()
    image = Image.new("RGB", (400, 600), tuple(64 + byte // 2 for byte in digest[:3]))
    ImageDraw.Draw(image).text((24, 540), display_name[:40], fill="white", font=_portrait_font())
    return image


@functools.cache
def _portrait_font() -> ImageFont.FreeTypeFont:
    """Courier Prime, which the PDF export prints with (screenplain ships it): Pillow's own default font
    has ASCII letters only, and drew a box for every accented one ("Jos□", "M□ller"). Courier Prime
    has no glyph for other scripts either; it draws nothing for them rather than a box."""
    font = importlib.resources.files("screenplain.export") / "courier_prime" / "Courier Prime.ttf"
    with importlib.resources.as_file(font) as path:
        return ImageFont.truetype(str(path), 28)


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""


def _card_string(private: dict[str, Any], key: str) -> str:
    """A private value for its card field (a string), taken out of ``private`` only when it fits there.

    A number, a list or an empty string (which import skips) stays in ``private``, which the export
    writes to our extension, so the round trip gives back the value itself, not "".
    """
    value = private.get(key)
    if isinstance(value, str) and value:
        return private.pop(key)
    return ""


# --- Files and archives (the export command and the admin action) ------------------------------

EXPORT_KINDS = ("ours", "card-v2", "card-v2-png")
_WRITERS = {
    "ours": (persona_ours_json, ".json", "application/json"),
    "card-v2": (persona_card_v2_json, ".card.json", "application/json"),
    "card-v2-png": (persona_card_v2_png, ".card.png", "image/png"),
}


@dataclass(frozen=True)
class ExportedPersonaFile:
    filename: str
    data: bytes
    content_type: str


def persona_file(persona: PersonaFile, *, kind: str) -> ExportedPersonaFile:
    """One persona as a file of ``kind`` (one of ``EXPORT_KINDS``), named after its key."""
    write, suffix, content_type = _WRITERS[kind]
    return ExportedPersonaFile(persona.name + suffix, write(persona), content_type)


def persona_files_zip(personas: Sequence[PersonaFile], *, kind: str) -> bytes:
    """Several personas as one zip archive of ``persona_file`` files."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for persona in personas:
            exported = persona_file(persona, kind=kind)
            archive.writestr(exported.filename, exported.data)
    return buffer.getvalue()
