from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import CommandError, CommandParser

from personas.cards import persona_file
from personas.selectors import personas_for_export
from storyproject.commands import ProjectCommand
from storyproject.untrusted import text_quoted


class Command(ProjectCommand):
    help = (
        "Export personas (all, or those NAMED) as our JSON or as Character Card V2 JSON; "
        "--png writes V2 card PNGs. One file per persona in --out (default: the current directory)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("names", nargs="*", metavar="NAME")
        parser.add_argument("--format", choices=["ours", "card-v2"], default="ours")
        parser.add_argument("--png", action="store_true", help="Character Card V2 PNG (implies card-v2).")
        parser.add_argument("--out", type=Path, default=Path("."), metavar="DIR")

    def handle(self, *args: Any, **options: Any) -> None:
        found = personas_for_export(names=options["names"])
        missing = sorted(set(options["names"]) - {persona.name for persona in found})
        if missing:
            raise CommandError(f"No persona named: {_names_quoted(missing)}. Nothing exported.")
        kind = "card-v2-png" if options["png"] else options["format"]
        out: Path = options["out"]
        try:
            out.mkdir(parents=True, exist_ok=True)
            for persona in found:
                exported = persona_file(persona, kind=kind)
                (out / exported.filename).write_bytes(exported.data)
                self.stdout.write(str(out / exported.filename))
        except OSError as error:
            # Not a directory, no permission, a full disk: said in one line, whatever was written kept.
            raise CommandError(f"Could not write to {out}: {error.strerror or error}.") from None
        self.stdout.write(f"{len(found)} persona(s) exported.")


def _names_quoted(names: list[str], *, shown: int = 5) -> str:
    """The first few names, each quoted short, and how many more: one line whatever was asked."""
    quoted = ", ".join(text_quoted(name) for name in names[:shown])
    return f"{quoted} and {len(names) - shown} more" if len(names) > shown else quoted
