"""Fixtures shared by the tests.

Tests that need PostgreSQL, Redis or Chromium skip when those are not there,
unless CHAT_TESTS_REQUIRE_SERVICES=1 (as in CI), where a missing service fails
the test instead, so that a green run cannot hide a skipped one.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from asgiref.sync import async_to_sync
from django.db import connection
from django.db.backends.signals import connection_created

from conversations import cache_guard, limits

from .fake_llm import FakeLLM

ROOT = Path(__file__).resolve().parents[2]
REQUIRE_SERVICES = os.environ.get("CHAT_TESTS_REQUIRE_SERVICES") == "1"


def need(available: bool, what: str) -> None:
    if available:
        return
    if REQUIRE_SERVICES:
        pytest.fail(f"{what} is required here (CHAT_TESTS_REQUIRE_SERVICES=1) but is not available")
    pytest.skip(f"needs {what}")


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix):
    """A test database of this run's own, so that two runs on one machine do not collide."""
    from pytest_django.fixtures import _set_suffix_to_test_databases

    _set_suffix_to_test_databases(suffix=f"run{os.getpid()}")


@pytest.fixture(autouse=True)
def _fresh_state(settings):
    settings.CHAT_OFFLINE_WORD_DELAY = 0
    settings.SECURE_SSL_REDIRECT = False  # the test client speaks plain HTTP
    # All test traffic comes from one address: limits and budgets are off
    # unless a test turns them on (test_limits.py).
    settings.CHAT_RATE_LIMIT_SESSION = settings.CHAT_RATE_LIMIT_IP = "0"
    settings.CHAT_RATE_LIMIT_NEW_SESSIONS = "0"
    settings.CHAT_DAILY_TOKENS_PER_SESSION = settings.CHAT_DAILY_TOKENS_SITE = 0
    # (security branch) the per-address budget and "the LLM is down" are off too, unless a test turns them on.
    settings.CHAT_DAILY_TOKENS_PER_ADDRESS = settings.CHAT_LLM_DOWN_AFTER_FAILURES = 0
    limits.reset_local_counts()
    cache_guard.reset()
    yield
    cache_guard.reset()


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


@pytest.fixture(scope="session")
def fake_llm_server():
    with FakeLLM() as fake:
        yield fake


@pytest.fixture
def llm(fake_llm_server, settings):
    """The site's LLM settings pointed at the fake OpenAI-compatible server, reset for this test."""
    fake_llm_server.reset()
    settings.OPENAI_API_KEY = "test-key"
    settings.OPENAI_BASE_URL = fake_llm_server.url
    settings.OPENAI_MODEL = "fake-model"
    settings.CHAT_LLM_DEADLINE = 3.0
    settings.CHAT_LLM_MAX_RETRIES = 0
    return fake_llm_server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """A redis-server of the test's own, which the test may stop and start again."""

    def __init__(self, tmp_path: Path):
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.dir = tmp_path
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.process:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


@pytest.fixture
def own_redis(settings, tmp_path):
    need(shutil.which("redis-server") is not None, "redis-server")
    server = RedisServer(tmp_path)
    server.start()
    settings.CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": server.url,
            "KEY_PREFIX": "chatsite",
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.25, "SOCKET_TIMEOUT": 0.25},
        }
    }
    yield server
    server.stop()


def read_stream(response) -> str:
    """The whole body of a streaming response from Django's test client."""

    async def collect():
        return b"".join([chunk async for chunk in response.streaming_content])

    return async_to_sync(collect)().decode()


def post_chat(client, headers=None, **body):
    """POST /api/chat with a JSON body; returns (status, parsed JSON)."""
    response = client.post(
        "/api/chat", data=json.dumps(body), content_type="application/json", headers=headers or {}
    )
    return response.status_code, response.json()


class Site:
    """The site as deployed: the Procfile's gunicorn command, in a subprocess, on the test database.

    Its output (JSON log lines, gunicorn's own) goes to a file: `log()` reads it.
    """

    def __init__(self, env: dict[str, str], log_dir: Path | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = env
        self.log_path = Path(tempfile.mkstemp(prefix="site-", suffix=".log", dir=log_dir)[1])
        self.process: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        web = next(line for line in (ROOT / "Procfile").read_text().splitlines() if line.startswith("web:"))
        with self.log_path.open("a") as log:
            self.process = subprocess.Popen(
                ["bash", "-c", "exec " + web.removeprefix("web:").strip()],
                cwd=ROOT,
                env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
                     "PORT": str(self.port), "WEB_CONCURRENCY": "1", **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the site did not start:\n{self.log()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("the site did not start within 30 s")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.process = None


def database_url() -> str:
    db = connection.settings_dict
    return f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def site_env(fake_llm_server: FakeLLM, **overrides: str) -> dict[str, str]:
    """The environment of a deployed site on the test database and the fake LLM."""
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
        "CHAT_DAILY_TOKENS_PER_SESSION": "0",
        "CHAT_DAILY_TOKENS_PER_ADDRESS": "0",  # (security branch)
        "CHAT_LLM_DOWN_AFTER_FAILURES": "0",  # (security branch)
        "CHAT_DAILY_TOKENS_SITE": "0",
        **overrides,
    }


@pytest.fixture(scope="session")
def site(django_db_setup, django_db_blocker, fake_llm_server):
    """The deployed site against the test database, Redis (if REDIS_URL) and the fake LLM.

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
    """`site`, with a clean database and the fake LLM reset for this test."""
    return site


class QueryLog:
    """SQL run by any thread (the views run theirs in worker threads)."""

    def __init__(self):
        self.statements: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, execute, sql, params, many, context):
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


@pytest.fixture
def queries():
    log = QueryLog()
    connection_created.connect(log.install)
    yield log
    connection_created.disconnect(log.install)
