"""Refuse to run wrong: what manage.py and the web process check before they start.

With DEBUG off the site serves customers, so its settings must be its own: a
secret key nobody else knows, the host names it answers to, its PostgreSQL
database. A setting that is missing or left at a placeholder stops manage.py
(every command) and the web process with one line that says what to set,
rather than a site that runs on a public key, answers to no host, or writes
to the development SQLite file.

Not checked: DEBUG on (`make run`, a manage.py command in a shell with no
production setting) and a test run (pytest sets PYTEST_VERSION, and the sites
and commands a test starts inherit it; the tests of these rules take it away).
The settings themselves load without these checks, so that tools that import
them (mypy's Django plugin, pytest-django) need no production values.
"""

import os
import sys

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

# Django's own rule for a key fit for production (`check --deploy`, security.W009).
SECRET_KEY_MIN_LENGTH = 50
SECRET_KEY_MIN_UNIQUE_CHARACTERS = 5
# Keys that were ever written down in this repository as examples or defaults.
PLACEHOLDER_SECRET_KEYS = {
    "compose-on-localhost-only-set-your-own",
    "django-insecure-local-development-only",
    "collectstatic-only",
    "lint-only",
    "test-only-secret-key",
}
NEW_KEY = "python3 -c 'import secrets; print(secrets.token_urlsafe(50))'"


def settings_problem() -> str:
    """One line saying what to set, or "" when the settings are fit to start with."""
    try:
        debug = settings.DEBUG  # loads the settings module
    except ImproperlyConfigured as error:
        return str(error)
    if debug or "PYTEST_VERSION" in os.environ:
        return ""
    key = os.environ.get("DJANGO_SECRET_KEY", "")
    if not key:
        return (f"Set DJANGO_SECRET_KEY to a long random value, e.g. from {NEW_KEY} "
                "(or DJANGO_DEBUG=1 for local development).")
    if key in PLACEHOLDER_SECRET_KEYS or key.startswith("django-insecure-"):
        return f"DJANGO_SECRET_KEY is a placeholder that anyone can read: set your own, e.g. from {NEW_KEY}."
    if len(key) < SECRET_KEY_MIN_LENGTH or len(set(key)) < SECRET_KEY_MIN_UNIQUE_CHARACTERS:
        return (f"DJANGO_SECRET_KEY is too short or too plain ({len(key)} characters): set a random value of at least "
                f"{SECRET_KEY_MIN_LENGTH} characters, e.g. from {NEW_KEY}.")
    if not settings.ALLOWED_HOSTS:
        return ("DJANGO_ALLOWED_HOSTS is empty: set the host names the site answers to, "
                "e.g. DJANGO_ALLOWED_HOSTS=chat.example.com.")
    if not os.environ.get("DATABASE_URL"):
        return ("Set DATABASE_URL to the site's database, e.g. postgres://user:password@127.0.0.1:5432/chatsite "
                "(with DEBUG off there is no default: the SQLite file is for development).")
    return ""


def refuse_to_run_wrong(status: int = 1) -> None:
    """Print the settings' problem on one line and exit with `status`; return if there is none."""
    problem = settings_problem()
    if problem:
        print(f"chatsite: {problem}", file=sys.stderr, flush=True)
        raise SystemExit(status)
