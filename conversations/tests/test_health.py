"""GET /healthz: what a load balancer asks."""

import json
import logging
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest
from django.db import connection

from devtools.processes import Site, free_port

from .client import SiteClient, post_chat
from .helpers import site_env, wait_for


@pytest.mark.django_db(transaction=True)
def test_health_is_ok_with_the_database_and_the_local_cache(client, settings):
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "cache": "local", "llm": "offline"}


@pytest.mark.django_db
def test_health_is_not_redirected_to_https(client, settings):
    """A load balancer checks each instance over plain HTTP: /healthz answers, the rest redirects."""
    settings.SECURE_SSL_REDIRECT = True
    assert client.get("/healthz").status_code == 200
    redirect = client.get("/")
    assert redirect.status_code == 301 and redirect["Location"] == "https://testserver/"


def test_health_with_redis_up_then_down(live_site, fake_llm_server, own_redis):
    """Each worker's report (health.py) says so within CHAT_HEALTH_INTERVAL (1 s) of the change, and
    logs it once, not at every check."""
    site = Site(site_env(fake_llm_server, REDIS_URL=own_redis.url))
    try:
        api = SiteClient(site)
        assert api.health()[:2] == (200, {"status": "ok", "database": "ok", "cache": "ok", "llm": "unchecked"})
        own_redis.stop()
        stopped = time.monotonic()
        degraded = (200, {"status": "degraded", "database": "ok", "cache": "down", "llm": "unchecked"})
        wait_for(lambda: api.health()[:2] == degraded, timeout=5, every=0.1)
        assert time.monotonic() - stopped < 2.5
        time.sleep(2.5)  # two more checks in each worker
        assert all(api.health()[:2] == degraded for _ in range(4))  # every worker, whichever answers
        assert site.log().count('"health check: cache down"') <= 2  # once a worker
    finally:
        site.stop()


def test_a_probe_waits_for_no_dependency_once_the_worker_has_a_report(live_site, fake_llm_server):
    """A database that does not answer (a listener that never says a word): each worker's check in
    the background gives up after CHAT_HEALTH_TIMEOUT and reports it down, and a probe answers that
    report at once, where it waited CHAT_HEALTH_TIMEOUT itself: a load balancer's probe must not
    wait for what the worker's event loop waits for."""
    with socket.create_server(("127.0.0.1", 0), backlog=128) as silent:
        site = Site(site_env(
            fake_llm_server,
            DATABASE_URL=f"postgres://postgres@127.0.0.1:{silent.getsockname()[1]}/nothing",
            DATABASE_POOL_TIMEOUT="30", CHAT_HEALTH_TIMEOUT="1",
        ))
        try:
            api = SiteClient(site)
            assert api.health(timeout=10)[:1] == (503,)
            time.sleep(2.5)  # every worker's first check has given up
            for _ in range(6):
                started = time.monotonic()
                status, body, _ = api.health(timeout=10)
                assert (status, body["status"], body["database"]) == (503, "down", "down")
                assert time.monotonic() - started < 0.5
        finally:
            site.stop()


def test_health_with_the_database_down_is_503(live_site, fake_llm_server):
    site = Site(site_env(
        fake_llm_server,
        DATABASE_URL=f"postgres://postgres@127.0.0.1:{free_port()}/nothing",
        DATABASE_POOL_TIMEOUT="1",
    ))
    try:
        started = time.monotonic()
        status, body, _ = SiteClient(site).health()
        assert status == 503
        assert body["status"] == "down" and body["database"] == "down"
        assert time.monotonic() - started < 10
        # Liveness asks no dependency: a supervisor restarts no worker for the database's outage.
        assert SiteClient(site).request("GET", "/livez")[:2] == (200, {"status": "alive"})
    finally:
        site.stop()


def test_a_database_that_does_not_answer_still_leaves_the_cache_and_the_llm_reported(live_site, fake_llm_server):
    """The database unreachable and its pool waiting longer than the health check may: 503 when the
    check's time is up, and the cache's and the LLM's states are asked at the same time, not lost."""
    site = Site(site_env(
        fake_llm_server,
        DATABASE_URL=f"postgres://postgres@127.0.0.1:{free_port()}/nothing",
        DATABASE_POOL_TIMEOUT="30", CHAT_HEALTH_TIMEOUT="1",
    ))
    try:
        started = time.monotonic()
        status, body, _ = SiteClient(site).health()
        took = time.monotonic() - started
        assert (status, body["status"], body["database"]) == (503, "down", "down")
        assert body["cache"] in ("ok", "local") and body["llm"] != "unknown", body
        assert took < 10
    finally:
        site.stop()


def test_a_load_balancer_gets_200_over_plain_http_where_the_page_redirects(live_site, fake_llm_server):
    site = Site(site_env(fake_llm_server, DJANGO_SECURE_SSL_REDIRECT="1"))
    try:
        api = SiteClient(site)  # which follows no redirect
        assert api.health()[0] == 200
        status, _, headers = api.request("GET", "/")
        assert status == 301 and headers["Location"].startswith("https://")
    finally:
        site.stop()


def test_health_answers_at_once_after_every_database_connection_was_killed(live_site, fake_llm_server, llm):
    """A failover or restart kills every connection a worker holds. Django's pool would hand out
    its dead idle connections one by one, backing off between them (seconds, and a 503); the
    check goes through the turn store, whose pool tests all its idle connections at once."""
    site = Site(site_env(fake_llm_server, PGAPPNAME="chatsite-health"))
    try:
        api = SiteClient(site)
        for _ in range(4):  # the check's own connection in each worker, killed below too
            assert api.health()[0] == 200
        session_id = api.chat("Hi").ok()["sessionId"]
        with ThreadPoolExecutor(8) as pool:  # grows Django's pool (history reads use it) and the store's
            list(pool.map(lambda _: api.history(session_id).ok(), range(40)))
            list(pool.map(lambda n: api.chat(f"Question {n}"), range(8)))
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                           " WHERE application_name = 'chatsite-health'")
            assert cursor.fetchone()[0] >= 2

        started = time.monotonic()
        status, body, _ = api.health(timeout=10)

        assert (status, body["database"]) == (200, "ok")
        assert time.monotonic() - started < 1.5
    finally:
        site.stop()


def test_health_answers_200_while_every_connection_of_the_turns_is_busy(live_site, fake_llm_server, llm):
    """Busy is not down: with the turn store's one connection taken in turn by turns waiting on a
    lock, the check asks on a connection of its own and answers at once, where it waited in the
    pool's queue and answered 503 (a load balancer would take the site out when it is busiest)."""
    site = Site(site_env(fake_llm_server, DATABASE_POOL_MAX_SIZE="2", CHAT_HEALTH_TIMEOUT="1"))
    try:
        api = SiteClient(site)
        assert api.health()[0] == 200
        with connection.cursor() as cursor, ThreadPoolExecutor(12) as pool:
            cursor.execute("BEGIN")
            cursor.execute("LOCK TABLE conversations_message IN ACCESS EXCLUSIVE MODE")
            turns = [pool.submit(api.chat, f"Question {n}") for n in range(12)]
            time.sleep(1.0)  # the turns queue for the store's connection, each waiting up to lock_timeout
            started = time.monotonic()
            status, body, _ = api.health(timeout=10)
            took = time.monotonic() - started
            cursor.execute("ROLLBACK")
            statuses = [turn.result().status for turn in turns]
        assert (status, body["database"]) == (200, "ok") and took < 0.5
        assert set(statuses) <= {200, 503}  # answered, or database_unavailable: none left hanging
    finally:
        site.stop()


# --- liveness -------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_liveness_touches_no_dependency(client, queries, settings):
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.dummy.DummyCache"}}
    response = client.get("/livez")
    assert (response.status_code, response.json()) == (200, {"status": "alive"})
    assert queries.statements == []
    assert client.post("/livez").json()["error"]["code"] == "method_not_allowed"


# --- the LLM: its failures' causes in the log, its state in /healthz --------------


def failures_logged(caplog) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.getMessage().startswith("LLM call failed")]


@pytest.mark.parametrize("where, cause, says", [
    ("closed port", "refused", "connection refused"),
    ("unresolvable host", "dns", "DNS lookup failed"),
    ("TLS to a plain HTTP server", "tls", "TLS handshake failed"),
])
@pytest.mark.django_db(transaction=True)
def test_an_unreachable_llm_is_logged_with_its_cause_and_host(client, llm, settings, caplog, where, cause, says):
    port = free_port()
    settings.OPENAI_BASE_URL, host = {
        "closed port": (f"http://127.0.0.1:{port}/v1", f"127.0.0.1:{port}"),
        "unresolvable host": ("http://llm.nowhere.invalid/v1", "llm.nowhere.invalid"),
        "TLS to a plain HTTP server": (llm.url.replace("http://", "https://"), llm.url.split("/")[2]),
    }[where]
    settings.OPENAI_API_KEY = "sk-the-secret-key"
    caplog.set_level(logging.WARNING, logger="conversations.llm")

    assert post_chat(client, message="Hi")[0] == 502

    [record] = failures_logged(caplog)
    assert (record.cause, record.llm_host) == (cause, host)
    assert says in record.getMessage() and host in record.getMessage()
    assert "secret" not in caplog.text


@pytest.mark.django_db(transaction=True)
def test_an_http_error_is_logged_with_its_status_and_code_never_the_key(client, llm, caplog):
    # OpenAI's 401 repeats the key, partly masked, in its message.
    llm.control("status", status=401, code="invalid_api_key", message="Incorrect API key provided: test-key")
    caplog.set_level(logging.WARNING, logger="conversations.llm")

    assert post_chat(client, message="Hi")[0] == 502

    [record] = failures_logged(caplog)
    assert record.cause == "http_401"
    assert "HTTP 401 invalid_api_key" in record.getMessage()
    assert "test-key" not in caplog.text


@pytest.mark.django_db(transaction=True)
def test_a_timeout_is_logged_as_one(client, llm, settings, caplog):
    settings.CHAT_LLM_DEADLINE = 1.0
    llm.control("hang")
    caplog.set_level(logging.WARNING, logger="conversations.llm")
    assert post_chat(client, message="Hi")[0] == 504
    [record] = failures_logged(caplog)
    assert record.cause == "timeout"


@pytest.mark.django_db(transaction=True)
def test_health_reports_the_llm_down_since_the_breaker_marked_it(client, llm, settings):
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    settings.CHAT_LLM_DOWN_AFTER_FAILURES = 2
    assert client.get("/healthz").json()["llm"] == "ok"
    settings.OPENAI_BASE_URL = f"http://127.0.0.1:{free_port()}/v1"
    before = datetime.now(UTC).replace(microsecond=0)

    post_chat(client, message="Hi")
    assert client.get("/healthz").json()["llm"] == "ok"  # one failure is no outage
    post_chat(client, message="Hi")
    response = client.get("/healthz")

    body = response.json()
    assert (response.status_code, body["status"], body["database"], body["llm"]) == (200, "degraded", "ok", "down")
    since = datetime.fromisoformat(body["llmDownSince"])
    assert before <= since <= datetime.now(UTC)


def test_a_served_site_reports_an_unreachable_llm_in_its_log_and_health(live_site, fake_llm_server):
    site = Site(site_env(fake_llm_server, OPENAI_BASE_URL="http://llm.nowhere.invalid/v1",
                         CHAT_LLM_DOWN_AFTER_FAILURES="1"))
    try:
        api = SiteClient(site)
        assert api.health().ok()["llm"] == "ok"
        assert api.chat("Hi").status == 502
        # The breaker's flag is in Redis at once; each worker's report reads it within a second.
        status, body, _ = wait_for(lambda: (found := api.health())[1]["llm"] == "down" and found, timeout=3)
        assert (status, body["status"], body["llm"]) == (200, "degraded", "down")
        assert body["llmDownSince"].endswith("Z")
        lines = [json.loads(line) for line in site.log().splitlines() if '"LLM call failed' in line]
        assert [(line["cause"], line["llm_host"]) for line in lines] == [("dns", "llm.nowhere.invalid")]
    finally:
        site.stop()
        # The flag lives for llm.DOWN_SECONDS in the machine's Redis, where this test's next run
        # (the served sites share the cache's prefix) would find the LLM down before it began.
        from django.core.cache import cache

        from conversations import llm

        cache.delete(llm.DOWN)
