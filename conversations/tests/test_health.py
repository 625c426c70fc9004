"""GET /healthz: what a load balancer asks."""

import time

import pytest

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
