from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management.base import CommandError, CommandParser

from personas.cards import CardError, PersonaImport, persona_file_read
from personas.services import persona_import
from storyproject.commands import EXIT_INVALID, ProjectCommand


class Command(ProjectCommand):
    help = (
        "Import personas from our JSON or Character Card V1/V2/V3 files (JSON or PNG), or a zip of such "
        "files (the admin's export of several personas). Every file is read and checked first; if any is "
        "bad, nothing is imported (exit status 2). A persona with the same name is updated."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("paths", nargs="+", type=Path, metavar="PATH")

    def handle(self, *args: Any, **options: Any) -> None:
        personas = [persona for path in options["paths"] for persona in _read(path)]
        try:
            results = persona_import(personas=personas, sources=[str(path) for path in options["paths"]])
        except ValidationError as error:
            raise CommandError(
                f"Nothing imported: {'; '.join(error.messages)}", returncode=EXIT_INVALID
            ) from None
        for persona, status in results:
            # The display name is the file's: control characters (terminal escapes) are not written out.
            shown = "".join(c if c.isprintable() else "?" for c in persona.display_name)
            self.stdout.write(f"{status} {persona.name} ({shown})")
        self.stdout.write(f"{len(results)} persona(s) imported.")


def _read(path: Path) -> list[PersonaImport]:
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    try:
        with path.open("rb") as file:
            # Read a byte past the limit, no more: enough to tell the file is too large.
            data = file.read(limit + 1)
            size = os.fstat(file.fileno()).st_size
    except OSError as error:
        raise CommandError(
            f"Nothing imported: cannot read {path}: {error.strerror}.", returncode=EXIT_INVALID
        ) from None
    try:
        return persona_file_read(data=data, filename=str(path), size=size)
    except CardError as error:
        raise CommandError(f"Nothing imported: {error}", returncode=EXIT_INVALID) from None
