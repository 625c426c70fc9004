"""GET /healthz: what a load balancer asks."""

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection

from devtools.processes import Site, free_port

from .client import SiteClient
from .helpers import site_env


@pytest.mark.django_db(transaction=True)
def test_health_is_ok_with_the_database_and_the_local_cache(client, settings):
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "cache": "local"}


@pytest.mark.django_db
def test_health_is_not_redirected_to_https(client, settings):
    """A load balancer checks each instance over plain HTTP: /healthz answers, the rest redirects."""
    settings.SECURE_SSL_REDIRECT = True
    assert client.get("/healthz").status_code == 200
    redirect = client.get("/")
    assert redirect.status_code == 301 and redirect["Location"] == "https://testserver/"


def test_health_with_redis_up_then_down(live_site, fake_llm_server, own_redis):
    site = Site(site_env(fake_llm_server, REDIS_URL=own_redis.url))
    try:
        assert SiteClient(site).health()[:2] == (200, {"status": "ok", "database": "ok", "cache": "ok"})
        own_redis.stop()
        assert SiteClient(site).health()[:2] == (200, {"status": "degraded", "database": "ok", "cache": "down"})
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
