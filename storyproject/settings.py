"""Settings for the screenplay studio, read from the environment.

Every value comes from an environment variable with a safe development default, through the typed
readers in ``storyproject.env`` that reject bad values. Every setting is described in docs/configuration.md.
"""

from __future__ import annotations

import os
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from stories.generation import models_registry
from storyproject import serve
from storyproject.env import (
    database_from_url,
    envbool,
    envint,
    envlist,
    envnetworks,
    envstr,
    envtoken,
    redis_url,
)

BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = envbool("DJANGO_DEBUG", True)
SECRET_KEY = envstr("DJANGO_SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("DJANGO_SECRET_KEY is required when DJANGO_DEBUG is off")
    # Development only: a fixed key so sessions survive restarts of `make run`.
    SECRET_KEY = "dev-only-insecure-key-never-used-when-debug-is-off"  # noqa: S105
ALLOWED_HOSTS = envlist("DJANGO_ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = envlist("DJANGO_CSRF_TRUSTED_ORIGINS", [])
# The site's own page for a refused form (most often opened before signing in again in another tab).
CSRF_FAILURE_VIEW = "storyproject.urls.csrf_failure"

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "reversion",
    "personas",
    "stories",
    "accounts",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "storyproject.middleware.content_security_policy_middleware",
    # Before the session and every view: NUL in the URL, a cookie or a header is a 400, not a 500.
    "storyproject.middleware.UnstorableTextMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    # Django's, but an API write to a URL without its trailing slash is redirected with 308 (its method kept).
    "storyproject.middleware.ApiSlashCommonMiddleware",
    # A page's form that is not text in its encoding: a 400, before the CSRF check reads it.
    "storyproject.middleware.FormTextMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # A successful login's device cookie (accounts/throttle.py: its browser gets past the account's lock).
    "accounts.middleware.LoginDeviceCookieMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    # A page's 405 is a page saying which methods the address takes, not Django's empty response.
    "storyproject.middleware.MethodNotAllowedPageMiddleware",
    # Staff filtering an admin list by an invalid regular expression: a 400, not a database error.
    "storyproject.middleware.AdminRegexFilterMiddleware",
    # An admin search of a thousand words (each one a condition): a 400, not SQLite's refusal, a 500.
    "storyproject.middleware.AdminSearchWordsMiddleware",
    # An admin action on ids no object can have ("x", 25 digits): a 400, not a 500.
    "storyproject.middleware.AdminSelectionMiddleware",
    # An admin list filtered by a lookup the database cannot run (?id__in=<25 digits>): a 400, not a 500.
    "storyproject.middleware.AdminLookupErrorMiddleware",
    # An admin list filtered by a secret (?key__startswith=4 on tokens): a 400, never an answer.
    "storyproject.middleware.AdminSecretLookupMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "storyproject.urls"
ASGI_APPLICATION = "storyproject.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": database_from_url(envstr("DATABASE_URL", "sqlite:///db.sqlite3"), base_dir=str(BASE_DIR))
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = redis_url("REDIS_URL")
# prometheus-client's multiprocess mode writes its files there from the first metric on. Set but empty,
# it is unset, as for the rest of this code: prometheus-client took it for multiprocess mode and wrote
# each process's files into the current directory.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR", "x").strip():
    del os.environ["PROMETHEUS_MULTIPROC_DIR"]
if os.environ.get("PROMETHEUS_MULTIPROC_DIR") and not os.path.isdir(os.environ["PROMETHEUS_MULTIPROC_DIR"]):
    raise ImproperlyConfigured("PROMETHEUS_MULTIPROC_DIR must name an existing directory")
if REDIS_URL:
    CACHES = {
        "default": {
            # Django's RedisCache, answering as an empty cache while Redis is down (storyproject/cache.py).
            "BACKEND": "storyproject.cache.FailSoftRedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": envstr("CACHE_KEY_PREFIX", "story"),
            "TIMEOUT": 3600,
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        },
        # Built exports (stories/exports/downloads.py, docs/exports.md): the same Redis, kept a day.
        "exports": {
            "BACKEND": "storyproject.cache.FailSoftRedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": envstr("CACHE_KEY_PREFIX", "story"),
            "TIMEOUT": 86400,
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        },
    }
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                # redis-py 8 gives up on a read after 5 s by default, and channels_redis waits up to 5 s
                # in BZPOPMIN on each receive: with the default, every WebSocket consumer died after 5
                # quiet seconds (close 1011). A longer socket timeout still notices a dead Redis.
                "hosts": [{"address": REDIS_URL, "socket_timeout": 30}],
                "prefix": envstr("CACHE_KEY_PREFIX", "story"),
            },
        }
    }
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "TIMEOUT": 3600,
        },
        # Each process keeps at most 32 built exports, so at most 32 x STORY_EXPORT_CACHE_MAX_BYTES.
        "exports": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": "exports",
            "TIMEOUT": 86400,
            "OPTIONS": {"MAX_ENTRIES": 32},
        },
    }
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
# API tokens' users are cached (accounts/authentication.py) only in a cache every process shares: a
# token revoked from another process (a shell, a second server) must not live on in a local one.
STORY_CACHE_TOKEN_USERS = envbool("STORY_CACHE_TOKEN_USERS", bool(REDIS_URL))
if STORY_CACHE_TOKEN_USERS and not REDIS_URL:
    raise ImproperlyConfigured(
        "STORY_CACHE_TOKEN_USERS needs REDIS_URL: in each process's own memory, a token or session revoked "
        "from another process would go on being accepted for up to five minutes"
    )

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
# Login throttling (accounts/throttle.py): this many failures within LOGIN_LOCKOUT_SECONDS lock the
# account, or the client address, for LOGIN_LOCKOUT_SECONDS. An address's limit is higher: several
# people may share one (an office behind NAT).
LOGIN_FAILURES_PER_ACCOUNT = envint("LOGIN_FAILURES_PER_ACCOUNT", 5, minimum=1)
LOGIN_FAILURES_PER_ADDRESS = envint("LOGIN_FAILURES_PER_ADDRESS", 20, minimum=1)
LOGIN_LOCKOUT_SECONDS = envint("LOGIN_LOCKOUT_SECONDS", 900, minimum=1, maximum=86_400)
# A browser that signed in to an account is let past that account's lock (its own failures still lock
# it): its device cookie lasts this long from that sign-in (accounts/throttle.py).
LOGIN_DEVICE_COOKIE_SECONDS = envint(
    "LOGIN_DEVICE_COOKIE_SECONDS", 180 * 86_400, minimum=60, maximum=5 * 365 * 86_400
)
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
# Data uploads (persona cards in the admin) are bounded; at most 1 GiB, which daphne holds in memory
# whole (past what a file read takes, 2**63 bytes, import_personas stopped with an OverflowError).
DATA_UPLOAD_MAX_MEMORY_SIZE = envint(
    "DJANGO_DATA_UPLOAD_MAX_BYTES", 2_621_440, minimum=1024, maximum=1_073_741_824
)
FILE_UPLOAD_MAX_MEMORY_SIZE = DATA_UPLOAD_MAX_MEMORY_SIZE

# The largest imported or edited screenplay (an FDX of a feature film is 0.5-1.5 MB; its Fountain a
# tenth of that).
STORY_IMPORT_MAX_BYTES = envint("STORY_IMPORT_MAX_BYTES", 1_000_000, minimum=10_000, maximum=2_500_000)
# JSON bodies sent to the API are bounded before they are read (storyproject/parsers.py): 413 past it.
# By default room for the editor's save of a text at the import limit ({"fountain": ...}): in JSON a
# line break is two bytes, so a text of short lines within the limit made a larger body, refused 413.
API_MAX_BODY_BYTES = envint(
    "API_MAX_BODY_BYTES", max(1_048_576, 2 * STORY_IMPORT_MAX_BYTES + 65_536), minimum=1024
)
# Above either body limit, a screenplay the import takes could never be saved from the editor (its JSON
# body a 413) nor uploaded (the form's): refused here rather than found by a writer.
for _limit_name, _limit in (
    ("API_MAX_BODY_BYTES", API_MAX_BODY_BYTES),
    ("DJANGO_DATA_UPLOAD_MAX_BYTES", DATA_UPLOAD_MAX_MEMORY_SIZE),
):
    if _limit < STORY_IMPORT_MAX_BYTES:
        raise ImproperlyConfigured(
            f"STORY_IMPORT_MAX_BYTES ({STORY_IMPORT_MAX_BYTES}) must not be above {_limit_name} ({_limit}):"
            " an imported screenplay of that size could not be saved from the editor"
        )
# Any request body, chunked or not, is read by the ASGI handler up to this size (storyproject/handlers.py):
# 413 past it. The default leaves room for a multipart upload's framing around a file at the upload limit.
HTTP_MAX_BODY_BYTES = envint(
    "HTTP_MAX_BODY_BYTES",
    max(DATA_UPLOAD_MAX_MEMORY_SIZE, API_MAX_BODY_BYTES) + 65_536,
    minimum=max(DATA_UPLOAD_MAX_MEMORY_SIZE, API_MAX_BODY_BYTES),
)

REST_FRAMEWORK = {
    # Token first, so an anonymous API request gets 401 with "WWW-Authenticate: Token".
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.authentication.CachedTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PARSER_CLASSES": [
        "storyproject.parsers.BoundedJSONParser",
        "storyproject.parsers.StrictFormParser",
        "storyproject.parsers.StrictMultiPartParser",
    ],
    # A query parameter a view does not read is a 400 (storyproject.parsers), after the 401.
    "DEFAULT_PERMISSION_CLASSES": [
        "rest_framework.permissions.IsAuthenticated",
        "storyproject.parsers.KnownQueryParameters",
    ],
    # ?format= that no renderer has is a 400 naming the formats, not DRF's bare 404.
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "storyproject.parsers.StrictContentNegotiation",
    "DEFAULT_PAGINATION_CLASS": "storyproject.pagination.StrictPageNumberPagination",
    "PAGE_SIZE": 20,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # A GenerationError raised by a view becomes its code's status and body; the rest is DRF's.
    "EXCEPTION_HANDLER": "stories.exception_handlers.exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Screenplay studio API",
    "DESCRIPTION": "Personas, stories, screenplay versions and generation runs.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Request bodies get components of their own ("StoryRequest"), which carry what only a request
    # must meet (a title and a plot that are not blank); shared with the response, they could not.
    "COMPONENT_SPLIT_REQUEST": True,
    # A run's status and mode, named once for the run list and the run's own view (GET /api/runs/{id}/):
    # without a name, two components with the same field names make the enum hook invent one.
    "ENUM_NAME_OVERRIDES": {
        "GenerationRunStatusEnum": "stories.models.GenerationRun.Status",
        "GenerationRunModeEnum": "stories.models.GenerationRun.Mode",
    },
    # The enum hook is drf-spectacular's default; ours documents what answers before the views (the
    # middleware's 400, the paginated lists' 404).
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "storyproject.openapi.responses_outside_views",
        "storyproject.openapi.models_offered",
        "storyproject.openapi.request_bodies_closed",
    ],
}

# --- Security (see Django's deployment checklist) -------------------------------------------
# The database engine, with a sweep of expired sessions that does not load them (accounts/sessions.py).
SESSION_ENGINE = "accounts.sessions"
SECURE_SSL = envbool("DJANGO_SECURE_SSL", not DEBUG)
SESSION_COOKIE_SECURE = SECURE_SSL
CSRF_COOKIE_SECURE = SECURE_SSL
SECURE_SSL_REDIRECT = SECURE_SSL
SECURE_HSTS_SECONDS = 31_536_000 if SECURE_SSL else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE_SSL
SECURE_HSTS_PRELOAD = SECURE_SSL
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if SECURE_SSL else None
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"

# --- Claude -----------------------------------------------------------------------------------
# The key is read once here and never stored in the database or shown anywhere.
ANTHROPIC_API_KEY = envstr("ANTHROPIC_API_KEY")
# Also read by the SDK itself; passed to the client explicitly so that tests can point it elsewhere.
ANTHROPIC_BASE_URL = envstr("ANTHROPIC_BASE_URL")
OFFLINE_MODEL = "offline"
# Models, prices and retirement dates live in stories/generation/models_registry.py; a model it does
# not know, or one retiring within a week, stops the process here rather than failing every call.
STORY_MODEL = envstr("STORY_MODEL", models_registry.DEFAULT_MODEL if ANTHROPIC_API_KEY else OFFLINE_MODEL)
STORY_MODELS = envlist(
    "STORY_MODELS",
    [STORY_MODEL] if STORY_MODEL != OFFLINE_MODEL else [],
)
if refusal := models_registry.settings_refusal(
    default=STORY_MODEL, models=STORY_MODELS, offline=OFFLINE_MODEL
):
    raise ImproperlyConfigured(refusal)
# Thinking for writing calls: 0 (the default) turns it off wherever the model allows; N > 0 lets the
# model think with a budget of N tokens (at least 1,024), added to each call's max_tokens so that
# thinking never eats into the screenplay. Thinking tokens are billed as output.
STORY_THINKING_BUDGET_TOKENS = envint("STORY_THINKING_BUDGET_TOKENS", 0, minimum=0, maximum=32_000)
STORY_MAX_TOKENS = envint("STORY_MAX_TOKENS", 4096, minimum=256, maximum=64_000)
STORY_BACKEND = envstr(
    "STORY_BACKEND",
    "stories.generation.backends.anthropic.AnthropicBackend"
    if ANTHROPIC_API_KEY
    else "stories.generation.backends.offline.OfflineBackend",
)
# A Claude model without the key: the default back-end is then the offline model, which would write
# that model's runs under its name and price them as Claude's. Refused unless STORY_BACKEND is chosen
# explicitly (a back-end of one's own may need no key).
if not ANTHROPIC_API_KEY and "STORY_BACKEND" not in os.environ:
    for _name, _model in [("STORY_MODEL", STORY_MODEL), *(("STORY_MODELS", m) for m in STORY_MODELS)]:
        if _model != OFFLINE_MODEL:
            raise ImproperlyConfigured(
                f"{_name} names the Claude model {_model!r} but ANTHROPIC_API_KEY is not set: set the key,"
                f" or leave {_name} unset to write with the offline model"
            )
# Offline model pacing, in output tokens per second (0: as fast as possible).
STORY_OFFLINE_TOKENS_PER_SECOND = envint("STORY_OFFLINE_TOKENS_PER_SECOND", 150, minimum=0)
STORY_LLM_MAX_RETRIES = envint("STORY_LLM_MAX_RETRIES", 2, minimum=0, maximum=5)
# At most an hour, as the timeouts below: a retry waits on a request's socket and a writer's screen.
STORY_LLM_RETRY_AFTER_CAP_SECONDS = envint("STORY_LLM_RETRY_AFTER_CAP_SECONDS", 10, minimum=0, maximum=3600)
# At most an hour: the sockets' timeouts refuse a value past what a time_t holds (10**12 s failed every
# model call, after start-up passed).
STORY_LLM_CONNECT_TIMEOUT_SECONDS = envint("STORY_LLM_CONNECT_TIMEOUT_SECONDS", 10, minimum=1, maximum=3600)
STORY_LLM_READ_TIMEOUT_SECONDS = envint("STORY_LLM_READ_TIMEOUT_SECONDS", 60, minimum=1, maximum=3600)
# The HTTP transport of the model client on a server process's event loop: "aiohttp" (the SDK's
# DefaultAioHttpClient, about half the CPU per network read) or "httpx" (the SDK's default, httpx2).
# Other event loops (commands, tests) always use httpx2 (stories/generation/backends/anthropic.py).
STORY_LLM_HTTP_CLIENT = envstr("STORY_LLM_HTTP_CLIENT", "aiohttp")
if STORY_LLM_HTTP_CLIENT not in ("aiohttp", "httpx"):
    raise ImproperlyConfigured("STORY_LLM_HTTP_CLIENT must be 'aiohttp' or 'httpx'")
# Text deltas of a run merged into at most one event per this many ms (0: every model chunk its own
# event); the first of a run, and one after a pause this long, go out at once (generation/coalesce.py).
STORY_STREAM_COALESCE_MS = envint("STORY_STREAM_COALESCE_MS", 40, minimum=0, maximum=1000)
# Reading the model's body in bursts (backends/read_pacing.py) while at least _STREAMS model streams
# are open in the process: less CPU per token, text and scenes up to two intervals later. 0: never.
STORY_STREAM_PACED_READ_MS = envint("STORY_STREAM_PACED_READ_MS", 300, minimum=0, maximum=1000)
STORY_STREAM_PACED_READ_STREAMS = envint("STORY_STREAM_PACED_READ_STREAMS", 8, minimum=1, maximum=100_000)
# The process's CPU over the last two seconds, in percent of one core, from which those reads are paced; 0:
# whatever the load (stories/generation/backends/read_pacing.py).
STORY_STREAM_PACED_READ_BUSY_PERCENT = envint(
    "STORY_STREAM_PACED_READ_BUSY_PERCENT", 95, minimum=0, maximum=6400
)
# A server process's interpreter (storyproject/runtime.py): how long a thread keeps the GIL when
# another waits (Python's default is 5 ms), and the garbage collector's first threshold (default 700).
STORY_GIL_SWITCH_INTERVAL_MS = envint("STORY_GIL_SWITCH_INTERVAL_MS", 1, minimum=1, maximum=100)
STORY_GC_THRESHOLD = envint("STORY_GC_THRESHOLD", 50_000, minimum=100, maximum=10_000_000)
# How many PostgreSQL connections a server process's event loop keeps for the writes a running
# generation sends from the loop itself (storyproject/loop_db.py); 0: they go through the thread pool.
STORY_LOOP_DB_CONNECTIONS = envint("STORY_LOOP_DB_CONNECTIONS", 16, minimum=0, maximum=100)
STORY_PARALLEL_CONCURRENCY = envint("STORY_PARALLEL_CONCURRENCY", 6, minimum=1, maximum=32)
# The mode of a request that names none: "single" (one streamed call) or "parallel" (an outline, then
# every scene at once). Parallel by measurement (bench/results/parallel.md): for 4,000 output tokens it
# took 0.32-0.43x the wall time of single-pass at 1.3-1.7x the dollars; below ~1,000 tokens it gains
# little and costs up to 3x, so STORY_DEFAULT_MODE=single suits deployments that write short pieces.
STORY_DEFAULT_MODE = envstr("STORY_DEFAULT_MODE", "parallel")
if STORY_DEFAULT_MODE not in ("single", "parallel"):
    raise ImproperlyConfigured("STORY_DEFAULT_MODE must be 'single' or 'parallel'")
STORY_PARALLEL_MAX_SCENES = envint("STORY_PARALLEL_MAX_SCENES", 30, minimum=1, maximum=100)
# Attempts after the first for one scene that fails (a dropped stream, an invalid scene).
STORY_PARALLEL_SCENE_RETRIES = envint("STORY_PARALLEL_SCENE_RETRIES", 2, minimum=0, maximum=5)
# Rate-limit (429) retries for one scene; each also halves the fan-out's concurrency.
STORY_PARALLEL_RATE_LIMIT_RETRIES = envint("STORY_PARALLEL_RATE_LIMIT_RETRIES", 4, minimum=0, maximum=10)
STORY_MAX_REGENERATE_INSTRUCTIONS_CHARS = 2000
# Importing Fountain or Final Draft (stories/imports/, docs/exports.md): the most scenes (features run
# 40-200); the largest file is STORY_IMPORT_MAX_BYTES, read with the body limits above.
STORY_IMPORT_MAX_SCENES = envint("STORY_IMPORT_MAX_SCENES", 300, minimum=1, maximum=2000)
# A feature film has tens of speaking parts, an ensemble a few hundred; 50,000 one-line speakers took
# 6.7 s to read and made a character list no page could show.
STORY_IMPORT_MAX_CHARACTERS = envint("STORY_IMPORT_MAX_CHARACTERS", 500, minimum=1, maximum=5000)
# Elements (action paragraphs, speeches, transitions) of a writer's version: a feature film has a few
# thousand. Its PDF costs about 2 ms of CPU an element: 20,000 one-line speeches (160 KB of Fountain)
# took 53 s to lay out.
STORY_IMPORT_MAX_ELEMENTS = envint("STORY_IMPORT_MAX_ELEMENTS", 10_000, minimum=100, maximum=100_000)
# A built PDF (6 s of CPU for a 300-scene version) is kept in the "exports" cache when it is at most
# this big (0: never kept); such a version's PDF is about 0.9 MB.
STORY_EXPORT_CACHE_MAX_BYTES = envint(
    "STORY_EXPORT_CACHE_MAX_BYTES", 4_000_000, minimum=0, maximum=100_000_000
)
# PDFs a writer may have built (cache misses only; stories.limits.export_build_admitted): at once, and
# per rolling hour. A 300-scene PDF is 6 s of CPU: 30 an hour is at most 3 minutes of a core a writer.
STORY_EXPORT_BUILDS_AT_ONCE = envint("STORY_EXPORT_BUILDS_AT_ONCE", 2, minimum=1, maximum=100)
STORY_EXPORT_BUILDS_PER_HOUR = envint("STORY_EXPORT_BUILDS_PER_HOUR", 30, minimum=1, maximum=10_000)

# --- Limits (each gives a clear error when exceeded) ------------------------------------------
PERSONA_CONTEXT_TOKEN_BUDGET = envint("PERSONA_CONTEXT_TOKEN_BUDGET", 600, minimum=50)
PERSONA_CONFIG_MAX_BYTES = envint("PERSONA_CONFIG_MAX_BYTES", 65_536, minimum=1024)
# At most a million characters, some 250,000 tokens, past what a prompt holds (and a plot file's read,
# four bytes a character, stopped with an OverflowError past 2**61 of them).
STORY_MAX_PLOT_CHARS = envint("STORY_MAX_PLOT_CHARS", 20_000, minimum=100, maximum=1_000_000)
STORY_MAX_TITLE_CHARS = 200
STORY_MAX_PERSONAS = envint("STORY_MAX_PERSONAS", 12, minimum=1)
STORY_MAX_BATCH_NAMES = envint("STORY_MAX_BATCH_NAMES", 50, minimum=1)
STORY_MIN_MAX_TOKENS = envint("STORY_MIN_MAX_TOKENS", 256, minimum=1)
# At most the largest max output of any model (128K, models_registry's max_output): a larger bound only
# let requests through whose run could not be recorded (max_tokens past PostgreSQL's integer).
STORY_MAX_MAX_TOKENS = envint("STORY_MAX_MAX_TOKENS", 16_000, minimum=256, maximum=128_000)
if STORY_MIN_MAX_TOKENS > STORY_MAX_MAX_TOKENS:
    raise ImproperlyConfigured(
        f"STORY_MIN_MAX_TOKENS ({STORY_MIN_MAX_TOKENS}) must not be above STORY_MAX_MAX_TOKENS "
        f"({STORY_MAX_MAX_TOKENS}): no max_tokens would be allowed"
    )
STORY_MAX_TOTAL_OUTPUT_TOKENS = envint("STORY_MAX_TOTAL_OUTPUT_TOKENS", 32_000, minimum=256)
STORY_MAX_CONTINUATIONS = envint("STORY_MAX_CONTINUATIONS", 4, minimum=0)
# By default enough for the longest valid message (up to daphne's own 1 MiB): a plot and title at their
# limits in characters outside the BMP (emoji, mathematical letters pasted from social media), which
# JSON sends as 4 UTF-8 bytes each (a browser) or as two \uXXXX escapes, 12 bytes (Python's json.dumps),
# with the personas and the rest. 64 KiB refused a valid plot of 16,384 emoji from the create page, or of
# 11,000 Chinese characters from a script, as a message too long.
STORY_WS_MAX_MESSAGE_BYTES = envint(
    "STORY_WS_MAX_MESSAGE_BYTES",
    min(
        1_048_576,
        max(65_536, 12 * (STORY_MAX_PLOT_CHARS + STORY_MAX_TITLE_CHARS) + STORY_MAX_PERSONAS * 110 + 4096),
    ),
    minimum=1024,
)
# What a socket may hold that its client has not read (storyproject/send_buffer.py): past the first,
# a run's events wait for the client to read and an ``attach`` is refused ``busy``; past the second,
# the socket is closed (4408). A whole run's replay is at most a few MB, sent in steps of the first.
STORY_WS_SEND_BUFFER_BYTES = envint("STORY_WS_SEND_BUFFER_BYTES", 262_144, minimum=1024)
STORY_WS_SEND_BUFFER_MAX_BYTES = envint("STORY_WS_SEND_BUFFER_MAX_BYTES", 4_194_304, minimum=4096)
if STORY_WS_SEND_BUFFER_BYTES >= STORY_WS_SEND_BUFFER_MAX_BYTES:
    raise ImproperlyConfigured(
        f"STORY_WS_SEND_BUFFER_BYTES ({STORY_WS_SEND_BUFFER_BYTES}) must be below "
        f"STORY_WS_SEND_BUFFER_MAX_BYTES ({STORY_WS_SEND_BUFFER_MAX_BYTES})"
    )
# Messages a socket may send a second, and as many at once (storyproject/ws_inbound.py): the create page
# sends one or two a second at most (generate, cancel, attach after a reconnect). Past it a message is
# dropped, the first told with ``rate_limited``; as many more dropped without one let through close the
# socket (4429).
STORY_WS_MESSAGES_PER_SECOND = envint("STORY_WS_MESSAGES_PER_SECOND", 20, minimum=1, maximum=100_000)
# Open /ws/generate/ sockets per user, counted across processes when the cache is Redis (per process
# otherwise): the create page opens one per generation, so 8 leaves room for several tabs and scripts.
STORY_WS_MAX_SOCKETS_PER_USER = envint("STORY_WS_MAX_SOCKETS_PER_USER", 8, minimum=1, maximum=1000)
STORY_MAX_ACTIVE_PER_USER = envint("STORY_MAX_ACTIVE_PER_USER", 2, minimum=1)
STORY_GENERATIONS_PER_HOUR = envint("STORY_GENERATIONS_PER_HOUR", 30, minimum=1)
# A run still "streaming" after this long was left by a crashed process: it no longer counts as
# active, so a crash never locks a writer out (longer than any generation the limits above allow).
# At most a week: "now" minus 10**11 s is before year 1, and every admission failed on it.
STORY_STREAMING_STALE_SECONDS = envint("STORY_STREAMING_STALE_SECONDS", 1800, minimum=60, maximum=7 * 86_400)
# A running run's lease (docs/generation.md, "Leases, checkpoints and resume"): its process renews it
# every third of this; a run whose lease has run out for this long is orphaned and may be resumed.
STORY_RUN_LEASE_SECONDS = envint("STORY_RUN_LEASE_SECONDS", 15, minimum=1, maximum=600)
# How long a run's own writes (checkpoint, lease renewal, close, the save's update of the run) wait for a
# row lock another session holds on the run (someone's SELECT ... FOR UPDATE left open in psql) before
# they fail, on PostgreSQL (lock_timeout, storyproject.db.lock_wait_bound). They waited with no limit:
# the run's clients got only keepalives until the lock went. SQLite's writes wait its busy timeout.
STORY_RUN_LOCK_TIMEOUT_SECONDS = envint("STORY_RUN_LOCK_TIMEOUT_SECONDS", 10, minimum=1, maximum=600)
# Whether a server process looks for orphaned runs (every lease period, from its first request) and
# resumes them. The test suite turns it off (tests/conftest.py); its daphne subprocesses keep it on.
STORY_RUN_RECOVERY = envbool("STORY_RUN_RECOVERY", True)

# --- Durable runs: the per-run event log (stories/runs/, docs/generation.md) ---------------------
# A finished run's events stay replayable this long (in Redis with REDIS_URL, else in this process);
# after that an attach gets the run's final state from the database.
STORY_RUN_EVENTS_RETENTION_SECONDS = envint(
    "STORY_RUN_EVENTS_RETENTION_SECONDS", 3600, minimum=10, maximum=7 * 86_400
)
# At most this many events are kept per run (the oldest go first). A 16,000-token single run sends
# about 4,000 events (one per streamed chunk), a 30-scene parallel run about as many.
STORY_RUN_EVENTS_MAX = envint("STORY_RUN_EVENTS_MAX", 20_000, minimum=100, maximum=1_000_000)
# A run nobody follows (no socket, no SSE stream, no blocking caller) for this long is cancelled and
# recorded as such; 0 (the default) lets it run to completion.
STORY_RUN_DETACHED_TIMEOUT_SECONDS = envint(
    "STORY_RUN_DETACHED_TIMEOUT_SECONDS", 0, minimum=0, maximum=86_400
)

# --- Operations: /healthz, /readyz and /metrics (storyproject/health.py, docs/operations.md) ------
# /metrics is off (404) unless one of these is set. With a token, a scrape must send
# "Authorization: Bearer <token>"; with networks, it must come from one of them (the address daphne
# sees: a reverse proxy's, unless the scraper reaches the app directly). With both, both must hold.
METRICS_TOKEN = envtoken("METRICS_TOKEN", min_chars=16)
METRICS_ALLOWED_NETWORKS = envnetworks("METRICS_ALLOWED_NETWORKS")
# Probes and load balancers speak plain HTTP to the app: the HTTPS redirect would fail their checks.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]

# `make serve` (storyproject/serve.py): how long a stopping server process waits for the generations
# it is running to finish before it closes them (they are then recorded as interrupted).
SERVE_GRACEFUL_SECONDS = serve.graceful_seconds()
# System checks an operator has decided to accept (`make serve` refuses to start on any warning of
# `manage.py check --deploy`), e.g. security.W004 where TLS and HSTS are another component's job.
SILENCED_SYSTEM_CHECKS = envlist("DJANGO_SILENCED_SYSTEM_CHECKS", [])

# "plain" lines, or "json": one object per line with the run id of a generation (storyproject/logs.py).
LOG_FORMAT = envstr("LOG_FORMAT", "plain")
if LOG_FORMAT not in ("plain", "json"):
    raise ImproperlyConfigured("LOG_FORMAT must be 'plain' or 'json'")
# The root logger's level, in any case: logging's own refusal of a bad one was a traceback naming no variable.
LOG_LEVEL = (envstr("DJANGO_LOG_LEVEL") or "INFO").upper()
if LOG_LEVEL not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
    raise ImproperlyConfigured(
        "DJANGO_LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL; "
        f"got {os.environ['DJANGO_LOG_LEVEL'].strip()!r}"
    )
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "storyproject.logs.JsonFormatter"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        # The SDK's debug logging prints request headers; it stays at WARNING whatever the root says.
        "anthropic": {"level": "WARNING"},
        "httpx": {"level": "WARNING"},
        "httpx2": {"level": "WARNING"},
        "daphne": {"level": "WARNING"},
    },
}

os.environ.pop("ANTHROPIC_LOG", None)

# Static files are served by the app itself (no CDN): whitenoise finds them without collectstatic.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG
