from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _ensure_editors_group(sender: AppConfig, **kwargs: Any) -> None:
    from personas.services import editors_group_ensure

    editors_group_ensure()


class PersonasConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "personas"
    verbose_name = "Personas"

    def ready(self) -> None:
        # Permissions exist only after migrate, so the group is (re)built after every migrate.
        post_migrate.connect(_ensure_editors_group, sender=self)
