from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.db.models.signals import post_delete, post_init, post_migrate, post_save


def _ensure_editors_group(sender: AppConfig, **kwargs: Any) -> None:
    from personas.services import editors_group_ensure

    editors_group_ensure()


def _persona_loaded(sender: type, instance: Any, **kwargs: Any) -> None:
    from personas.services import persona_loaded

    persona_loaded(persona=instance)


def _persona_saved(sender: type, instance: Any, **kwargs: Any) -> None:
    from personas.services import persona_saved

    persona_saved(persona=instance)


def _persona_deleted(sender: type, instance: Any, **kwargs: Any) -> None:
    from personas.services import persona_deleted

    persona_deleted(persona=instance)


class PersonasConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "personas"
    verbose_name = "Personas"

    def ready(self) -> None:
        # Permissions exist only after migrate, so the group is (re)built after every migrate.
        post_migrate.connect(_ensure_editors_group, sender=self)
        # Any save or deletion, from any interface, invalidates the cached context after commit.
        persona = self.get_model("PersonaConfig")
        post_init.connect(_persona_loaded, sender=persona, dispatch_uid="persona_loaded")
        post_save.connect(_persona_saved, sender=persona, dispatch_uid="persona_saved")
        post_delete.connect(_persona_deleted, sender=persona, dispatch_uid="persona_deleted")
