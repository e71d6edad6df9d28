from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import reversion
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import CommandError, CommandParser
from django.db import transaction

from personas.models import PersonaConfig
from personas.services import editors_group_ensure
from storyproject.commands import EXIT_INVALID, ProjectCommand

DEMO_FILE = Path(__file__).resolve().parents[2] / "demo" / "personas.json"

# Demo accounts for a development machine; `make run` prints them.
DEMO_USERS = [
    {
        "username": "writer",
        "password": "writer-demo-2026",
        "staff": False,
        "superuser": False,
        "editor": False,
    },
    {"username": "editor", "password": "editor-demo-2026", "staff": True, "superuser": False, "editor": True},
    {"username": "admin", "password": "admin-demo-2026", "staff": True, "superuser": True, "editor": False},
]


class Command(ProjectCommand):
    help = (
        "Load the demo personas and the demo writer, editor and admin accounts (idempotent). The "
        "accounts' passwords are published: with DJANGO_DEBUG off it refuses unless --allow-without-debug."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--allow-without-debug",
            action="store_true",
            help="Load the demo even with DJANGO_DEBUG off, on a machine nobody else can reach.",
        )

    @transaction.atomic
    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.DEBUG and not options["allow_without_debug"]:
            # A production site (make serve runs with DEBUG off) would get a superuser whose password
            # is in the README, and its own accounts named writer, editor or admin reset to the demo's.
            raise CommandError(
                "DJANGO_DEBUG is off, as on a production site: load_demo creates those of the accounts "
                "writer, editor and admin that do not exist, with the passwords the README publishes (admin "
                "a superuser), and resets the staff, superuser flags and groups of those that do. Nothing "
                "was loaded. On a machine nobody else can reach, add --allow-without-debug.",
                returncode=EXIT_INVALID,
            )
        # The personas it creates start their history (django-reversion) with this revision.
        with reversion.create_revision():
            reversion.set_comment("Loaded from the demo file.")
            created = sum(_persona_ensure(entry) for entry in json.loads(DEMO_FILE.read_text("utf-8")))
        editors = editors_group_ensure()
        for spec in DEMO_USERS:
            _user_ensure(spec, editors_group=editors)
        self.stdout.write(f"Demo data ready: {created} persona(s) created, accounts: writer, editor, admin.")


def _persona_ensure(entry: dict[str, Any]) -> bool:
    # Existing personas are left as editors may have changed them.
    _, created = PersonaConfig.objects.get_or_create(
        name=entry["name"],
        defaults={"display_name": entry["display_name"], "config_data": entry["config_data"]},
    )
    return created


def _user_ensure(spec: dict[str, Any], *, editors_group: Any) -> None:
    user_model = get_user_model()
    user, created = user_model.objects.get_or_create(username=spec["username"])
    if created:
        user.set_password(spec["password"])
    user.is_staff = spec["staff"]
    user.is_superuser = spec["superuser"]
    user.save()
    # Like the flags above, the demo accounts' permissions are reset on every run: the editor gets the
    # Editors group (personas only) and nothing else, whatever was granted to it since.
    user.groups.set([editors_group] if spec["editor"] else [])
    user.user_permissions.clear()
