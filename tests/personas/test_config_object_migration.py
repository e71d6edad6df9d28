"""The migration that makes the database refuse a persona config that is not an object, on a database
that holds one (the shell's list, the reason for the check)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE = [("personas", "0001_initial")]


@pytest.fixture
def executor() -> Iterator[MigrationExecutor]:
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    yield executor
    # Whatever happened, the rest of the run has the schema of today (without the rows a failed
    # migration left, which would fail it again).
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM personas_personaconfig")
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())


@pytest.mark.django_db(transaction=True)
def test_a_config_stored_as_something_else_is_kept_in_an_object_and_the_migration_applies(
    executor: MigrationExecutor,
) -> None:
    # The check was added with the rows it is about still in the table: the migration failed on both
    # databases (PostgreSQL: "check constraint ... is violated by some row"), and with it `make serve`.
    persona = executor.loader.project_state(BEFORE).apps.get_model("personas", "PersonaConfig")
    odd = {"listed": ["a list"], "worded": "a string", "counted": 7}
    for name, config in odd.items():
        persona.objects.create(name=name, display_name=name.title(), config_data=config)
    persona.objects.create(name="fine", display_name="Fine", config_data={"voice": "Dry."})

    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())

    from personas.models import PersonaConfig

    stored = {p.name: (p.config_data, p.version) for p in PersonaConfig.objects.all()}
    # Each odd config is kept where an editor sees it and no prompt does; the persona's version moves
    # on, so nothing cached of it is served again.
    for name, config in odd.items():
        assert stored[name] == ({"private": {"config_before_it_had_to_be_an_object": config}}, 2)
    assert stored["fine"] == ({"voice": "Dry."}, 1)
