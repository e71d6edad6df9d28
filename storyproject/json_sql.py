"""SQL functions of a JSON column, written once for each database the project runs on."""

from __future__ import annotations

from typing import Any

from django.db.models import Func


class JsonFunc(Func):
    """A function of one JSON column: ``template`` in SQLite's JSON1 functions (which Django's JSONField
    needs there), ``postgresql_template`` in PostgreSQL's jsonb operators."""

    arity = 1
    postgresql_template: str

    def as_postgresql(self, compiler: Any, connection: Any, **extra_context: Any) -> Any:
        return self.as_sql(compiler, connection, template=self.postgresql_template, **extra_context)
