"""Settings, all from the environment.

With no environment at all the gateway runs on SQLite and an in-process cache (the embedded
default). Production sets DATABASE_URL (PostgreSQL), REDIS_URL (counts shared across instances:
rate limits), SECRET_KEY, ALLOWED_HOSTS and DEBUG=false.
"""

from __future__ import annotations

import math
import os
import re
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

# Every environment variable this file reads, recorded by the helpers below: the gateway's own settings,
# which a provider's `$NAME` secret reference may never name (providers.secrets), so that a config file
# or an operator cannot send SECRET_KEY or DATABASE_URL to an api_base of their choosing.
SETTINGS_ENV_NAMES: set[str] = set()


def env_str(name: str, default: str = "") -> str:
    SETTINGS_ENV_NAMES.add(name)
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    raw = env_str(name) or None
    if raw is None or raw == "":
        return default
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean; use true or false.")


def env_int(name: str, default: int) -> int:
    raw = env_str(name) or None
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not an integer.") from None


def env_float(name: str, default: float) -> float:
    raw = env_str(name) or None
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a number.") from None


def env_list(name: str, default: list[str]) -> list[str]:
    raw = env_str(name) or None
    if raw is None or raw.strip() == "":
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_file(name: str) -> str | None:
    """The path of an existing file, or None when the variable is unset."""
    raw = env_str(name).strip()
    if not raw:
        return None
    if not os.path.isfile(raw):
        raise ImproperlyConfigured(f"{name}={raw!r} is not a file; give the path of an existing file, or unset it.")
    return raw


DEBUG = env_bool("DEBUG", False)

# A development key is only acceptable while DEBUG is on; production must bring its own.
_DEV_SECRET_KEY = "django-insecure-development-only-key-do-not-use-in-production"
SECRET_KEY = env_str("SECRET_KEY")
_ALLOW_DEV_SECRET_KEY = env_bool("GATEWAY_ALLOW_DEV_SECRET_KEY", False)
if not SECRET_KEY:
    if DEBUG or _ALLOW_DEV_SECRET_KEY:
        SECRET_KEY = _DEV_SECRET_KEY
    else:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set. Set SECRET_KEY to a long random string "
            "(python -c 'import secrets; print(secrets.token_urlsafe(50))'), "
            "or set DEBUG=true for local development."
        )

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "endpoints_app",  # first: its runserver (the ASGI application under uvicorn) replaces Django's
    "consumers",
    "usage",
    "console",  # before the admin: it extends the admin's index and change forms
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_filters",
    "axes",
]

MIDDLEWARE = [
    "endpoints_app.middleware.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "axes.middleware.AxesMiddleware",  # last, as django-axes asks
]

ROOT_URLCONF = "gateway_project.urls"
ASGI_APPLICATION = "gateway_project.asgi.application"
# The MLflow routes have no trailing slash; never redirect a POST.
APPEND_SLASH = False

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
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

_default_sqlite = f"sqlite:///{BASE_DIR / 'var' / 'gateway.sqlite3'}"
DATABASE_URL = env_str("DATABASE_URL", _default_sqlite)
try:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=600)}
except Exception as exc:  # dj_database_url raises several types for a bad URL
    raise ImproperlyConfigured(f"DATABASE_URL={DATABASE_URL!r} is not a valid database URL: {exc}") from exc
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    Path(DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    # WAL: the workers read (config polls, table builds) while one writes (usage records), and a commit
    # costs one fsync of the log instead of a journal's several; IMMEDIATE: a transaction takes the write
    # lock when it begins, so two workers' writers wait their turn instead of failing with "locked".
    DATABASES["default"]["OPTIONS"] = {"timeout": 20, "transaction_mode": "IMMEDIATE",
                                       "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL"}
_TEST_DATABASE_NAME = env_str("TEST_DATABASE_NAME")
if "TEST" not in DATABASES["default"] and _TEST_DATABASE_NAME:
    DATABASES["default"]["TEST"] = {"NAME": _TEST_DATABASE_NAME}

# Shared counts (rate limits, budgets, circuit state): in Redis with REDIS_URL, across instances;
# without it, start_server's supervisor shares them between its workers (serving.counters).
REDIS_URL = env_str("REDIS_URL")
if REDIS_URL:
    from serving.resp import RedisAddress

    try:
        RedisAddress.parse(REDIS_URL)
    except ValueError as exc:
        raise ImproperlyConfigured(f"REDIS_URL is not a usable Redis URL: {exc}.") from None
_CACHE_KEY_PREFIX = env_str("CACHE_KEY_PREFIX")
GATEWAY_REDIS_PREFIX = env_str("GATEWAY_REDIS_PREFIX") or _CACHE_KEY_PREFIX or "gateway"
# Set by start_server's supervisor for its workers: the file, in shared memory, of the counts they share.
GATEWAY_COUNTERS_FILE = env_str("GATEWAY_COUNTERS_FILE")

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
# `start_server` collects static files here and the ASGI application serves them (the admin, Swagger UI,
# ReDoc; gateway_project/asgi.py).
STATIC_ROOT = Path(env_str("STATIC_ROOT") or BASE_DIR / "var" / "static")
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Session and CSRF cookies only over HTTPS, unless DEBUG (local development over http) or SECURE_COOKIES=false
# (a deployment served over plain http on a private network).
SECURE_COOKIES = env_bool("SECURE_COOKIES", not DEBUG)
SESSION_COOKIE_SECURE = SECURE_COOKIES
CSRF_COOKIE_SECURE = SECURE_COOKIES
# Behind a proxy that terminates TLS: the header that says the client used https (e.g. X-Forwarded-Proto, trusted
# only if the proxy always sets it), then HTTPS redirects and HSTS (Django's SecurityMiddleware, which the
# invocation views get too).
_proxy_ssl_header = env_str("SECURE_PROXY_SSL_HEADER", "").strip()
if _proxy_ssl_header:
    SECURE_PROXY_SSL_HEADER = ("HTTP_" + _proxy_ssl_header.upper().replace("-", "_"), "https")
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
SECURE_REDIRECT_EXEMPT = [r"^health$"]  # a load balancer's health check may come over http
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0)
# Every error is JSON, a failed CSRF check (a form posted without its token) too.
CSRF_FAILURE_VIEW = "endpoints_app.errors.csrf_failure"

# Admin logins: after GATEWAY_LOGIN_FAILURE_LIMIT failed passwords from one client address, every login from
# it is refused (429, JSON) for GATEWAY_LOGIN_COOLOFF_MINUTES (django-axes, its attempts in the database, so
# every worker and instance counts them together). The address is the one uvicorn resolved: X-Forwarded-For
# is believed only from the proxies in FORWARDED_ALLOW_IPS (uvicorn's setting, default 127.0.0.1).
AUTHENTICATION_BACKENDS = [
    "gateway_project.security.LoginThrottleBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_ENABLED = env_bool("GATEWAY_LOGIN_THROTTLE", True)
AXES_FAILURE_LIMIT = env_int("GATEWAY_LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(minutes=env_float("GATEWAY_LOGIN_COOLOFF_MINUTES", 15.0))
AXES_LOCKOUT_PARAMETERS = ["ip_address"]
AXES_RESET_ON_SUCCESS = True
AXES_CLIENT_IP_CALLABLE = "gateway_project.security.client_address"
AXES_LOCKOUT_CALLABLE = "gateway_project.security.locked_out"
AXES_VERBOSE = False

REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": [],
    "UNAUTHENTICATED_USER": None,
    "EXCEPTION_HANDLER": "endpoints_app.views.exception_handler",
    # No OPTIONS description of the views (the schema is /openapi.json): DRF's describes serializer fields, which
    # the management API's definition serializers do not have (a 500). OPTIONS answers 405.
    "DEFAULT_METADATA_CLASS": None,
    # The management API's lists (/api/manage/...): ?limit=&offset= pages, django-filter's query filters.
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 100,
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Django AI Gateway",
    "DESCRIPTION": (
        "One HTTP front door to many LLM providers, compatible with the MLflow Deployments Server "
        "(MLflow AI Gateway) and with the OpenAI API."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": False,
    # 3.1 speaks JSON Schema 2020-12, the dialect pydantic writes (nullable as type null).
    "OAS_VERSION": "3.1.0",
    "ENUM_NAME_OVERRIDES": {"EndpointTypeEnum": "providers.shapes.ENDPOINT_TYPES"},
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "endpoints_app.openapi.add_invocation_paths",
    ],
}

# Secrets typed as literal keys in YAML or the admin are encrypted at rest with Fernet. The key
# comes from GATEWAY_ENCRYPTION_KEY (a Fernet key, or several separated by commas for rotation:
# the first encrypts, all decrypt); without it, one is derived from SECRET_KEY.
GATEWAY_ENCRYPTION_KEYS = env_list("GATEWAY_ENCRYPTION_KEY", [])

# Who may call: `off` (MLflow's behaviour: anyone who can reach the gateway) or `keys` (every invocation and
# listing route needs `Authorization: Bearer <gateway key>` of an enabled consumer allowed to call it).
GATEWAY_AUTH = env_str("GATEWAY_AUTH", "off").strip().lower() or "off"
if GATEWAY_AUTH not in ("off", "keys"):
    raise ImproperlyConfigured(f"GATEWAY_AUTH={GATEWAY_AUTH!r} is not a mode: use off or keys.")
# Gateway keys and operator tokens are stored as HMAC-SHA256(pepper, key). Without a pepper of its own the
# gateway derives one from SECRET_KEY, so changing SECRET_KEY would invalidate every key: set this in production.
GATEWAY_KEY_PEPPER = env_str("GATEWAY_KEY_PEPPER")

# The usage ledger: a record per invocation, buffered per worker and written in batches off the request path.
GATEWAY_USAGE_LEDGER = env_bool("GATEWAY_USAGE_LEDGER", True)
GATEWAY_USAGE_FLUSH_SECONDS = env_float("GATEWAY_USAGE_FLUSH_SECONDS", 1.0)  # 0: only when asked (tests)
GATEWAY_USAGE_BATCH = env_int("GATEWAY_USAGE_BATCH", 2000)
GATEWAY_USAGE_BUFFER = env_int("GATEWAY_USAGE_BUFFER", 200_000)  # records held while the database is away
GATEWAY_USAGE_RETENTION_DAYS = env_int("GATEWAY_USAGE_RETENTION_DAYS", 30)
# start_server runs prune_usage at start and then every this many hours (0: never, a cron job does it).
GATEWAY_USAGE_PRUNE_HOURS = env_float("GATEWAY_USAGE_PRUNE_HOURS", 24.0)
# Budget alerts: one POST per crossing of 50 %, 80 % and 100 % of a budget.
GATEWAY_ALERT_WEBHOOK_URL = env_str("GATEWAY_ALERT_WEBHOOK_URL")
if GATEWAY_ALERT_WEBHOOK_URL and not GATEWAY_ALERT_WEBHOOK_URL.startswith(("http://", "https://")):
    raise ImproperlyConfigured("GATEWAY_ALERT_WEBHOOK_URL must be an http:// or https:// URL.")
if not math.isfinite(GATEWAY_USAGE_PRUNE_HOURS):
    raise ImproperlyConfigured("GATEWAY_USAGE_PRUNE_HOURS must be a finite number of hours (0: never).")
for _name in ("GATEWAY_USAGE_BATCH", "GATEWAY_USAGE_BUFFER", "GATEWAY_USAGE_RETENTION_DAYS"):
    if globals()[_name] < 1:
        raise ImproperlyConfigured(f"{_name} must be 1 or more.")

# Circuit breaking of traffic-route destinations: open after this many consecutive failures (0: never), for this
# long, then let one probe through (serving.circuit).
GATEWAY_CIRCUIT_FAILURES = env_int("GATEWAY_CIRCUIT_FAILURES", 5)
GATEWAY_CIRCUIT_COOLDOWN_SECONDS = env_float("GATEWAY_CIRCUIT_COOLDOWN_SECONDS", 30.0)

# Upstream defaults; each endpoint may override them in YAML (model.config is the provider's;
# these live beside it under `timeouts:`) or in the admin.
GATEWAY_CONNECT_TIMEOUT = env_float("GATEWAY_CONNECT_TIMEOUT", 10.0)
GATEWAY_READ_TIMEOUT = env_float("GATEWAY_READ_TIMEOUT", 300.0)
GATEWAY_MAX_RETRIES = env_int("GATEWAY_MAX_RETRIES", 2)
GATEWAY_POOL_MAXSIZE = env_int("GATEWAY_POOL_MAXSIZE", 64)
# How long an idle upstream connection is kept for reuse (less when the server announces Keep-Alive: timeout).
GATEWAY_POOL_IDLE_SECONDS = env_float("GATEWAY_POOL_IDLE_SECONDS", 30.0)
# A PEM file of the certificate authorities trusted for https upstreams, instead of the system's store
# (which SSL_CERT_FILE / SSL_CERT_DIR already override). Proxies come from HTTP_PROXY, HTTPS_PROXY, NO_PROXY.
GATEWAY_CA_BUNDLE = env_file("GATEWAY_CA_BUNDLE")
# The largest invocation body accepted (413 beyond it). Django's 2.5 MB default is too small for chat
# requests that carry images as base64 data URLs.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("GATEWAY_MAX_REQUEST_BYTES", 32 * 1024 * 1024)
# The largest upstream answer read whole (a non-stream body, an error body) and the largest line or event
# of an upstream stream: beyond them the call is a 502 bad_upstream_response, not a worker's memory.
GATEWAY_MAX_UPSTREAM_BYTES = env_int("GATEWAY_MAX_UPSTREAM_BYTES", 64 * 1024 * 1024)
GATEWAY_MAX_UPSTREAM_EVENT_BYTES = env_int("GATEWAY_MAX_UPSTREAM_EVENT_BYTES", 8 * 1024 * 1024)
# A file where each rebuilt endpoint table's rows are kept (secrets as stored: references, encrypted values),
# for a worker that starts while the database is away (serving.snapshot). start_server sets one in its private
# runtime folder unless this is set; empty: none.
GATEWAY_TABLE_SNAPSHOT = env_str("GATEWAY_TABLE_SNAPSHOT", "")
# The HTTP edge (serving.edge): what one client may cost a worker. A request's head (request line and
# headers) is at most this many bytes (431) and must arrive within this many seconds (408); a body may pause
# this long between two reads (408); a worker holds at most this many client connections (past it, the
# oldest idle one is closed, or the new one answered 503), fewer if its open-file limit cannot hold them.
GATEWAY_MAX_HEADER_BYTES = env_int("GATEWAY_MAX_HEADER_BYTES", 64 * 1024)
GATEWAY_HEADER_TIMEOUT_SECONDS = env_float("GATEWAY_HEADER_TIMEOUT_SECONDS", 10.0)
GATEWAY_BODY_TIMEOUT_SECONDS = env_float("GATEWAY_BODY_TIMEOUT_SECONDS", 30.0)
GATEWAY_MAX_CONNECTIONS = env_int("GATEWAY_MAX_CONNECTIONS", 2048)
for _name in ("GATEWAY_MAX_REQUEST_BYTES", "GATEWAY_MAX_HEADER_BYTES", "GATEWAY_MAX_CONNECTIONS"):
    if env_int(_name, 1) < 1:
        raise ImproperlyConfigured(f"{_name} must be 1 or more.")
for _name in ("GATEWAY_HEADER_TIMEOUT_SECONDS", "GATEWAY_BODY_TIMEOUT_SECONDS"):
    if env_float(_name, 1.0) <= 0:
        raise ImproperlyConfigured(f"{_name} must be more than 0 seconds.")
# How often each process checks whether the endpoint table changed elsewhere.
GATEWAY_CONFIG_POLL_SECONDS = env_float("GATEWAY_CONFIG_POLL_SECONDS", 0.5)
# Rate-limit counters in Redis: how long a count may take, and what happens when Redis cannot count
# (unreachable, too slow, or an error reply). Open (the default, as Kong and Envoy do): the request is
# served unlimited and a warning is logged. Closed: it is refused with a 503.
GATEWAY_RATE_LIMIT_TIMEOUT = env_float("GATEWAY_RATE_LIMIT_TIMEOUT", 1.0)
GATEWAY_RATE_LIMIT_FAIL_OPEN = env_bool("GATEWAY_RATE_LIMIT_FAIL_OPEN", True)
# After Redis times out or refuses a connection, a worker does not try it again for this long (0: always
# try): a hung Redis then costs one GATEWAY_RATE_LIMIT_TIMEOUT per interval, not one per limited call.
GATEWAY_REDIS_BREAKER_SECONDS = env_float("GATEWAY_REDIS_BREAKER_SECONDS", 5.0)

# Observability (observability/): Prometheus metrics at /metrics (GATEWAY_METRICS_TOKEN: a bearer token the
# scraper must send), OpenTelemetry traces when OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_TRACES_EXPORTER is set
# (prompts and completions only with GATEWAY_TRACE_CONTENT), one access line per request on the logger
# `gateway.access` (text, or one JSON object a line with GATEWAY_LOG_FORMAT=json; GATEWAY_ACCESS_LOG=false: none).
GATEWAY_METRICS = env_bool("GATEWAY_METRICS", True)
GATEWAY_METRICS_TOKEN = env_str("GATEWAY_METRICS_TOKEN", "")
GATEWAY_TRACE_CONTENT = env_bool("GATEWAY_TRACE_CONTENT", False)
GATEWAY_ACCESS_LOG = env_bool("GATEWAY_ACCESS_LOG", True)
GATEWAY_LOG_FORMAT = env_str("GATEWAY_LOG_FORMAT", "text").strip().lower() or "text"
if GATEWAY_LOG_FORMAT not in ("text", "json"):
    raise ImproperlyConfigured(f"GATEWAY_LOG_FORMAT={GATEWAY_LOG_FORMAT!r} is not one of text, json.")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"()": "observability.accesslog.Formatter",
                             "format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
                   "bare": {"format": "%(message)s"}},
    # StreamHandlers that write a batch of access lines at once (observability.reports), any other line at once.
    "handlers": {"console": {"class": "observability.accesslog.HoldingStreamHandler", "formatter": "plain"},
                 # An access line in JSON is a whole JSON object: no prefix in front of it.
                 "access": {"class": "observability.accesslog.HoldingStreamHandler", "formatter": "bare"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {
        "django.server": {"level": "WARNING"},
        "gateway.access": {"level": "INFO" if GATEWAY_ACCESS_LOG else "WARNING",
                           **({"handlers": ["access"], "propagate": False} if GATEWAY_LOG_FORMAT == "json" else {})},
    },
}

# Config documents and secret references (README: Secret references, Config file limits).
# The largest config file or upload read, in bytes; a larger one is refused before it is parsed.
GATEWAY_CONFIG_MAX_BYTES = env_int("GATEWAY_CONFIG_MAX_BYTES", 10 * 1024 * 1024)
if GATEWAY_CONFIG_MAX_BYTES < 1:
    raise ImproperlyConfigured("GATEWAY_CONFIG_MAX_BYTES must be 1 or more.")
# Where key files may be: a file reference must resolve (symlinks and `..` followed) to a regular file under it.
# Unset: a config file may name key files under its own directory; the admin and the API may name none.
GATEWAY_SECRETS_DIR = env_str("GATEWAY_SECRETS_DIR").strip()
if GATEWAY_SECRETS_DIR and not os.path.isdir(GATEWAY_SECRETS_DIR):
    raise ImproperlyConfigured(f"GATEWAY_SECRETS_DIR={GATEWAY_SECRETS_DIR!r} is not a directory.")
# A regular expression the name of every `$NAME` reference must match in full (e.g. `[A-Z0-9_]*_API_KEY|AWS_.*`);
# unset: any name that is not one of the gateway's own settings.
GATEWAY_SECRET_ENV_PATTERN = env_str("GATEWAY_SECRET_ENV_PATTERN").strip()
try:
    re.compile(GATEWAY_SECRET_ENV_PATTERN)
except re.error as exc:
    raise ImproperlyConfigured(f"GATEWAY_SECRET_ENV_PATTERN is not a regular expression: {exc}.") from None
# Link-local addresses (169.254.0.0/16, fe80::/10, the clouds' metadata services) as an upstream URL's host.
GATEWAY_ALLOW_LINK_LOCAL_API_BASE = env_bool("GATEWAY_ALLOW_LINK_LOCAL_API_BASE", False)

# Read last: every variable above is in it.
GATEWAY_SETTINGS_ENV = frozenset(SETTINGS_ENV_NAMES)
