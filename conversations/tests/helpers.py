"""What tests import besides the site client (client.py): the rules for services, a deployed site's
environment, a log of SQL.

The fixtures that use these are in conftest.py; the processes (the deployed
site, a redis-server of a test's own) and the stand-in LLM are in devtools/,
shared with bench/.
"""

import os
import threading
import time

import pytest
from django.db import connection

from devtools.fake_llm import FakeLLM

REQUIRE_SERVICES = os.environ.get("CHAT_TESTS_REQUIRE_SERVICES") == "1"


def need(available: bool, what: str) -> None:
    """Skip the test when `what` is missing; fail it instead under CHAT_TESTS_REQUIRE_SERVICES=1 (CI)."""
    if available:
        return
    if REQUIRE_SERVICES:
        pytest.fail(f"{what} is required here (CHAT_TESTS_REQUIRE_SERVICES=1) but is not available")
    pytest.skip(f"needs {what}")


def database_url() -> str:
    """The test database's URL, for a site in another process."""
    db = connection.settings_dict
    return f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def site_env(fake_llm_server: FakeLLM, **overrides: str) -> dict[str, str]:
    """The environment of a deployed site (devtools.processes.Site) on the test database and the fake LLM."""
    from django.conf import settings

    return {
        "DJANGO_SECRET_KEY": "test-only-secret-key",
        "DJANGO_DEBUG": "0",
        "DJANGO_SECURE_SSL_REDIRECT": "0",
        "DATABASE_URL": database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "OPENAI_API_KEY": "test-key",
        "OPENAI_BASE_URL": fake_llm_server.url,
        "OPENAI_MODEL": "fake-model",
        "CHAT_LLM_DEADLINE": "5",
        "CHAT_LLM_MAX_RETRIES": "0",
        # All test traffic comes from one address; tests of the limits set their own.
        "CHAT_RATE_LIMIT_SESSION": "0",
        "CHAT_RATE_LIMIT_IP": "0",
        "CHAT_RATE_LIMIT_NEW_SESSIONS": "0",
        "CHAT_DEVICE_JOIN_FAILURES_IP": "0",
        "CHAT_DEVICE_JOIN_FAILURES_SITE": "0",
        "CHAT_DAILY_TOKENS_PER_SESSION": "0",
        "CHAT_DAILY_TOKENS_PER_ADDRESS": "0",
        "CHAT_LLM_DOWN_AFTER_FAILURES": "0",
        "CHAT_DAILY_TOKENS_SITE": "0",
        "CHAT_HANDOFF_EMAILS_PER_ADDRESS": "0",
        "CHAT_HANDOFF_EMAILS_PER_HOUR": "0",
        **overrides,
    }


class QueryLog:
    """SQL run by any thread (the views run theirs in worker threads).

    The BEGIN that Django's SQLite backend runs as a statement (its transactions
    are BEGIN IMMEDIATE) is left out: psycopg opens PostgreSQL's transactions
    without one, and a count of queries must be the same on both.
    """

    def __init__(self) -> None:
        self.statements: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, execute, sql, params, many, context):
        if not sql.startswith("BEGIN"):
            with self._lock:
                self.statements.append(sql)
        return execute(sql, params, many, context)

    def install(self, sender, connection, **kwargs):
        if self not in connection.execute_wrappers:
            connection.execute_wrappers.append(self)

    def clear(self) -> None:
        with self._lock:
            self.statements.clear()

    def __len__(self) -> int:
        return len(self.statements)


def wait_for(predicate, timeout: float = 10.0, every: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError("condition not met in time")
