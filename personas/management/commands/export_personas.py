from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import CommandError, CommandParser

from personas.cards import persona_file
from personas.selectors import personas_for_export
from storyproject.commands import EXIT_INVALID, ProjectCommand
from storyproject.untrusted import text_quoted


class Command(ProjectCommand):
    help = (
        "Export personas (all, or those NAMED) as our JSON or as Character Card V2 JSON; "
        "--png writes V2 card PNGs. One file per persona in --out (default: the current directory); "
        "files already there are replaced only with --overwrite."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("names", nargs="*", metavar="NAME")
        parser.add_argument("--format", choices=["ours", "card-v2"], default="ours")
        parser.add_argument("--png", action="store_true", help="Character Card V2 PNG (implies card-v2).")
        parser.add_argument("--out", type=Path, default=Path("."), metavar="DIR")
        parser.add_argument(
            "--overwrite", action="store_true", help="Replace files of the same names in DIR."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        found = personas_for_export(names=options["names"])
        missing = sorted(set(options["names"]) - {persona.name for persona in found})
        if missing:
            raise CommandError(
                f"No persona named: {_names_quoted(missing)}. Nothing exported.", returncode=EXIT_INVALID
            )
        kind = "card-v2-png" if options["png"] else options["format"]
        out: Path = options["out"]
        exported = [persona_file(persona, kind=kind) for persona in found]
        if not options["overwrite"]:
            # An export into a folder of earlier ones (an editor's own edits, another site's) replaced
            # them without a word: said first, and nothing written.
            taken = [file.filename for file in exported if (out / file.filename).exists()]
            if taken:
                raise CommandError(
                    f"{len(taken)} file(s) already in {out}: {_names_quoted(taken)}. Nothing exported; "
                    "pass --overwrite to replace them.",
                    returncode=EXIT_INVALID,
                )
        try:
            out.mkdir(parents=True, exist_ok=True)
            for file in exported:
                self._write(out / file.filename, file.data, overwrite=options["overwrite"])
        except FileExistsError:
            # From mkdir: a file is where the directory should be ("File exists" read as if an exported
            # file were in the way).
            raise CommandError(f"Could not write to {out}: it is a file, not a directory.") from None
        except OSError as error:
            # Not a directory, no permission, a full disk: said in one line, whatever was written kept.
            raise CommandError(f"Could not write to {out}: {error.strerror or error}.") from None
        self.stdout.write(f"{len(found)} persona(s) exported.")

    def _write(self, path: Path, data: bytes, *, overwrite: bool) -> None:
        try:
            # "x": a file that appeared since the check is not replaced either.
            with path.open("wb" if overwrite else "xb") as written:
                written.write(data)
        except FileExistsError:
            raise CommandError(f"{path} appeared while exporting; pass --overwrite to replace it.") from None
        self.stdout.write(str(path))


def _names_quoted(names: list[str], *, shown: int = 5) -> str:
    """The first few names, each quoted short, and how many more: one line whatever was asked."""
    quoted = ", ".join(text_quoted(name) for name in names[:shown])
    return f"{quoted} and {len(names) - shown} more" if len(names) > shown else quoted
