"""One generation, start to finish, as the protocol's events.

``generation_run`` is what every interface runs (the WebSocket consumer, the REST view, the command).
It yields the events of the WebSocket protocol (docs/protocol.md) as dicts and leaves a GenerationRun whatever
happens. Closing or cancelling it closes the upstream model request at once; a cancel that arrives
while the save is running lets the save finish (it is one transaction) and reports it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import DatabaseError

from personas.selectors import PersonaContexts, persona_contexts
from stories.errors import GenerationError, RunTakenOver, database_failure
from stories.generation.backends.base import Brief, CastMember
from stories.generation.checkpoint import checkpoint_request, lease_kept
from stories.generation.coalesce import text_coalesced
from stories.generation.finish import run_finish, seen_through
from stories.generation.models_registry import max_tokens_limit
from stories.generation.parallel import SceneEdit, parallel_write
from stories.generation.requests import (
    GenerationRequest,
    allowed_models,
    max_tokens_within_model_check,
    model_label,
)
from stories.generation.run import Run, Writer, ms_since
from stories.generation.single import single_write
from stories.models import GenerationRun
from stories.selectors import (
    EffectiveGenerationSettings,
    generation_pace_get,
    generation_pace_parallel,
    generation_settings_get,
    story_owned,
)
from stories.services import (
    RUN_LEASE_OWNER,
    generation_run_admit,
    generation_run_finish,
    generation_run_release,
)
from stories.ws_auth import (
    SocketCredential,
    credential_current,
    credential_fingerprint,
    revocation_recent,
    signed_out_error,
)
from storyproject.db import db_call, db_started
from storyproject.logs import run_log_context_bind, run_log_context_release

logger = logging.getLogger(__name__)


async def generation_run(
    *,
    request: GenerationRequest,
    user: Any,
    edit: SceneEdit | None = None,
    coalesce: bool = True,
    admission_check: Callable[[], None] | None = None,
    credential: SocketCredential | None = None,
) -> AsyncGenerator[dict[str, Any], None]:
    """Run one generation for ``user``; yield the protocol's events (see the module docstring).

    With ``edit`` (parallel mode only) the run rewrites one scene of a saved version instead. Text
    events are merged (generation.coalesce, ``STORY_STREAM_COALESCE_MS``) unless ``coalesce`` is False:
    for a caller that shows no text as it streams, merging would cost for nothing. ``admission_check``
    (sync, database and cache allowed) runs first in the admission's trip to the thread pool and refuses
    the run by raising GenerationError: the WebSocket's credential check, which then costs no trip of
    its own before the model call. ``credential``: the token or session that asks for the run; its
    digest is recorded with it (``GenerationRun.started_by``, ``stories.ws_auth.credential_fingerprint``),
    and it is asked again once the run is recorded (``_run_open``).
    """
    started = time.monotonic()
    opening = _Opening(check=admission_check, credential=credential)
    try:
        admitted = await _run_admit(request, user.pk, started, resumable=edit is None, opening=opening)
    except GenerationError as error:
        yield error.as_event()
        return
    run = admitted.run
    if admitted.signed_out:
        try:
            await _run_close(run, GenerationRun.Status.CANCELLED, None)
        finally:
            generation_run_release(run_id=run.run_id)
        yield signed_out_error().as_event()
        return
    logged_before = run_log_context_bind(run_id=run.run_id)  # every line logged in this run names it
    try:
        events = run_events(run, _writer(request, edit), opening=_accepted(run), contexts=admitted.contexts)
        # Text merged where the events are made, so every interface (and the run's log) gets fewer.
        interval_ms = settings.STORY_STREAM_COALESCE_MS if coalesce else 0
        async with aclosing(text_coalesced(events, interval_ms=interval_ms)) as merged:
            async for event in merged:
                yield event
    finally:
        generation_run_release(run_id=run.run_id)
        run_log_context_release(logged_before)


def _writer(request: GenerationRequest, edit: SceneEdit | None) -> Writer:
    """The writing strategy the request asks for (run.Writer): single pass, or outline and parallel scenes."""
    if request.mode == GenerationRun.Mode.PARALLEL:
        return functools.partial(parallel_write, edit=edit)
    return single_write


@dataclass(frozen=True)
class _Opening:
    """What the caller adds to a run's admission: its own check, and the credential that asks for the run."""

    check: Callable[[], None] | None = None
    credential: SocketCredential | None = None

    @property
    def started_by(self) -> str:
        return credential_fingerprint(self.credential)


@dataclass(frozen=True)
class _Admitted:
    """A run admitted, with its cast's contexts read in the same trip to the thread pool, or the error
    that reading them raised (it fails the run after ``accepted``, as the run's own failure)."""

    run: Run
    contexts: PersonaContexts | Exception
    # The credential no longer held once the run was recorded: the run is to be closed, not run.
    signed_out: bool = False


async def run_events(
    run: Run, writer: Writer, *, opening: dict[str, Any], contexts: PersonaContexts | Exception | None = None
) -> AsyncGenerator[dict[str, Any], None]:
    """The events of a run this process holds, ``opening`` first (``accepted``, or ``resumed`` for a run
    taken over: stories.generation.resume); its lease is renewed meanwhile, and every way out closes
    the run (cancellation included). ``contexts``: the cast's, when admission read them already.
    """
    async with lease_kept(run), aclosing(_run_events(run, writer, opening, contexts)) as events:
        async for event in events:
            yield event


async def _run_events(
    run: Run, writer: Writer, opening: dict[str, Any], contexts: PersonaContexts | Exception | None
) -> AsyncGenerator[dict[str, Any], None]:
    try:
        async with aclosing(_generate(run, writer, opening, contexts)) as events:
            async for event in events:
                yield event
    except RunTakenOver:
        # Not this process's to close or to end any more (the process that holds it does both).
        raise
    except GenerationError as error:
        await _run_close(run, GenerationRun.Status.FAILED, error)
        yield error.as_event()
    except (asyncio.CancelledError, GeneratorExit):
        await _run_close(run, GenerationRun.Status.CANCELLED, None)
        raise
    except Exception as error:
        logger.exception("generation run %s failed unexpectedly", run.run_id)
        if isinstance(error, DatabaseError):
            # Not the model's doing: said so (the code stays the protocol's one for an unexpected failure).
            failure = database_failure(run.run_id, error)
        else:
            failure = GenerationError(
                "llm_unavailable", f"the generation failed unexpectedly (run {run.run_id})"
            )
        await _run_close(run, GenerationRun.Status.FAILED, failure)
        yield failure.as_event()


async def _run_admit(
    request: GenerationRequest,
    user_id: int,
    started: float,
    *,
    resumable: bool,
    opening: _Opening,
) -> _Admitted:
    """Admit and record the run (``_run_open``); a cancel that arrives meanwhile finds it closed.

    The admission runs in a worker thread, which a cancel cannot stop: left alone, it would commit a
    ``streaming`` run after the cancel, one that nothing runs or closes and that counts against the
    writer's limits. So the wait is shielded, and a cancelled wait sees the admission
    through, closes its run as cancelled, and only then passes the cancel on.
    """
    admission = db_started(_run_open, request, user_id, started, resumable, opening)
    try:
        return await asyncio.shield(admission)
    except asyncio.CancelledError:
        await _admitted_run_cancel(admission)
        raise


async def _admitted_run_cancel(admission: asyncio.Future[_Admitted]) -> None:
    """Close as cancelled the run that a cancelled admission recorded after all, if it did."""
    try:
        run = (await seen_through(admission)).run
    except Exception:
        return  # refused or failed: no run was recorded
    try:
        await _run_close(run, GenerationRun.Status.CANCELLED, None)
    finally:
        generation_run_release(run_id=run.run_id)


def _model_and_max_tokens(
    request: GenerationRequest, defaults: EffectiveGenerationSettings
) -> tuple[str, int]:
    model = request.model or defaults.default_model
    if model not in allowed_models():
        # An editor's default that is no longer allowed falls back to the deployment's model.
        model = settings.STORY_MODEL
    if request.max_tokens is not None and request.rewrite is None:
        # A writer's own, for the default model (generation_request_parse checks a model they named).
        max_tokens_within_model_check(request.max_tokens, model)
    max_tokens = request.max_tokens or defaults.default_max_tokens
    max_tokens = min(max(max_tokens, settings.STORY_MIN_MAX_TOKENS), settings.STORY_MAX_MAX_TOKENS)
    # What is left above the model's limit (a scene rewrite's, its version's from another model; a
    # setting start-up warned of) is cut here, so that `accepted` says what the model is given.
    limit = max_tokens_limit(model, budget_tokens=settings.STORY_THINKING_BUDGET_TOKENS)
    return model, max_tokens if limit is None else min(max_tokens, limit)


def _run_open(
    request: GenerationRequest,
    user_id: int,
    started: float,
    resumable: bool,
    opening: _Opening,
) -> _Admitted:
    """Check the story, admit the run, record it and read the cast's contexts, in the one trip to the
    thread pool before the model call.

    The per-user limits (concurrent and hourly generations, stories.limits) are checked with the run's
    creation, under a per-user lock, so neither another socket nor another process can race them;
    a refusal comes before anything costs money. The run is leased to this process, with its request
    recorded for a resume (not a scene rewrite's: that is one call, nothing to keep). The opening's
    ``check``, the caller's own, comes before anything else.

    The opening's credential is asked again once the run has committed, from the database, when a
    revocation of the user's credentials is marked as recent: a sign-out that committed between the
    caller's check and the run's commit found no run to cancel (``stories.runs.revoked`` reads the runs
    once the revocation has committed), and the run went on for a credential that no longer held. The
    revocation marks itself before it reads the runs, and the mark is read after the run's commit: one
    of the two sees the other. Unmarked (no revocation), the check costs one cache read, not two queries.
    """
    if opening.check is not None:
        opening.check()
    if request.story_id is not None and not story_owned(story_id=request.story_id, user_id=user_id):
        # Before admission: a story that is not the writer's costs no run and no hourly slot.
        raise GenerationError("forbidden", "that story does not exist or is not yours")
    defaults = generation_settings_get()
    model, max_tokens = _model_and_max_tokens(request, defaults)
    run = generation_run_admit(
        user_id=user_id,
        model=model,
        max_tokens=max_tokens,
        persona_names=request.personas,
        # Known from the start (checked above), so the story page can say a version is being written.
        story_id=request.story_id,
        mode=request.mode,
        checkpoint=checkpoint_request(request) if resumable else None,
        started_by=opening.started_by,
    )
    pace = generation_pace_get(model=model, max_tokens=max_tokens)
    if request.mode == GenerationRun.Mode.PARALLEL:
        # Its calls overlap: its ETA is what such runs took, not one call's pace (a scene rewrite,
        # not resumable, is one call).
        pace = generation_pace_parallel(pace, model=model, rewrite=not resumable)
    admitted = Run(
        run_id=run.pk,
        request=request,
        user_id=user_id,
        model=model,
        max_tokens=max_tokens,
        started=started,
        pace=pace,
        rules=defaults.formatting_rules,
        lease_owner=RUN_LEASE_OWNER,
    )
    if (
        opening.credential is not None
        and revocation_recent(user_id=user_id)
        and not credential_current(credential=opening.credential, fresh=True)
    ):
        return _Admitted(run=admitted, contexts=PersonaContexts([], [], []), signed_out=True)
    return _Admitted(run=admitted, contexts=_contexts_read(admitted))


def _accepted(run: Run) -> dict[str, Any]:
    return {
        "type": "accepted",
        "run_id": run.run_id,
        "model": run.model,
        "model_name": model_label(run.model),
        "max_tokens": run.max_tokens,
        "personas": run.request.personas,
        "estimated_seconds": run.pace.estimated_seconds(),
    }


async def _generate(
    run: Run, writer: Writer, opening: dict[str, Any], inputs: PersonaContexts | Exception | None
) -> AsyncGenerator[dict[str, Any], None]:
    request = run.request
    yield opening
    if inputs is None:  # a resumed run: its contexts are read now
        inputs = await db_call(_contexts_read)(run)
    contexts = _contexts_checked(inputs).contexts
    brief = Brief(
        plot=request.plot,
        title=request.title,
        cast=tuple(CastMember(c.name, c.display_name, c.context) for c in contexts),
    )
    content: dict[str, Any] = {}
    async with aclosing(writer(run, contexts=contexts, brief=brief, content=content)) as events:
        async for event in events:
            yield event
    async for event in run_finish(run, content):
        yield event


def _contexts_read(run: Run) -> PersonaContexts | Exception:
    """The cast's contexts, read right after admission (the story was checked then; the save checks it
    again), or the error reading them raised, kept to fail the admitted run (``_contexts_checked``)."""
    started = time.monotonic()
    try:
        contexts = persona_contexts(names=run.request.personas)
    except Exception as error:  # the run is recorded already: it must come back to be closed
        return error
    run.record.context_ms = ms_since(started)
    return contexts


def _contexts_checked(contexts: PersonaContexts | Exception) -> PersonaContexts:
    if isinstance(contexts, Exception):
        raise contexts
    if contexts.missing:
        raise GenerationError("unknown_personas", f"unknown personas: {', '.join(contexts.missing)}")
    if contexts.inactive:
        raise GenerationError(
            "unknown_personas", f"personas no longer available: {', '.join(contexts.inactive)}"
        )
    return contexts


async def _run_close(run: Run, status: str, error: GenerationError | None) -> None:
    if error is not None:
        # Kept for an error rebuilt from the database once the run's log has expired (run_final_events).
        run.record.details["retryable"] = error.retryable
    record = run.record_final()
    record_text = "\n\n".join(text for text in run.texts if text)
    write = db_started(
        generation_run_finish,
        run_id=run.run_id,
        status=status,
        record=record,
        error_code=error.code if error else "",
        error_message=error.message if error else "",
        raw_text=record_text,
        lease_owner=run.lease_owner or None,
    )
    # Seen through: a run that is being cancelled (maybe twice) must still be recorded as such.
    try:
        await seen_through(write)
    except DatabaseError:
        # The database is down (it may be why the save failed): the text paid for goes to the log.
        logger.exception(
            "generation run %s could not be recorded as %s; its model text follows:\n%s",
            run.run_id,
            status,
            record_text,
        )
    if error is not None:
        _failure_log(run.run_id, error)


# The codes an operator has to act on (a spend limit, a key, a model): logged as errors, once a run.
_OPERATOR_CODES = frozenset({"llm_quota", "llm_config"})


def _failure_log(run_id: object, error: GenerationError) -> None:
    level = logging.ERROR if error.code in _OPERATOR_CODES else logging.INFO
    detail = f" ({error.operator_detail})" if error.operator_detail else ""
    logger.log(level, "generation run %s failed: %s %s%s", run_id, error.code, error.message, detail)
