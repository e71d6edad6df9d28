"""``/healthz``, ``/readyz`` and ``/metrics``: what a process supervisor, a load balancer and Prometheus ask.

``/healthz`` says the process answers HTTP; it touches nothing else, so a database outage does not get
every process restarted. ``/readyz`` says whether this process can serve writers: the database answers,
its migrations are all applied, Redis answers when ``REDIS_URL`` is set, and a model back-end is usable.
A failure is a 503 that names the dependency and nothing more: no host, URL, exception text or secret
(those go to the log). Both are unauthenticated, use no session, and are exempt from the HTTPS redirect.

``/metrics`` is the Prometheus exposition of ``stories.metrics``, off (404) unless ``METRICS_TOKEN`` or
``METRICS_ALLOWED_NETWORKS`` is set. See docs/operations.md.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from collections.abc import Callable

import redis
from django.conf import settings
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_safe
from prometheus_client import CONTENT_TYPE_LATEST

from stories.generation.backends.registry import backend_class_load
from stories.metrics import metrics_enabled, metrics_exposition
from storyproject.logs import RepeatedFailure

logger = logging.getLogger(__name__)

# Applied migrations stay applied: once seen complete, the plan (which reads every migration file,
# tens of milliseconds) is not computed again by this process.
_migrated = False


@csrf_exempt  # a probe's wrong method is a 405, not the CSRF failure page
@require_safe
@never_cache
def healthz(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok\n", content_type="text/plain")


@csrf_exempt
@require_safe
@never_cache
def readyz(request: HttpRequest) -> JsonResponse:
    """200 or 503 with ``{"status", "checks": {name: outcome}, "failed": [names]}``.

    An outcome is "ok", "failed", "not checked" (a check it needs failed) or "not configured" (Redis
    without ``REDIS_URL``: nothing to be ready, and "ok" would claim a Redis that is not there).
    """
    checks: dict[str, str] = {}
    for name, check in _CHECKS.items():
        needed = _NEEDS.get(name)
        if needed is not None and checks[needed] != "ok":
            checks[name] = "not checked"
        else:
            checks[name] = _outcome(name, check)
    failed = [name for name, outcome in checks.items() if outcome == "failed"]
    body = {"status": "unavailable" if failed else "ok", "checks": checks, "failed": failed}
    response = JsonResponse(body, status=503 if failed else 200)
    # Django logs every 5xx as an ERROR of django.request ("Service Unavailable: /readyz"), at each
    # probe; the failing check is logged above, at the pace RepeatedFailure keeps. The attribute is
    # the one django.utils.log.log_response reads to skip a response logged already.
    response._has_been_logged = True  # type: ignore[attr-defined]
    return response


class _NotReady(Exception):
    pass


def _outcome(name: str, check: Callable[[], bool | None]) -> str:
    try:
        passed = check()
        if passed is None:
            return "not configured"
        if not passed:
            raise _NotReady(f"{name} is not ready")
    except Exception:
        # A probe asks every few seconds: the first failure with its traceback, then a line a minute,
        # and one when it passes again (a traceback a probe filled the log while Redis was down).
        _failing(name).failed()
        return "failed"
    _failing(name).succeeded()
    return "ok"


_failures: dict[str, RepeatedFailure] = {}


def _failing(name: str) -> RepeatedFailure:
    return _failures.setdefault(name, RepeatedFailure(logger, f"readiness: the {name} check"))


def _database() -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        return cursor.fetchone() == (1,)


def _migrations() -> bool:
    global _migrated
    if not _migrated:
        executor = MigrationExecutor(connection)
        _migrated = not executor.migration_plan(executor.loader.graph.leaf_nodes())
    return _migrated


def _redis() -> bool | None:
    if not settings.REDIS_URL:
        return None  # The local-memory cache and channel layer need nothing.
    client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=1, socket_timeout=1)
    try:
        return bool(client.ping())
    finally:
        client.close()


def _model() -> bool:
    backend_class_load()
    # Every model but the offline one is a Claude model (models_registry): it needs the key, be it the
    # default or one a writer may choose (STORY_MODELS), which the offline back-end would otherwise
    # write in its place while the run was recorded, and priced, as Claude's.
    claude = {settings.STORY_MODEL, *settings.STORY_MODELS} - {settings.OFFLINE_MODEL}
    return not claude or bool(settings.ANTHROPIC_API_KEY)


_CHECKS: dict[str, Callable[[], bool | None]] = {
    "database": _database,
    "migrations": _migrations,
    "redis": _redis,
    "model": _model,
}
# Whether migrations are applied cannot be known without the database.
_NEEDS = {"migrations": "database"}


@csrf_exempt
@require_safe
@never_cache
def metrics(request: HttpRequest) -> HttpResponse:
    if not metrics_enabled():
        raise Http404
    if settings.METRICS_ALLOWED_NETWORKS and not _address_allowed(request.META.get("REMOTE_ADDR", "")):
        return HttpResponse(
            "Metrics are not served to this address.\n", status=403, content_type="text/plain"
        )
    if settings.METRICS_TOKEN and not _bearer_matches(request.headers.get("Authorization", "")):
        response = HttpResponse("A valid bearer token is required.\n", status=401, content_type="text/plain")
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse(metrics_exposition(), content_type=CONTENT_TYPE_LATEST)


def _address_allowed(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    # A server listening on "::" (dual-stack, make serve --host ::) sees an IPv4 client as an
    # IPv4-mapped IPv6 address (::ffff:10.1.2.3), which is in no IPv4 network: compared as the IPv4 one.
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in ipaddress.ip_network(network) for network in settings.METRICS_ALLOWED_NETWORKS)


def _bearer_matches(header: str) -> bool:
    scheme, _, token = header.partition(" ")
    # Compared in constant time, so the response time does not reveal how much of a guess was right.
    return scheme.lower() == "bearer" and hmac.compare_digest(
        token.strip().encode(), settings.METRICS_TOKEN.encode()
    )
