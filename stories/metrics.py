"""Prometheus metrics of generations and sockets, served at ``/metrics`` (storyproject/health.py).

Finished runs are counted once their row says so: ``stories.services`` calls ``generation_run_observe``
after the commit that closes a run, whichever interface ran it. Active runs are counted from the
database at scrape time, so every process reports the same figure; open sockets are counted by the
process that holds them.

Counters and histograms live in the process that observed them. With several server processes, set
``PROMETHEUS_MULTIPROC_DIR`` (prometheus-client's multiprocess mode): each process then writes its
values to files in that directory and any process's ``/metrics`` reports the sum (docs/operations.md).
Nothing is observed while metrics are off (neither METRICS_TOKEN nor METRICS_ALLOWED_NETWORKS set). A run
is counted from the measures its process has just written when it has them (its own run's close or
save); otherwise they are read back, one primary-key query.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import weakref
from collections.abc import Iterable, Iterator
from typing import Any

from django.conf import settings
from django.db import DatabaseError
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from stories.models import GenerationRun
from stories.pricing import usage_cost_usd
from stories.selectors import generation_run_measures, generation_runs_active_count

logger = logging.getLogger(__name__)

STAGES = ("context_ms", "prompt_ms", "ttft_ms", "llm_ms", "save_ms", "total_ms")
TOKEN_KINDS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")
# A call's status in a parallel run's details["calls"] when it did not fail (stories.generation.parallel).
_CALL_OUTCOMES = {"ok", "cancelled", "streaming"}
# From a cached context read (a few ms) to a long parallel run (minutes).
_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320, 640)

GENERATIONS = Counter(
    "story_generations", "Generation runs finished, by outcome.", ["status", "model", "mode"]
)
STAGE_SECONDS = Histogram(
    "story_generation_stage_seconds",
    "Time spent in each stage of a finished run (the run's *_ms fields).",
    ["stage", "mode"],
    buckets=_SECONDS_BUCKETS,
)
TOKENS = Counter("story_generation_tokens", "Tokens billed for finished runs, by kind.", ["model", "kind"])
COST = Counter(
    "story_generation_cost_usd", "Dollars billed for finished runs, at the registry's prices.", ["model"]
)
RETRIES = Counter(
    "story_model_call_retries",
    "Model calls retried after an upstream error (a parallel run's calls and a single-pass run's "
    "back-end retries), by the error's code.",
    ["code"],
)
# Every LOOP_LAG_INTERVAL_SECONDS the watcher's timer measures how late the loop ran it.
LOOP_LAG_INTERVAL_SECONDS = 0.5
LOOP_LAG_SECONDS = Histogram(
    "story_event_loop_lag_seconds",
    "How late a server process's event loop ran a timer due every half second. Each socket, model "
    "stream and request of the process waits about this long at every step it takes: tens of "
    "milliseconds mean the process is saturated.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
SOCKETS_OPEN = Gauge(
    "story_websockets_open",
    "Admitted /ws/generate/ sockets open now.",
    # Under multiprocess mode: the sum over the processes still alive.
    multiprocess_mode="livesum",
)


if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    # A process that stops cleanly takes its open-socket count out of the sum; one that is killed
    # leaves it until the directory is wiped, as prometheus-client asks, before the next start.
    atexit.register(multiprocess.mark_process_dead, os.getpid())


def metrics_enabled() -> bool:
    return bool(settings.METRICS_TOKEN or settings.METRICS_ALLOWED_NETWORKS)


def generation_run_observe(*, run_id: int, run: GenerationRun | None = None) -> None:
    """Count a run that has just been recorded finished; never raises (a metric is not worth a save).

    ``run``: its measures as just written (its status, model, mode, timings, usage and details), when
    the caller has them; else they are read (one query)."""
    if not metrics_enabled():
        return
    try:
        if run is None:
            run = generation_run_measures(run_id=run_id)
        if run is not None:
            _observe(run)
    except Exception:
        logger.warning("could not count run %s in the metrics", run_id, exc_info=True)


def _observe(run: GenerationRun) -> None:
    GENERATIONS.labels(status=run.status, model=run.model, mode=run.mode).inc()
    for stage in STAGES:
        value = getattr(run, stage)
        if value is not None:
            STAGE_SECONDS.labels(stage=stage.removesuffix("_ms"), mode=run.mode).observe(value / 1000)
    for kind in TOKEN_KINDS:
        TOKENS.labels(model=run.model, kind=kind.removesuffix("_tokens")).inc(getattr(run, kind))
    cost = usage_cost_usd(model=run.model, **{kind: getattr(run, kind) for kind in TOKEN_KINDS})
    if cost is not None:
        COST.labels(model=run.model).inc(float(cost))
    for code in run_retries(run.details):
        RETRIES.labels(code=code).inc()


def run_retries(details: Any) -> list[str]:
    """The error codes of a finished run's retried attempts: its parallel calls followed by another
    attempt, and the back-end's own retries (``details["retries"]``, stories.generation.run.CallResult)."""
    if not isinstance(details, dict):
        return []
    retries = details.get("retries")
    own = [str(code) for code in retries] if isinstance(retries, list) else []
    return [*retried_errors(calls=details.get("calls") or []), *own]


def retried_errors(*, calls: Iterable[Any]) -> list[str]:
    """The error codes of the calls that were followed by another attempt at the same task.

    A parallel run logs every call in ``details["calls"]`` with its task, scene index, attempt and
    status (the error code when it failed).
    """
    last: dict[tuple[Any, Any], int] = {}
    entries = [call for call in calls if isinstance(call, dict)]
    for call in entries:
        key = (call.get("task"), call.get("index"))
        last[key] = max(last.get(key, 0), int(call.get("attempt") or 0))
    return [
        str(call["status"])
        for call in entries
        if call.get("status") not in _CALL_OUTCOMES
        and int(call.get("attempt") or 0) < last[(call.get("task"), call.get("index"))]
    ]


def loop_lag_watch_start() -> bool:
    """Start measuring the running loop's lag (``LOOP_LAG_SECONDS``), once per loop; False when metrics
    are off (nothing is measured then) or it runs already."""
    loop = asyncio.get_running_loop()
    if not metrics_enabled() or (loop in _lag_watchers and not _lag_watchers[loop].done()):
        return False
    _lag_watchers[loop] = loop.create_task(_loop_lag_watch(), name="loop-lag-watch")
    return True


async def _loop_lag_watch() -> None:
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + LOOP_LAG_INTERVAL_SECONDS
        await asyncio.sleep(LOOP_LAG_INTERVAL_SECONDS)
        LOOP_LAG_SECONDS.observe(max(loop.time() - due, 0.0))


# The watcher of each loop (daphne has one per process), kept: a loop holds only weak task references.
_lag_watchers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task[None]] = (
    weakref.WeakKeyDictionary()
)


def socket_opened() -> None:
    SOCKETS_OPEN.inc()


def socket_closed() -> None:
    SOCKETS_OPEN.dec()


class _ActiveRunsCollector(Collector):
    """Runs streaming now, counted in the database at scrape time (one indexed COUNT)."""

    def describe(self) -> Iterator[GaugeMetricFamily]:
        # Registering asks for a description; without this it would collect, querying at import time.
        yield self._family()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            active = generation_runs_active_count()
        except DatabaseError as error:
            # The database down: every other metric is still served (a scrape is how an operator
            # sees the outage's effects); this one is left out rather than reported as 0.
            logger.warning("story_generations_active left out of a scrape: the database failed (%s)", error)
            return
        family = self._family()
        family.add_metric([], active)
        yield family

    def _family(self) -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "story_generations_active",
            "Runs streaming now, in every process (stale runs of crashed processes excluded).",
        )


_ACTIVE_RUNS = _ActiveRunsCollector()
REGISTRY.register(_ACTIVE_RUNS)


def metrics_exposition() -> bytes:
    """The text exposition of every metric (with the process's CPU and memory), summed over processes
    under multiprocess mode."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return generate_latest(REGISTRY)
    # prometheus-client's documented multiprocess set-up: a fresh registry per scrape, reading every
    # process's files (https://prometheus.github.io/client_python/multiprocess/).
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    registry.register(_ACTIVE_RUNS)
    return generate_latest(registry)
