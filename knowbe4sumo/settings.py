"""Settings for knowbe4sumo, read from the environment through django-environ.

Every variable is documented in `.env.example`. The defaults serve one machine:
SQLite under `data/` and django-q2's ORM broker. `DATABASE_URL` and `REDIS_URL`
move the same code onto PostgreSQL and Redis.
"""

from __future__ import annotations

import secrets
from datetime import timedelta
from pathlib import Path

import environ
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured

from collectors.baseurls import check_extra

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
if (BASE_DIR / ".env").is_file():
    # Values already in the process environment win over the file.
    env.read_env(BASE_DIR / ".env")

DEBUG = env.bool("DEBUG", default=False)
DATA_DIR = Path(env.str("DATA_DIR", default=str(BASE_DIR / "data")))


def _local_secret(name: str, variable: str, make: callable) -> str:
    """Read a secret from data/<name>, creating it on a first local run.

    Only used when DEBUG is on: a production deployment must pass its secrets in
    the environment, so that they are not tied to one machine's disk.
    """
    if not DEBUG:
        raise ImproperlyConfigured(f"{variable} must be set when DEBUG is off.")
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    path = DATA_DIR / name
    if not path.exists():
        path.write_text(make())
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = env.str("SECRET_KEY", default="") or _local_secret(
    "secret_key", "SECRET_KEY", lambda: secrets.token_urlsafe(50)
)
# Comma-separated Fernet keys: the first encrypts, all of them decrypt (rotation).
FIELD_ENCRYPTION_KEYS = env.list("FIELD_ENCRYPTION_KEYS", default=[]) or [
    _local_secret(
        "field_encryption_key",
        "FIELD_ENCRYPTION_KEYS",
        lambda: Fernet.generate_key().decode(),
    )
]

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

# Extra Base URL choices, "Label|https://host[:port]" comma-separated.
# Each must be https://, except a loopback http:// address with DEBUG on (the
# sandbox): refused here, at startup, naming the entry.
KNOWBE4_EXTRA_BASE_URLS = check_extra(
    env.list("KNOWBE4_EXTRA_BASE_URLS", default=[]), debug=DEBUG
)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.humanize",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django_q",
    "axes",
    "collectors",
    "alerts",
    "outputs",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # CSP and Permissions-Policy; before WhiteNoise so static files get them too.
    "collectors.security.SecurityHeadersMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # A request that finds SQLite busy past its timeout: 503, not a 500.
    "collectors.busy.DatabaseBusyMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    "collectors.timezones.TimeZoneMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Admin list filters that overflow answer 400, not 500.
    "collectors.badinput.AdminFilterOverflowMiddleware",
    # Last, as django-axes requires: turns a locked-out sign-in into its page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "knowbe4sumo.urls"

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
                "collectors.navigation.menu",
                "collectors.timezones.context",
            ],
        },
    },
]

WSGI_APPLICATION = "knowbe4sumo.wsgi.application"

DATABASES = {
    "default": env.db_url(
        "DATABASE_URL", default=f"sqlite:///{DATA_DIR / 'db.sqlite3'}"
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    # WAL lets readers and the writer work at once; IMMEDIATE takes the write lock
    # at BEGIN so two writers queue on the busy timeout instead of deadlocking.
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / "test-db.sqlite3")}
else:
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env.str("REDIS_URL", default="")

# Collection engine (collectors/lifecycle.py, engine/, retry.py, ratelimit.py).
# Every default of the engine lives here, nowhere else.
# A closed UTC day is read once the next day is this old, so late writes settle.
COLLECTION_SETTLE_DELAY = timedelta(
    minutes=env.int("COLLECTION_SETTLE_DELAY_MINUTES", default=10)
)
# A run's lease: shorter than Q_CLUSTER["retry"], renewed on every stored page.
COLLECTION_LEASE = timedelta(seconds=env.int("COLLECTION_LEASE_SECONDS", default=240))
# A run stops after this long or this many pages (well under the task timeout).
COLLECTION_RUN_BUDGET_SECONDS = env.int("COLLECTION_RUN_BUDGET_SECONDS", default=120)
COLLECTION_MAX_PAGES_PER_RUN = env.int("COLLECTION_MAX_PAGES_PER_RUN", default=2000)
# Pages that arrive while the previous one is being stored are committed
# together (`engine.store.Batch`), at most this many or for this long (s); a
# page the run has to wait for (KnowBe4's answer, the rate limit) first
# commits those before it, so no transaction waits on KnowBe4. 50: the random
# event ids dirty about one leaf of the unique index per row, and a commit
# writes each dirtied leaf once, so larger batches write less (bench/RESULTS-
# engine.md, seventh session).
COLLECTION_BATCH_PAGES = env.int("COLLECTION_BATCH_PAGES", default=50)
COLLECTION_BATCH_SECONDS = 0.25
# SQLite, during a run (`engine.sqlite`): a thread checkpoints the WAL this
# often (s), the run's own connection only once the WAL holds this many 4 kB
# pages, so the checkpoints' fsyncs stay out of its commits; and its page
# cache holds this many kB of the indexes (SQLite's default: 2,000).
COLLECTION_SQLITE_CHECKPOINT_SECONDS = 0.25
COLLECTION_SQLITE_WAL_PAGES = 16384
COLLECTION_SQLITE_CACHE_KB = 32768
# A queued collection task not picked up within this time is queued again.
COLLECTION_DISPATCH_GRACE = timedelta(minutes=5)
# How late the dispatcher may start a due source: its schedule runs every
# minute and django-q2's scheduler looks about every 30 s (seen: up to 44 s).
# Today's polls fall due this much before their interval has passed, so that
# one started that late still reads today within one interval of the last.
COLLECTION_DISPATCH_LAG = timedelta(seconds=90)
# A 429 Too Many Requests whose Retry-After is this short (s) is waited out
# within the run instead of ending it.
COLLECTION_INLINE_RETRY_AFTER = 5.0
# The re-scan window is re-read this often (a source may override it; at
# least 15 minutes), not only when a day closes.
COLLECTION_RESCAN_INTERVAL = timedelta(
    minutes=env.int("COLLECTION_RESCAN_INTERVAL_MINUTES", default=6 * 60)
)
# Queue a dispatcher run right after a source is saved, restarted or deleted.
COLLECTION_DISPATCH_ON_SAVE = env.bool("COLLECTION_DISPATCH_ON_SAVE", default=True)
# The seed's "retry for up to 90 minutes, after which it quits".
COLLECTION_RETRY_WINDOW = timedelta(minutes=90)
# The 4-requests-per-second limiter per API key; off only for benchmarks.
KNOWBE4_RATE_LIMIT = env.bool("KNOWBE4_RATE_LIMIT", default=True)
# The account's daily request quota (10 x licensed seats), shown on the source
# page when known.
KNOWBE4_DAILY_QUOTA = env.int("KNOWBE4_DAILY_QUOTA", default=None)
# The whole of one KnowBe4 request, body included: past it, a timeout.
KNOWBE4_REQUEST_DEADLINE_SECONDS = env.float(
    "KNOWBE4_REQUEST_DEADLINE_SECONDS", default=60.0
)

# Retention (the daily task): resolved health events and state transitions
# older than this many days go; messages only when MESSAGE_RETENTION_DAYS is set.
HEALTH_RETENTION_DAYS = env.int("HEALTH_RETENTION_DAYS", default=90)
MESSAGE_RETENTION_DAYS = env.int("MESSAGE_RETENTION_DAYS", default=None)

# Outbound requests (alerts/egress.py): allow http:// and loopback/private
# destinations. Off in production; on for a lab, the demo and local receivers.
EGRESS_ALLOW_PRIVATE = env.bool("EGRESS_ALLOW_PRIVATE", default=False)

# Notifications (alerts app). Links in notifications start with SITE_URL.
SITE_URL = env.str("SITE_URL", default="http://127.0.0.1:8000").rstrip("/")
# Email: EMAIL_URL as smtp://user:password@host:587/?tls=True (or smtp+ssl://);
# the default prints mails to the worker's console (what `make run` shows).
EMAIL_CONFIG = env.email_url("EMAIL_URL", default="consolemail://")
vars().update(EMAIL_CONFIG)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="knowbe4sumo@localhost")
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT", default=10)

# Outputs (outputs/delivery.py): a run's lease and budget, the request timeout,
# the wait before passing a hole in the message ids, and the in-run retry delay
# (doubled on each of the attempts after it).
OUTPUT_LEASE = timedelta(seconds=env.int("OUTPUT_LEASE_SECONDS", default=240))
OUTPUT_RUN_BUDGET_SECONDS = env.int("OUTPUT_RUN_BUDGET_SECONDS", default=120)
OUTPUT_REQUEST_TIMEOUT = env.float("OUTPUT_REQUEST_TIMEOUT", default=30.0)
OUTPUT_HOLE_WAIT = timedelta(seconds=env.int("OUTPUT_HOLE_WAIT_SECONDS", default=60))
OUTPUT_INLINE_RETRY_SECONDS = env.float("OUTPUT_INLINE_RETRY_SECONDS", default=1.0)

# Collection runs take a lease shorter than django-q2's `retry`, and the KnowBe4
# client's timeouts are well under the task `timeout`.
Q_CLUSTER = {
    "name": "knowbe4sumo",
    "workers": env.int("Q_WORKERS", default=2),
    "timeout": 300,
    "retry": 360,
    "max_attempts": 2,
    "catch_up": False,
    "ack_failures": True,
    "save_limit": 100,
    "label": "Tasks",
    "poll": 1,
}
if REDIS_URL:
    Q_CLUSTER["redis"] = REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"

AUTH_PASSWORD_VALIDATORS = [
    {
        "NAME": "django.contrib.auth.password_validation."
        "UserAttributeSimilarityValidator"
    },
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# Sign-in throttling (django-axes): after SIGNIN_FAILURE_LIMIT failed sign-ins
# for one username from one address, that pair is refused for
# SIGNIN_LOCKOUT_MINUTES, on /login/ and /admin/login/ alike; a successful
# sign-in resets the count. A superuser unlocks in admin (Axes > Access attempts).
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env.int("SIGNIN_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("SIGNIN_LOCKOUT_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
# The lock lasts SIGNIN_LOCKOUT_MINUTES from the lockout, as its page says; a
# refused attempt during it does not start the clock again.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
AXES_LOCKOUT_CALLABLE = "collectors.signin.locked_out"
AXES_SENSITIVE_PARAMETERS = ["password", "password1", "password2", "api_key"]
# The client address is REMOTE_ADDR unless the operator names the header that
# their reverse proxy sets (e.g. X-Forwarded-For); see collectors/signin.py.
AXES_CLIENT_IP_CALLABLE = "collectors.signin.client_ip"
SIGNIN_PROXY_IP_HEADER = env.str("SIGNIN_PROXY_IP_HEADER", default="")
SIGNIN_PROXY_COUNT = env.int("SIGNIN_PROXY_COUNT", default=1)

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "collection"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}

# Security headers. `check --deploy` is clean with DEBUG off.
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
# Every page, script and style comes from this origin (no inline code, no CDN);
# pages show text from KnowBe4 events, so nothing else may run or load.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'self'"
)
# Browser features the app never uses, turned off for it and anything it embeds.
PERMISSIONS_POLICY = ", ".join(
    f"{feature}=()"
    for feature in (
        "accelerometer",
        "autoplay",
        "camera",
        "display-capture",
        "encrypted-media",
        "fullscreen",
        "geolocation",
        "gyroscope",
        "magnetometer",
        "microphone",
        "midi",
        "payment",
        "picture-in-picture",
        "publickey-credentials-get",
        "screen-wake-lock",
        "serial",
        "usb",
        "xr-spatial-tracking",
    )
)
# Trust X-Forwarded-Proto only when the operator says a proxy sets it: otherwise
# any client could claim https.
if env.bool("TRUST_X_FORWARDED_PROTO", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SILENCED_SYSTEM_CHECKS: list[str] = []
if not DEBUG:
    SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=True)
    CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=True)
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
    # Opt-in: they bind every subdomain, and a preload list entry is slow to
    # undo. Left off on purpose, their deploy-check warnings are silenced.
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool(
        "SECURE_HSTS_INCLUDE_SUBDOMAINS", default=False
    )
    SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
    if not SECURE_HSTS_INCLUDE_SUBDOMAINS:
        SILENCED_SYSTEM_CHECKS.append("security.W005")
    if not SECURE_HSTS_PRELOAD:
        SILENCED_SYSTEM_CHECKS.append("security.W021")

# Masks the API key (and other secrets) in error reports.
DEFAULT_EXCEPTION_REPORTER_FILTER = "collectors.security.SecretsReporterFilter"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}
    },
    "filters": {"quiet_requests": {"()": "knowbe4sumo.logfilters.QuietRequests"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain"},
        # runserver's request lines, without static files and status refreshes.
        "requests": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "filters": ["quiet_requests"],
        },
    },
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {
        "urllib3": {"level": "WARNING"},
        # django-axes logs each failed sign-in and each lockout as a WARNING
        # (user name and address, never the password); its start-up line is noise.
        "axes": {"level": "WARNING"},
        # django-q2 logs four lines per task (the dispatcher runs every minute).
        "django-q": {"level": env.str("Q_LOG_LEVEL", default="WARNING")},
        "django.server": {
            "handlers": ["requests"],
            "level": env.str("LOG_LEVEL", default="INFO"),
            "propagate": False,
        },
    },
}
