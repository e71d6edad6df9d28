"""Database work called from async code, on the loop's thread pool instead of Channels' one thread."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

from django.db import connections, router, transaction
from django.db.models import Field, Model, QuerySet
from django.db.models.sql import UpdateQuery

from storyproject import loop_db

_T = TypeVar("_T")


# Concurrent sockets and generations run their database and cache calls side by side in the loop's
# thread pool (each thread takes its own pooled connection) rather than queueing on Channels' one
# thread-sensitive thread: with 50 generations starting together that queue alone added seconds
# (bench/results/flow.md). Every call is self-contained (its own transaction, no thread-bound state),
# so the thread it runs on does not matter.
#
# The call goes to the pool with ``loop.run_in_executor`` itself, in a copy of the caller's context
# (contextvars: the run id of log lines), not through asgiref's SyncToAsync (Channels'
# database_sync_to_async): that one shields the executor's future, so its answer reached the caller one
# turn of the event loop later, and on a saturated loop each turn is tens of milliseconds
# (docs/performance.md, "Ninth step"). What else it does is not needed here: Django's connections are
# per thread and handed back after every call (below), and no call runs async code of the loop's.
def db_call(function: Callable[..., _T]) -> Callable[..., Awaitable[_T]]:
    """``function`` as a coroutine function that runs it in the loop's thread pool."""

    async def call(*args: Any, **kwargs: Any) -> _T:
        return await db_started(function, *args, **kwargs)

    return functools.wraps(function)(call)


def db_started(function: Callable[..., _T], /, *args: Any, **kwargs: Any) -> asyncio.Future[_T]:
    """``function(*args, **kwargs)`` submitted to the loop's thread pool now; its future.

    For a call that must be seen through whatever happens to its caller (an admission, a save): the
    future can be shielded at once, with no task in between to wake first.
    """
    context = contextvars.copy_context()
    bound = functools.partial(context.run, _connections_returned, function, *args, **kwargs)
    return asyncio.get_running_loop().run_in_executor(None, bound)


def _connections_returned(function: Callable[..., _T], /, *args: Any, **kwargs: Any) -> _T:
    try:
        return function(*args, **kwargs)
    finally:
        # Hand the connection back now: a pool thread may never run Django code again (its loop
        # closes), and a connection it kept would be lost to PostgreSQL's pool until it ran dry.
        connections.close_all()


def update_unflushed(queryset: QuerySet[Any], **fields: Any) -> int:
    """``queryset.update(**fields)`` in a transaction whose COMMIT does not wait for PostgreSQL to
    flush its WAL to disk; the number of rows updated.

    For writes that a running generation makes on its way (a checkpoint before its ``scene`` event, a
    lease renewal): the flush is the larger part of a small transaction (0.5-6.5 ms on the machines of
    bench/results/flow.md's floor line, against a 0.07-0.4 ms round trip), and the checkpoint sits
    between the model writing a scene and the writer seeing it. PostgreSQL's asynchronous commit
    ("Asynchronous Commit", Reliability and the Write-Ahead Log; the ``synchronous_commit`` setting):
    the commit is visible to every session at once and survives this process dying; only a crash of
    the database server itself within three times ``wal_writer_delay`` (600 ms by default) may lose
    it, as if it had been rolled back (no inconsistency). For a checkpoint that means a resumed run
    writes a scene again that a client may have seen; the ``resumed`` event then redraws it.

    On PostgreSQL outside a transaction it is one round trip: ``SET LOCAL synchronous_commit TO OFF;
    UPDATE ...`` as one simple-protocol query (Django's psycopg cursors bind parameters on the client),
    which PostgreSQL runs as one implicit transaction ("Multiple Statements in a Simple Query", Frontend/
    Backend Protocol), so the setting holds for its commit and ends with it. Inside a transaction (a
    caller's, or a test's) the update runs in a savepoint of it, with the setting for that whole
    transaction; on other databases (SQLite, which commits as usual), in a transaction of its own.
    """
    using = router.db_for_write(queryset.model)  # as QuerySet.update's (for_write) database
    database = connections[using]
    # Server-side binding (an OPTIONS switch) sends the extended protocol, one statement per query.
    client_side = database.settings_dict["OPTIONS"].get("server_side_binding") is not True
    if database.vendor != "postgresql" or database.in_atomic_block or not client_side:
        with transaction.atomic(using=using):
            if database.vendor == "postgresql":
                with database.cursor() as cursor:
                    cursor.execute("SET LOCAL synchronous_commit TO OFF")
            lock_wait_bound(using)
            return queryset.using(using).update(**fields)
    # QuerySet.update's own steps, with the statement sent behind the settings instead of alone.
    query: UpdateQuery = queryset.query.chain(UpdateQuery)  # type: ignore[assignment]
    query.add_update_values(fields)
    statement, parameters = query.get_compiler(using).as_sql()
    settings_set = f"SET LOCAL synchronous_commit TO OFF; {loop_db.lock_timeout_set(local=True)}"
    with database.cursor() as cursor:
        cursor.execute(f"{settings_set}; {statement}", parameters)
        cursor.nextset()  # past the two SETs' results, to the UPDATE's
        cursor.nextset()
        return int(cursor.rowcount)


def lock_wait_bound(using: str) -> None:
    """From here to the end of the caller's transaction, a statement that waits for a lock another
    session holds (a row someone locked by hand in ``psql`` with ``SELECT ... FOR UPDATE`` and left)
    fails after ``STORY_RUN_LOCK_TIMEOUT_SECONDS`` instead of waiting for as long as the lock is held.

    For a running run's own writes (checkpoint, lease renewal, close, the save's update of the run):
    they waited with no limit, and the run's clients got only keepalives. PostgreSQL's ``lock_timeout``
    (Client Connection Defaults; ``SET LOCAL`` ends with the transaction): the statement fails with
    SQLSTATE 55P03, ``lock_not_available``, which Django raises as ``OperationalError`` (see
    ``lock_wait_exceeded``). On SQLite, which locks the whole database, every write already waits at
    most the connection's busy timeout (``timeout``, 20 s: storyproject.env.database_from_url) and then
    fails with ``database is locked``; nothing is set here.
    """
    database = connections[using]
    if database.vendor == "postgresql":
        with database.cursor() as cursor:
            cursor.execute(loop_db.lock_timeout_set(local=True))


@contextlib.contextmanager
def lock_waits_bounded(using: str) -> Iterator[None]:
    """A block whose statements wait for locks as ``lock_wait_bound`` says: on PostgreSQL a transaction
    (the setting's scope) unless the caller's is open; elsewhere nothing (SQLite's busy timeout)."""
    if connections[using].vendor != "postgresql":
        yield
        return
    with transaction.atomic(using=using):
        lock_wait_bound(using)
        yield


def lock_wait_exceeded(error: BaseException) -> bool:
    """Whether ``error`` (a Django ``DatabaseError``) is a statement that gave up waiting for a lock held
    elsewhere: PostgreSQL's ``lock_timeout`` (55P03) or SQLite's busy timeout (``SQLITE_BUSY``)."""
    cause = error.__cause__
    if getattr(cause, "sqlstate", None) == "55P03":
        return True
    return getattr(cause, "sqlite_errorname", None) == "SQLITE_BUSY"


async def update_unflushed_async(model: type[Model], where: dict[str, Any], **fields: Any) -> int:
    """``update_unflushed(model.objects.filter(**where), **fields)`` from async code; the number of rows
    updated. ``where``: equality with a value (not None) of each field named, ``pk`` (the key) among them.

    Sent from the event loop itself where it may be (storyproject.loop_db: daphne's loop, PostgreSQL),
    else in the thread pool (``db_started``). From the loop it is one statement, its SQL made once per
    model and fields rather than by the ORM at every call (building and compiling the query was two
    thirds of such a write's CPU time there: bench/results/run_writes.md), its values prepared by their
    fields as the ORM prepares them.
    """
    using = router.db_for_write(model)
    if not loop_db.usable(using):
        return await db_started(update_unflushed, model._default_manager.filter(**where), **fields)
    statement, parameters = _update_sql(model, where, fields, connections[using])
    # The one row it updates, by its key: a batch of such writes locks its rows in this order.
    return await loop_db.rowcount(using, statement, parameters, row=(model._meta.db_table, where["pk"]))


def update_row(model: type[Model], where: dict[str, Any], **fields: Any) -> int:
    """``model.objects.filter(**where).update(**fields)`` (sync, in the caller's transaction) with its SQL
    made once per model and fields, as ``update_unflushed_async`` makes it; the number of rows updated.
    ``where`` as there; a value of ``fields`` is what its field stores (an id for a foreign key)."""
    using = router.db_for_write(model)
    statement, parameters = _update_sql(model, where, fields, connections[using])
    with connections[using].cursor() as cursor:
        cursor.execute(statement, parameters)
        return int(cursor.rowcount)


def _update_sql(
    model: type[Model], where: dict[str, Any], fields: dict[str, Any], database: Any
) -> tuple[str, list[Any]]:
    if any(value is None for value in where.values()):
        raise ValueError("an update by hand matches values, not NULL")
    if "pk" not in where:
        raise ValueError("an update by hand updates one row, named by its pk")
    columns = [model_column(model, name) for name in fields]
    keys = [model_column(model, name) for name in where]
    parameters = [
        field.get_db_prep_save(value, database) for field, value in zip(columns, fields.values(), strict=True)
    ]
    parameters += [
        field.get_db_prep_value(value, database) for field, value in zip(keys, where.values(), strict=True)
    ]
    statement = _update_statement(
        model._meta.db_table, tuple(field.column for field in columns), tuple(field.column for field in keys)
    )
    return statement, parameters


def model_column(model: type[Model], name: str) -> Field[Any, Any]:
    """The field of ``model`` stored in a column under ``name`` (``pk``: the key), for SQL written by hand."""
    field = model._meta.pk if name == "pk" else model._meta.get_field(name)
    if not isinstance(field, Field) or not field.concrete:
        raise ValueError(f"{model.__name__}.{name} is not a column")
    return field


@functools.cache
def _update_statement(table: str, columns: tuple[str, ...], keys: tuple[str, ...]) -> str:
    def quoted(name: str) -> str:
        return '"' + name.replace('"', '""') + '"'

    assignments = ", ".join(f"{quoted(column)} = %s" for column in columns)
    conditions = " AND ".join(f"{quoted(column)} = %s" for column in keys)
    # The names are the model's own (its table and columns), quoted; every value is a parameter.
    return f"UPDATE {quoted(table)} SET {assignments} WHERE {conditions}"  # noqa: S608
