"""Persona lists sorted as a reader expects: case and accents aside, then the name itself, on SQLite and
on PostgreSQL whatever the database's collation (storyproject.collation)."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from rest_framework.test import APIClient

from personas.models import PersonaConfig
from personas.selectors import persona_list
from storyproject.collation import user_order_key

# By code point (SQLite, and a PostgreSQL database of the C collation, as this suite's): "Bob", "Zoe",
# "alice", "Émile". Two personas shown alike ("Ana") are ordered by their keys.
EXPECTED = ["alice", "ana-1", "ana-2", "bob", "emile", "oscar", "zoe"]
SHOWN = {
    "zoe": "Zoe",
    "emile": "Émile",
    "alice": "alice",
    "bob": "Bob",
    "ana-2": "Ana",
    "ana-1": "Ana",
    "oscar": "Ösçar",
}


@pytest.fixture
def personas(persona_factory: Any) -> None:
    for name, shown in SHOWN.items():
        persona_factory(name, shown)


@pytest.mark.django_db
def test_the_api_and_the_pickers_list_personas_case_and_accents_aside(personas: None, writer: Any) -> None:
    api = APIClient()
    api.force_authenticate(writer)
    listed = api.get("/api/personas/").json()["results"]
    assert [persona["name"] for persona in listed] == EXPECTED
    assert [persona.name for persona in persona_list()] == EXPECTED
    assert [persona.name for persona in PersonaConfig.objects.all()] == EXPECTED


@pytest.mark.django_db
def test_the_admin_list_and_its_display_name_column_sort_case_and_accents_aside(
    personas: None, user_factory: Any
) -> None:
    client = Client()
    client.force_login(user_factory("root", is_staff=True, is_superuser=True))
    page = client.get("/admin/personas/personaconfig/")
    assert [persona.name for persona in page.context["cl"].result_list] == EXPECTED
    # The display name's column, clicked (ascending, then descending).
    ascending = client.get("/admin/personas/personaconfig/", {"o": "1"})
    shown = [persona.display_name for persona in ascending.context["cl"].result_list]
    assert shown == [SHOWN[name] for name in EXPECTED]
    descending = client.get("/admin/personas/personaconfig/", {"o": "-1"})
    folded = [user_order_key(persona.display_name) for persona in descending.context["cl"].result_list]
    assert folded == sorted(folded, reverse=True)


def test_the_sqlite_key_drops_case_and_accents_only() -> None:
    assert user_order_key("Émile") == user_order_key("EMILE") == "emile"
    assert user_order_key("Straße") == "strasse"
    assert user_order_key("\uff21\uff22\uff23") == "abc"  # NFKD: full-width letters are letters
    assert user_order_key("Zoe") > user_order_key("émile")


@pytest.mark.django_db
def test_on_a_postgresql_without_icu_the_migration_makes_a_code_point_collation_instead() -> None:
    # A server built without ICU stopped `migrate` at personas 0003 ("ICU is not supported in this
    # build"). This one has ICU, so the statement used without it is run here under another name.
    import importlib

    from django.db import connection

    migration = importlib.import_module("personas.migrations.0003_persona_user_order")
    if connection.vendor != "postgresql":
        assert connection.vendor == "sqlite"  # its collation is registered per connection: nothing to create
        return
    assert migration.collation_create_statement(connection) == migration.CREATE  # ICU here
    statement = migration.CREATE_WITHOUT_ICU.replace('"story_user_order"', '"story_user_order_c"')
    with connection.cursor() as cursor:
        cursor.execute(statement)
        cursor.execute(
            "SELECT x FROM (VALUES ('b'), ('B'), ('a')) AS t(x) ORDER BY x COLLATE \"story_user_order_c\""
        )
        assert [row[0] for row in cursor.fetchall()] == ["B", "a", "b"]  # code-point order, as before
