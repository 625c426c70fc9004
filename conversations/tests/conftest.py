"""Fixtures shared by the tests (what tests import is in helpers.py and devtools/).

Tests that need PostgreSQL, Redis or Chromium skip when those are not there,
unless CHAT_TESTS_REQUIRE_SERVICES=1 (as in CI), where a missing service fails
the test instead, so that a green run cannot hide a skipped one.
"""

import os
import shutil
import threading

import pytest
from django.db import connection
from django.db.backends.signals import connection_created

from conversations import limits, shared_state
from devtools.fake_llm import FakeLLM
from devtools.processes import RedisServer, Site

from .browser import Browsing, launch, need_chromium
from .helpers import QueryLog, need, site_env


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix):
    """A test database of this run's own, so that two runs on one machine do not collide."""
    from pytest_django.fixtures import _set_suffix_to_test_databases

    _set_suffix_to_test_databases(suffix=f"run{os.getpid()}")


@pytest.fixture(scope="session", autouse=True)
def static_files():
    """collectstatic, as every deploy runs it: the page links the hashed names of its manifest."""
    from django.core.management import call_command

    call_command("collectstatic", interactive=False, verbosity=0)


@pytest.fixture(autouse=True)
def _fresh_state(settings):
    settings.CHAT_OFFLINE_WORD_DELAY = 0
    settings.SECURE_SSL_REDIRECT = False  # the test client speaks plain HTTP
    # All test traffic comes from one address: limits and budgets are off
    # unless a test turns them on (test_limits.py).
    settings.CHAT_RATE_LIMIT_SESSION = settings.CHAT_RATE_LIMIT_IP = "0"
    settings.CHAT_RATE_LIMIT_NEW_SESSIONS = "0"
    settings.CHAT_DAILY_TOKENS_PER_SESSION = settings.CHAT_DAILY_TOKENS_SITE = 0
    # The per-address budget and "the LLM is down" too.
    settings.CHAT_DAILY_TOKENS_PER_ADDRESS = settings.CHAT_LLM_DOWN_AFTER_FAILURES = 0
    # And the caps on handoff emails (test_handoff_email.py).
    settings.CHAT_HANDOFF_EMAILS_PER_ADDRESS = settings.CHAT_HANDOFF_EMAILS_PER_HOUR = 0
    limits.reset_local_counts()
    shared_state.reset()
    yield
    shared_state.reset()


# Connections that threads a test started took from Django's pool (connection, thread).
_thread_connections: list = []


def _note_thread_connection(sender, connection, **kwargs):
    if threading.current_thread() is not threading.main_thread() and getattr(connection, "pool", None):
        _thread_connections.append((connection, threading.current_thread()))


connection_created.connect(_note_thread_connection)


@pytest.fixture(autouse=True)
def _pool_connections_of_ended_threads_returned():
    """A thread that used the ORM and ended without closing its connection (Django closes a request's
    connection at its end, but not under the test client, and not in a test's own threads) keeps it
    checked out of the pool for good: five such and every later request waits out the pool's timeout
    and answers 503. After each test, such connections go back to the pool. The site's own threads
    close theirs (db.in_db_thread, the mailer); this is for the test process's."""
    yield
    still_running = []
    for wrapper, thread in _thread_connections:
        if thread.is_alive():
            still_running.append((wrapper, thread))
        elif wrapper.connection is not None:
            wrapper.inc_thread_sharing()  # closed from this thread, its owner being gone
            try:
                wrapper.close()
            finally:
                wrapper.dec_thread_sharing()
    _thread_connections[:] = still_running


@pytest.fixture
def rebuilt_api_handler(_fresh_state, monkeypatch):
    """The API's handler built again under the test's settings, for client.asgi_request().

    Django's handler reads some settings once, when its middleware is built
    (SECURE_SSL_REDIRECT, for one). (Only the API's: client.asgi_request() is for
    the API and /healthz, not the page's handler.)
    """
    from chatsite import asgi

    monkeypatch.setattr(asgi, "api", asgi.ApiHandler())


@pytest.fixture
def postgres(transactional_db):
    need(connection.vendor == "postgresql", "PostgreSQL (set DATABASE_URL)")


@pytest.fixture
def shared_redis(settings):
    """The machine's Redis (REDIS_URL) as the cache, emptied of this site's keys."""
    need(bool(settings.REDIS_URL), "Redis (set REDIS_URL)")
    from django.core.cache import cache

    settings.CACHES = {
        "default": {**settings.CACHES["default"], "KEY_PREFIX": f"chatsite-test-{os.getpid()}"}
    }
    cache.delete_pattern("*")
    yield cache
    cache.delete_pattern("*")


@pytest.fixture
def own_redis(settings, tmp_path):
    """A redis-server of the test's own as the cache; the test may stop and start it."""
    need(shutil.which("redis-server") is not None, "redis-server")
    server = RedisServer(tmp_path)
    server.start()
    settings.CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": server.url,
            "KEY_PREFIX": "chatsite",
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.25, "SOCKET_TIMEOUT": 0.25,
                        "SERIALIZER": "conversations.shared_state.JSONSerializer"},
        }
    }
    yield server
    server.stop()


@pytest.fixture(scope="session")
def fake_llm_server():
    with FakeLLM() as fake:
        yield fake


@pytest.fixture
def llm(fake_llm_server, settings):
    """The site's LLM settings pointed at the stand-in LLM, reset for this test."""
    fake_llm_server.reset()
    settings.OPENAI_API_KEY = "test-key"
    settings.OPENAI_BASE_URL = fake_llm_server.url
    settings.OPENAI_MODEL = "fake-model"
    settings.CHAT_LLM_DEADLINE = 3.0
    settings.CHAT_LLM_MAX_RETRIES = 0
    return fake_llm_server


@pytest.fixture(scope="session")
def site(django_db_setup, django_db_blocker, fake_llm_server, static_files):
    """The deployed site against the test database, Redis (if REDIS_URL) and the stand-in LLM.

    Tests that use it also need `postgres` (a transactional database), so that
    what they write is visible to the site's process and flushed afterwards.
    """
    with django_db_blocker.unblock():
        need(connection.vendor == "postgresql", "PostgreSQL (set DATABASE_URL)")
        env = site_env(fake_llm_server)
    server = Site(env)
    yield server
    server.stop()


@pytest.fixture
def live_site(site, postgres, llm):
    """`site`, with a clean database and the stand-in LLM reset for this test; its log() holds only
    what the site logs from this test's start."""
    site.mark()
    return site


@pytest.fixture
def queries():
    """Every SQL statement run while the test runs, by any thread (helpers.QueryLog)."""
    log = QueryLog()
    connection_created.connect(log.install)
    yield log
    connection_created.disconnect(log.install)


# --- the chat page in headless Chromium (browser.py) ------------------------------


# Module-scoped, not session-scoped: while Playwright's sync API is started,
# its event loop counts as running in this thread, which would make every later
# test that uses the ORM or async_to_sync fail. It stops when the module ends.
@pytest.fixture(scope="module")
def browser():
    need_chromium()
    from playwright.sync_api import sync_playwright

    with pytest.MonkeyPatch.context() as patch, sync_playwright() as playwright:
        # For the same reason, flushing the database after each test would be
        # refused as "async"; nothing here uses the ORM from a coroutine.
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "1")
        browser = launch(playwright)
        yield browser
        browser.close()


@pytest.fixture
def browsing(browser, live_site):
    """Browser contexts on the live site; errors the page threw fail the test."""
    browsing = Browsing(browser, live_site.url)
    yield browsing
    browsing.close()
    assert browsing.errors == []


@pytest.fixture
def page(browsing):
    """The chat page, opened in a new browser profile."""
    return browsing.page()
