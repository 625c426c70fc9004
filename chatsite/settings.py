"""Settings for chatsite, read from the environment and the .env file beside manage.py.

Every variable has a default that works on a fresh clone (SQLite, local-memory
cache, the offline responder), so `make run` needs nothing set. .env.example
lists every variable; docs/configuration.md says what each one does.
"""

import os
import sys
import tempfile
import warnings
import zoneinfo
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from dotenv import load_dotenv

BASE_DIR = Path(__file__).resolve().parent.parent

# One source of settings: the .env file beside manage.py (or the file
# DJANGO_ENV_FILE names) is read into the environment, where a variable already
# set wins. So the web process, manage.py in any shell, Compose (env_file) and a
# Procfile runner all see the same values. A test run (pytest sets
# PYTEST_VERSION, and the processes it starts inherit it) reads no .env unless
# DJANGO_ENV_FILE names one: a developer's own .env must not change the tests.
# Values are taken literally (no ${...} expansion), as systemd's EnvironmentFile does.
ENV_FILE = os.environ.get("DJANGO_ENV_FILE", "")
if ENV_FILE:
    if not Path(ENV_FILE).is_file():
        raise ImproperlyConfigured(f"DJANGO_ENV_FILE={ENV_FILE} is not a file: point it at the site's .env file.")
elif "PYTEST_VERSION" not in os.environ:
    ENV_FILE = str(BASE_DIR / ".env")
if ENV_FILE:
    load_dotenv(ENV_FILE, override=False, interpolate=False)


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    return int(value) if value.strip() else default


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name, "")
    return float(value) if value.strip() else default


# A manage.py command typed in a shell with no production setting at all (no
# DJANGO_SECRET_KEY, no DJANGO_DEBUG, in the environment or .env) is
# development: it gets the same defaults as `make run`, so
# `.venv/bin/python manage.py createsuperuser` works on a fresh clone. The web
# process (gunicorn, chatsite.asgi) never guesses. With DEBUG off, manage.py and
# the web process refuse to start on unfit settings (chatsite/startup.py).
DEVELOPMENT_SHELL = (
    Path(sys.argv[0]).name == "manage.py"
    and not os.environ.get("DJANGO_SECRET_KEY")
    and not os.environ.get("DJANGO_DEBUG")
)
if DEVELOPMENT_SHELL:
    print(
        "chatsite: no DJANGO_SECRET_KEY or DJANGO_DEBUG set: development settings (DEBUG on); "
        "set them for production.",
        file=sys.stderr,
    )
DEBUG = env_bool("DJANGO_DEBUG", DEVELOPMENT_SHELL)

# Empty with DEBUG off: manage.py and the web process refuse to start (chatsite/startup.py).
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "")
if not SECRET_KEY and DEBUG:
    SECRET_KEY = "django-insecure-local-development-only"

ALLOWED_HOSTS = [
    host.strip()
    for host in os.environ.get("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]").split(",")
    if host.strip()
]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "axes",
    "conversations",
]

MIDDLEWARE = [
    "conversations.middleware.RequestLogMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    # The customer's language on the page; the admin in the staff member's (Accept-Language), which the
    # staff summary follows (summary.py).
    "conversations.middleware.LanguageMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "conversations.middleware.admin_content_security_policy",
    "conversations.middleware.staff_presence",
    # Last, as django-axes asks: it turns a locked-out login into the lockout page.
    "axes.middleware.AxesMiddleware",
]

# What the JSON API goes through (chatsite/asgi.py serves /api/ and /healthz
# with this list): the request log and the security headers, nothing sync-only.
API_MIDDLEWARE = [
    "conversations.middleware.RequestLogMiddleware",
    "conversations.middleware.ApiSecurityMiddleware",
    "conversations.middleware.LanguageMiddleware",
]

ROOT_URLCONF = "chatsite.urls"

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

WSGI_APPLICATION = "chatsite.wsgi.application"
ASGI_APPLICATION = "chatsite.asgi.application"

# Database: DATABASE_URL, else an SQLite file next to manage.py.
DATABASE_URL = os.environ.get("DATABASE_URL", "")
if DATABASE_URL:
    # Health checks make the pool test a connection before handing it out, so a
    # connection PostgreSQL dropped (restart, failover, pg_terminate_backend)
    # is replaced instead of failing the next request.
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=0, conn_health_checks=True)}
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(BASE_DIR / "db.sqlite3"),
            # IMMEDIATE takes the write lock at BEGIN, so two writers wait for
            # each other (up to "timeout" seconds) instead of failing with
            # "database is locked" halfway through a transaction.
            # WAL lets pages read while a turn writes.
            "OPTIONS": {
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
            # Tests get a file too, not Django's shared-cache in-memory
            # database: there a read in one thread makes a write in another
            # fail at once with "database table is locked" instead of waiting
            # out the timeout, as a file does. One file per test process.
            "TEST": {"NAME": os.path.join(tempfile.gettempdir(), f"chatsite-test-{os.getpid()}.sqlite3")},
        }
    }

if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # A chat turn hands its connection back to this pool before it waits for
    # the LLM, so the number of PostgreSQL connections is bounded by
    # DATABASE_POOL_MAX_SIZE per worker, not by the number of waiting turns.
    # DATABASE_POOL_MAX_SIZE is shared by a worker's two pools: half for the turn
    # store on the event loop (conversations/store/postgres.py), the rest for Django's.
    pool_max_size = env_int("DATABASE_POOL_MAX_SIZE", 10)
    DATABASE_POOL_TIMEOUT = env_float("DATABASE_POOL_TIMEOUT", 3.0)
    # The turn store's pool (conversations/store/postgres.py) waits on past DATABASE_POOL_TIMEOUT while
    # its connections are all busy with other turns: under a burst that wait is the queue, and
    # answering late beats refusing a question, or losing a reply the LLM already wrote.
    DATABASE_POOL_QUEUE_TIMEOUT = env_float("DATABASE_POOL_QUEUE_TIMEOUT", 30.0)
    CHAT_STORE_POOL_MAX_SIZE = max(1, pool_max_size // 2)
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": env_int("DATABASE_POOL_MIN_SIZE", 1),
        "max_size": max(1, pool_max_size - CHAT_STORE_POOL_MAX_SIZE),
        # A request that waits longer than this for a free connection is
        # answered 503 database_unavailable: better than a turn that hangs.
        "timeout": DATABASE_POOL_TIMEOUT,
    }
    # Nothing waits on the database for long: a statement running longer, or
    # waiting longer for a lock (someone's long transaction, a migration), is
    # cancelled, and the request is answered 503 database_unavailable with
    # Retry-After (conversations/db.py) instead of stalling every turn behind it.
    DATABASES["default"]["OPTIONS"]["options"] = (
        f"-c statement_timeout={env_int('DATABASE_STATEMENT_TIMEOUT_MS', 5000)}"
        f" -c lock_timeout={env_int('DATABASE_LOCK_TIMEOUT_MS', 1000)}"
    )
    # The turn store (conversations/store/postgres.py) has its statements prepared on each of its
    # connections after a few uses (psycopg's prepare_threshold): PostgreSQL then neither parses nor
    # plans them again, a third to four fifths of their server CPU (docs/benchmarks.md). Django's
    # own connections never prepare (its default, for poolers). Set 0 behind a pooler in
    # transaction mode that does not keep prepared statements (PgBouncer before 1.21, or without
    # max_prepared_statements; docs/deploy.md).
    DATABASE_PREPARED_STATEMENTS = env_bool("DATABASE_PREPARED_STATEMENTS", True)

# Cache: Redis when REDIS_URL is set, else a per-process local-memory cache.
REDIS_URL = os.environ.get("REDIS_URL", "")
REDIS_SOCKET_TIMEOUT = env_float("REDIS_SOCKET_TIMEOUT", 0.25)
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "chatsite",
            "OPTIONS": {
                # Redis only speeds things up: a dead or stalled Redis must
                # cost a request a fraction of a second, never a hang.
                "SOCKET_CONNECT_TIMEOUT": REDIS_SOCKET_TIMEOUT,
                "SOCKET_TIMEOUT": REDIS_SOCKET_TIMEOUT,
                # Plain data only: pickle (the default) would run code that anyone
                # who can write to Redis put there (conversations/shared_state.py).
                "SERIALIZER": "conversations.shared_state.JSONSerializer",
            },
        }
    }
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "KEY_PREFIX": "chatsite",
        }
    }

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# The languages the customer's side is translated into (locale/, docs/i18n.md): the page, the
# embedded chat and the API's messages follow the customer's choice, else Accept-Language, else
# LANGUAGE_CODE (conversations/middleware.py, LanguageMiddleware).
LANGUAGE_CODE = "en"
LANGUAGES = [("en", "English"), ("de", "Deutsch"), ("fr", "Français"), ("es", "Español"), ("ar", "العربية")]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
# `manage.py collectstatic` (run by make run, the platform's build and the
# Dockerfile) writes every file here under a name with its content's hash
# (chat.3f2a9c1e.js), with .gz and .br copies beside it; WhiteNoise serves the
# hashed names with a ten-year `immutable` max-age, since a changed file gets
# a new name, and picks the compressed copy the browser accepts. With DEBUG on
# WhiteNoise serves the source folders as they are (no build step while editing).
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "chatsite.storage.StaticFilesStorage"},
}
# WhiteNoise hands Django a file iterator that is sync; under ASGI Django warns
# about it once per static file served. Harmless for a few small files.
warnings.filterwarnings("ignore", "StreamingHttpResponse must consume synchronous iterators")

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# One JSON object a line on stderr, with the request id (conversations/logs.py).
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "conversations.logs.JsonFormatter"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "json"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {
        "django": {"handlers": ["console"], "level": "INFO", "propagate": False},
        # RequestLogMiddleware logs every request already, with more detail.
        "django.request": {"handlers": ["console"], "level": "ERROR", "propagate": False},
        # The openai client's HTTP library logs every call at INFO; the turn's own line says more.
        "httpx2": {"level": "WARNING"},
        "httpx": {"level": "WARNING"},
        # django-axes says hello at every start (every manage.py command); its lockouts are WARNINGs.
        "axes.apps": {"level": "WARNING"},
    },
}

# --- Security ---------------------------------------------------------------

SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
# Behind a TLS-terminating proxy that sets X-Forwarded-Proto (Heroku, most
# load balancers), say so, or Django cannot tell that requests came over HTTPS.
if env_bool("DJANGO_BEHIND_TLS_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# With DEBUG off the site is served over HTTPS only: redirect, HSTS, secure
# cookies. DJANGO_SECURE_SSL_REDIRECT=0 serves plain HTTP (tests, a
# production-style run on localhost: docs/operations.md). The
# redirect is a 301, which browsers remember; HSTS is only ever sent on HTTPS.
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", not DEBUG)
# A load balancer checks each instance directly, over plain HTTP: a 301 would
# read as unhealthy. (SecurityMiddleware matches these against the path
# without its leading slash.)
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^livez$", r"^metrics$"]
SECURE_HSTS_SECONDS = env_int("DJANGO_HSTS_SECONDS", 0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_HSTS_INCLUDE_SUBDOMAINS", True)
# The preload directive has no effect until someone submits the domain to the
# browsers' preload list; it is on so that `check --deploy` passes.
SECURE_HSTS_PRELOAD = env_bool("DJANGO_HSTS_PRELOAD", True)
SESSION_COOKIE_SECURE = not DEBUG
CSRF_COOKIE_SECURE = not DEBUG
# Staff logins (django-axes): after AXES_FAILURE_LIMIT failed logins in a row
# for one username, or from one client address (an IPv6 /64 counts as one, the
# address as limits.py sees it behind CHAT_TRUSTED_PROXIES), logins for it are
# refused with a lockout page for the cool-off time, counted from the latest
# attempt. `python manage.py axes_reset_username NAME` (or axes_reset_ip, or
# axes_reset for everything) unlocks at once. A lock per username lets anyone
# lock a staff account for a while, which is the price of stopping a password
# guesser who changes addresses; docs/operations.md says how to unlock.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env_int("DJANGO_LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("DJANGO_LOGIN_LOCKOUT_MINUTES", 15))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_RESET_ON_SUCCESS = True
AXES_CLIENT_IP_CALLABLE = "conversations.limits.client_address"
AXES_LOCKOUT_TEMPLATE = "admin/locked_out.html"

CSRF_TRUSTED_ORIGINS = [
    origin.strip() for origin in os.environ.get("DJANGO_CSRF_TRUSTED_ORIGINS", "").split(",") if origin.strip()
]

# --- The chat ---------------------------------------------------------------

OPENAI_API_KEY = os.environ.get("OPENAI_API_KEY", "")
OPENAI_BASE_URL = os.environ.get("OPENAI_BASE_URL", "") or None
OPENAI_MODEL = os.environ.get("OPENAI_MODEL", "gpt-4o-mini")

# The whole LLM call, retries included, must end within this many seconds.
CHAT_LLM_DEADLINE = env_float("CHAT_LLM_DEADLINE", 20.0)
CHAT_LLM_CONNECT_TIMEOUT = env_float("CHAT_LLM_CONNECT_TIMEOUT", 3.0)
CHAT_LLM_MAX_RETRIES = env_int("CHAT_LLM_MAX_RETRIES", 1)
CHAT_MAX_OUTPUT_TOKENS = env_int("CHAT_MAX_OUTPUT_TOKENS", 500)
# The longest reply stored, in characters, for an LLM that ignores max_tokens:
# past it the reply is cut, with a note saying so, and the upstream call closed.
CHAT_REPLY_MAX_CHARS = env_int("CHAT_REPLY_MAX_CHARS", 20000)
# What the model sees of a conversation: at most this many of the latest
# messages, and of those at most this many characters, so a long conversation
# costs no more per turn than a short one.
CHAT_HISTORY_MESSAGES = env_int("CHAT_HISTORY_MESSAGES", 20)
CHAT_HISTORY_CHARS = env_int("CHAT_HISTORY_CHARS", 16000)
CHAT_MESSAGE_MAX_CHARS = env_int("CHAT_MESSAGE_MAX_CHARS", 4000)
# The longest a conversation gets, in messages (positions): the customer's next message once
# it is reached starts a new conversation; the old one stays for staff (docs/session-flow.md).
CHAT_CONVERSATION_MAX_MESSAGES = env_int("CHAT_CONVERSATION_MAX_MESSAGES", 1000)
CHAT_KNOWLEDGE_FILE = Path(os.environ.get("CHAT_KNOWLEDGE_FILE", BASE_DIR / "knowledge" / "faq.md"))
CHAT_SHOP_NAME = os.environ.get("CHAT_SHOP_NAME", "our shop")
# How long the request answering a question holds it without renewing its
# lease (it renews while it works): a worker killed mid-turn blocks its
# conversation for at most this long (conversations/turns.py).
CHAT_TURN_LEASE_SECONDS = env_float("CHAT_TURN_LEASE_SECONDS", 5.0)
# /healthz answers 503 when the database has not answered within this long.
CHAT_HEALTH_TIMEOUT = env_float("CHAT_HEALTH_TIMEOUT", 2.0)
# Seconds between a served worker's checks of its dependencies, whose latest report /healthz
# answers at once (conversations/health.py); 0: each /healthz checks them itself.
CHAT_HEALTH_INTERVAL = env_float("CHAT_HEALTH_INTERVAL", 1.0)
# Seconds between words when the offline responder streams its answer.
CHAT_OFFLINE_WORD_DELAY = env_float("CHAT_OFFLINE_WORD_DELAY", 0.02)

# Chat turns one worker process serves at once (chatsite/admission.py): as many as keep its
# event loop's lag under CHAT_LOOP_LAG_TARGET seconds (0: no such bound), and never more than
# CHAT_MAX_TURNS_IN_FLIGHT (0: no cap). A turn past them waits for a place up to
# CHAT_TURN_QUEUE_SECONDS, then is refused with 503 "overloaded" and Retry-After.
CHAT_MAX_TURNS_IN_FLIGHT = env_int("CHAT_MAX_TURNS_IN_FLIGHT", 1000)
CHAT_LOOP_LAG_TARGET = env_float("CHAT_LOOP_LAG_TARGET", 0.02)
CHAT_TURN_QUEUE_SECONDS = env_float("CHAT_TURN_QUEUE_SECONDS", 10.0)
CHAT_OVERLOADED_RETRY_AFTER = env_int("CHAT_OVERLOADED_RETRY_AFTER", 5)

# Connections (chatsite/worker.py, chatsite/asgi.py; docs/deploy.md). All per
# worker process. A held request is a long poll (GET /api/updates) or a streamed
# turn: a page holds one poll and at times one stream, so an office of 25 open
# tabs behind one address fits under the per-address cap. Past a cap a held
# request is refused at once (429 too_many_connections, 503 overloaded) with
# Retry-After CHAT_OVERLOADED_RETRY_AFTER. 0 turns a cap off.
CHAT_MAX_HELD_PER_ADDRESS = env_int("CHAT_MAX_HELD_PER_ADDRESS", 50)
CHAT_MAX_HELD = env_int("CHAT_MAX_HELD", 1000)
# Open connections a worker keeps; a new one past it closes the one that has
# waited longest without its whole request (idle, or its request half sent).
CHAT_MAX_CONNECTIONS = env_int("CHAT_MAX_CONNECTIONS", 4000)
# Seconds a request's head may take from the connection's opening (or from its
# first byte, on a kept-alive connection), and its body from the end of the
# head: past them the connection is closed (408 request_timeout once a request
# has begun). Between requests gunicorn's --keep-alive applies.
CHAT_HEADER_TIMEOUT = env_float("CHAT_HEADER_TIMEOUT", 10.0)
CHAT_BODY_TIMEOUT = env_float("CHAT_BODY_TIMEOUT", 30.0)

# Request bodies larger than this are refused before they are parsed.
CHAT_MAX_BODY_BYTES = env_int("CHAT_MAX_BODY_BYTES", 64 * 1024)

# Abuse limits ("20/m", "10/h", "5/10s"; "0" turns one off), counted in Redis
# in fixed windows. Customers share addresses (an office, a mobile carrier's
# NAT, a developer trying the site), so the per-address limits are set to stop
# one machine flooding the site, not one person: the per-session limit and the
# daily token budgets below are what bound the cost. docs/operations.md, "Choosing the limits".
# A person cannot type 20 messages a minute into one conversation.
CHAT_RATE_LIMIT_SESSION = os.environ.get("CHAT_RATE_LIMIT_SESSION", "20/m")
# About 60 people chatting at once behind one address, a message each 30 s.
CHAT_RATE_LIMIT_IP = os.environ.get("CHAT_RATE_LIMIT_IP", "120/m")
# 180 new conversations an hour per address; a short window, so whoever meets
# it waits minutes, not the rest of the hour.
CHAT_RATE_LIMIT_NEW_SESSIONS = os.environ.get("CHAT_RATE_LIMIT_NEW_SESSIONS", "30/10m")
# Addresses (or networks) of the proxies whose X-Forwarded-For is believed.
CHAT_TRUSTED_PROXIES = [
    net.strip() for net in os.environ.get("CHAT_TRUSTED_PROXIES", "").split(",") if net.strip()
]
# LLM tokens a day (UTC); 0 turns a budget off.
CHAT_DAILY_TOKENS_PER_SESSION = env_int("CHAT_DAILY_TOKENS_PER_SESSION", 50_000)
CHAT_DAILY_TOKENS_SITE = env_int("CHAT_DAILY_TOKENS_SITE", 2_000_000)
# Per client address (an IPv6 /64 counts as one): a tenth of the site's day, so
# one address cannot leave everyone else without the LLM, yet about 400 turns
# for the customers who share an address (an office, a mobile carrier's NAT).
# Past it they still get answers: the offline responder's, marked.
CHAT_DAILY_TOKENS_PER_ADDRESS = env_int("CHAT_DAILY_TOKENS_PER_ADDRESS", 200_000)
# After this many failed LLM calls in a row (in one worker, each within a minute
# of the one before) the LLM counts as down and customers get the offline
# responder, marked, until a probe succeeds (conversations/limits.py). 0: never.
CHAT_LLM_DOWN_AFTER_FAILURES = env_int("CHAT_LLM_DOWN_AFTER_FAILURES", 5)

# A session idle longer than this is forgotten: its id is treated as unknown.
CHAT_SESSION_IDLE_DAYS = env_int("CHAT_SESSION_IDLE_DAYS", 30)
# The Redis entry session:{id} -> conversation id lives at most this long.
CHAT_SESSION_CACHE_SECONDS = env_int("CHAT_SESSION_CACHE_SECONDS", 24 * 3600)
# chat_purge deletes conversations idle longer than this (its --older-than
# default). Longer than the idle timeout, so support can still read a
# conversation for a while after the customer can no longer continue it.
CHAT_RETENTION_DAYS = env_int("CHAT_RETENTION_DAYS", 90)

# --- Continue on another device (conversations/devices.py, docs/session-flow.md) ---

# Minutes a "Continue on another device" link and its code can be redeemed (once).
CHAT_DEVICE_LINK_MINUTES = env_int("CHAT_DEVICE_LINK_MINUTES", 10)
# Days the link in the email of a staff reply (to a customer who left their address)
# can be redeemed, once: mail is read later than a screen.
CHAT_EMAIL_LINK_DAYS = env_int("CHAT_EMAIL_LINK_DAYS", 7)
# Browsers one conversation may have at once; joining another is refused.
CHAT_DEVICES_MAX = env_int("CHAT_DEVICES_MAX", 10)
# Wrong (or used, or expired) links and codes before joining is refused, per client
# address (an IPv6 /64 counts as one) and for the whole site; the lockout lasts until
# the window ends. The guessing odds they give: docs/session-flow.md.
CHAT_DEVICE_JOIN_FAILURES_IP = os.environ.get("CHAT_DEVICE_JOIN_FAILURES_IP", "10/h")
CHAT_DEVICE_JOIN_FAILURES_SITE = os.environ.get("CHAT_DEVICE_JOIN_FAILURES_SITE", "1000/h")

# --- Talking to a person (conversations/handoff.py, updates.py) -------------

# Seconds GET /api/updates waits for something new before it answers empty.
CHAT_UPDATES_WAIT = env_float("CHAT_UPDATES_WAIT", 25.0)
# Seconds between two looks of a worker's watcher at the conversations waited on.
CHAT_UPDATES_TICK = env_float("CHAT_UPDATES_TICK", 0.5)
# Who is emailed when a customer asks for a person (comma-separated); unset: every
# active user who may answer conversations and has an email address.
CHAT_HANDOFF_EMAILS = [
    address.strip() for address in os.environ.get("CHAT_HANDOFF_EMAILS", "").split(",") if address.strip()
]
# Handoff emails per client address and for the whole site, per clock hour (0: no cap).
# Past either, the handoff still waits in the queue and goes into the digest instead:
# one email per CHAT_HANDOFF_DIGEST_MINUTES listing what waited without an email.
CHAT_HANDOFF_EMAILS_PER_ADDRESS = env_int("CHAT_HANDOFF_EMAILS_PER_ADDRESS", 3)
CHAT_HANDOFF_EMAILS_PER_HOUR = env_int("CHAT_HANDOFF_EMAILS_PER_HOUR", 30)
CHAT_HANDOFF_DIGEST_MINUTES = env_float("CHAT_HANDOFF_DIGEST_MINUTES", 15.0)
# The site's address as staff reach it, e.g. https://chat.example.com: emails link to the
# admin with it. Empty: links are paths only (/admin/...).
CHAT_SITE_URL = os.environ.get("CHAT_SITE_URL", "").rstrip("/")
# The honest handoff (conversations/handoff.py, "What the customer is told"): the time zone the
# knowledge file's opening hours are in, and how long after a staff member's last admin page
# "someone is here" holds, inside the hours or not.
CHAT_SHOP_TIMEZONE = os.environ.get("CHAT_SHOP_TIMEZONE", "Europe/Berlin")
try:
    zoneinfo.ZoneInfo(CHAT_SHOP_TIMEZONE)
except (zoneinfo.ZoneInfoNotFoundError, ValueError):
    raise ImproperlyConfigured(
        f"CHAT_SHOP_TIMEZONE={CHAT_SHOP_TIMEZONE!r} is not a time zone: use a name such as Europe/Berlin."
    ) from None
CHAT_STAFF_PRESENT_MINUTES = env_float("CHAT_STAFF_PRESENT_MINUTES", 5.0)
# Django's mail settings; the console backend prints the emails to the log.
EMAIL_BACKEND = os.environ.get("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
EMAIL_HOST = os.environ.get("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_TIMEOUT = env_float("EMAIL_TIMEOUT", 10.0)
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "chat@localhost")
# The folder of EMAIL_BACKEND=django.core.mail.backends.filebased.EmailBackend (one file a
# connection): a way to read what the site sends without a mail server.
EMAIL_FILE_PATH = os.environ.get("EMAIL_FILE_PATH") or None

# --- Health and metrics (docs/health.md, docs/metrics.md) -------------------------

# The bearer token Prometheus sends to GET /metrics; unset, /metrics answers 404. Each
# worker's counts go to files in PROMETHEUS_MULTIPROC_DIR (prometheus-client's own
# variable), which gunicorn.conf.py makes for the served site unless it is set.
CHAT_METRICS_TOKEN = os.environ.get("CHAT_METRICS_TOKEN", "")

# --- Error reports ------------------------------------------------------------

# Off unless SENTRY_DSN is set. chatsite/sentry.py scrubs every session id
# (anything shaped like a UUID) out of each event and breadcrumb, and sends no
# request bodies or personal data.
SENTRY_DSN = os.environ.get("SENTRY_DSN", "")
if SENTRY_DSN:
    from chatsite import sentry

    sentry.init(SENTRY_DSN, environment=os.environ.get("SENTRY_ENVIRONMENT", "production"))

# --- The chat on a shop's own pages (static/widget.js, docs/embed.md) ---------

# The shop origins (scheme://host[:port], comma-separated) whose pages may show
# the chat: /embed is framed only by them (CSP frame-ancestors) and answers
# only their postMessages. Empty: no page may frame it. "*" lets any site frame
# it (check --deploy warns). A malformed entry stops the site from starting:
# it would otherwise fail silently in the browser.
def embed_origins(value: str) -> list[str]:
    import re

    origins = []
    for entry in (part.strip().rstrip("/") for part in value.split(",")):
        if not entry:
            continue
        if entry != "*" and not re.fullmatch(r"https?://([a-z0-9-]+(\.[a-z0-9-]+)*|\[[0-9a-f:.]+\])(:[0-9]{1,5})?",
                                              entry.lower()):
            raise ImproperlyConfigured(
                f"CHAT_EMBED_ORIGINS: {entry!r} is not an origin like https://shop.example or http://127.0.0.1:8080."
            )
        origins.append(entry.lower())
    return origins


CHAT_EMBED_ORIGINS = embed_origins(os.environ.get("CHAT_EMBED_ORIGINS", ""))
