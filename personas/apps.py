from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.db.backends.signals import connection_created
from django.db.models.signals import post_delete, post_init, post_migrate, post_save

from storyproject.collation import sqlite_user_order_register


def _ensure_editors_group(sender: AppConfig, **kwargs: Any) -> None:
    from personas.services import editors_group_ensure

    editors_group_ensure()


def _sqlite_unicode_lower(sender: Any, connection: Any, **kwargs: Any) -> None:
    # SQLite's built-in lower() folds ASCII only (https://sqlite.org/lang_corefunc.html#lower: "works
    # for ASCII characters only"), so "ÉMILE" never matched the persona "Émile" there as it does on
    # PostgreSQL; an application-defined function of the same name and arity replaces the built-in
    # (https://sqlite.org/appfunc.html). Persona lookups that ignore case (`Lower`) then agree on both.
    if connection.vendor == "sqlite":
        connection.connection.create_function("lower", 1, _lower, deterministic=True)


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


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
        connection_created.connect(_sqlite_unicode_lower, dispatch_uid="sqlite_unicode_lower")
        # The collation the persona lists sort by (storyproject.collation; PostgreSQL's is a migration's).
        connection_created.connect(sqlite_user_order_register, dispatch_uid="sqlite_user_order")
        # Permissions exist only after migrate, so the group is (re)built after every migrate.
        post_migrate.connect(_ensure_editors_group, sender=self)
        # Any save or deletion, from any interface, invalidates the cached context after commit.
        persona = self.get_model("PersonaConfig")
        post_init.connect(_persona_loaded, sender=persona, dispatch_uid="persona_loaded")
        post_save.connect(_persona_saved, sender=persona, dispatch_uid="persona_saved")
        post_delete.connect(_persona_deleted, sender=persona, dispatch_uid="persona_deleted")
