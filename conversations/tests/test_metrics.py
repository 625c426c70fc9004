"""GET /metrics: Prometheus's scrape, behind a bearer token, reporting the whole site."""

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from prometheus_client.parser import text_string_to_metric_families

from devtools.processes import Site, free_port

from .client import SiteClient, post_chat, post_handoff
from .helpers import site_env

TOKEN = "metrics-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def samples(text: str) -> dict[tuple, float]:
    """The samples of a scrape: (name, sorted label pairs) -> value."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(found: dict[tuple, float], name: str, **labels: str) -> float:
    """A sample's value (0 if absent), summed over the labels not named (the workers' pids)."""
    return sum(v for (n, pairs), v in found.items()
               if n == name and all(dict(pairs).get(k) == want for k, want in labels.items()))


def scrape(client) -> dict[tuple, float]:
    response = client.get("/metrics", headers=AUTH)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain")
    return samples(response.content.decode())


# --- who may scrape ----------------------------------------------------------------


@pytest.mark.django_db
def test_without_a_token_set_there_is_no_metrics_endpoint(client, settings):
    settings.CHAT_METRICS_TOKEN = ""
    response = client.get("/metrics", headers=AUTH)
    assert (response.status_code, response.json()["error"]["code"]) == (404, "not_found")


@pytest.mark.django_db
@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN},
                                     {"Authorization": f"Bearer {TOKEN}x"}])
def test_a_missing_or_wrong_token_is_refused(client, settings, headers):
    settings.CHAT_METRICS_TOKEN = TOKEN
    response = client.get("/metrics", headers=headers)
    assert (response.status_code, response.json()["error"]["code"]) == (401, "unauthorized")
    assert response["WWW-Authenticate"].startswith("Bearer")


# --- what is counted -----------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_turns_llm_calls_failures_tokens_and_refusals_are_counted(client, settings, llm):
    settings.CHAT_METRICS_TOKEN = TOKEN
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    before = scrape(client)

    settings.CHAT_RATE_LIMIT_IP = "1/m"
    assert post_chat(client, message="Hi")[0] == 200
    assert post_chat(client, message="Hello")[0] == 429
    settings.CHAT_RATE_LIMIT_IP = "0"
    llm.control("status", status=503)
    assert post_chat(client, message="And returns?")[0] == 502
    settings.OPENAI_BASE_URL = f"http://127.0.0.1:{free_port()}/v1"
    assert post_chat(client, message="And shipping?")[0] == 502
    after = scrape(client)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("chat_turns_total", outcome="complete") == 1
    assert grew("chat_turns_total", outcome="failed") == 2
    assert grew("chat_llm_calls_total") == 3
    assert grew("chat_llm_failures_total", cause="http_503") == 1
    assert grew("chat_llm_failures_total", cause="refused") == 1
    assert grew("chat_refusals_total", reason="rate_limit_ip") == 1
    assert grew("chat_tokens_spent_total") > 0
    assert grew("chat_turn_seconds_count") == 1
    assert grew("chat_llm_first_token_seconds_count") == 1


@pytest.mark.django_db(transaction=True)
def test_the_waiting_queue_and_the_budgets_are_read_at_each_scrape(client, settings):
    settings.CHAT_METRICS_TOKEN = TOKEN
    settings.CHAT_DAILY_TOKENS_SITE = 123_456
    assert value(scrape(client), "chat_conversations_waiting") == 0
    post_handoff(client)
    post_handoff(client)
    found = scrape(client)
    assert value(found, "chat_conversations_waiting") == 2
    assert value(found, "chat_oldest_wait_seconds") > 0
    assert value(found, "chat_token_budget_daily", budget="site") == 123_456
    assert value(found, "chat_llm_down") == 0


# --- a served site: every worker's counts in each scrape -------------------------------


def test_a_scrape_of_a_served_site_reports_the_turns_of_every_worker(live_site, fake_llm_server):
    site = Site(site_env(fake_llm_server, WEB_CONCURRENCY="2", CHAT_METRICS_TOKEN=TOKEN))
    try:
        api = SiteClient(site)

        def scrape_site() -> dict[tuple, float]:
            response = api.request("GET", "/metrics", headers=AUTH)
            assert response.status == 200, response.body
            return samples(response.body)

        def workers(found) -> set[str]:
            """The pids of the workers that have streamed a turn (each has a gauge of held streams)."""
            return {dict(pairs)["pid"] for (name, pairs), _ in found.items()
                    if name == "chat_held_requests" and dict(pairs).get("kind") == "stream"}

        assert api.request("GET", "/metrics").status == 401
        sent = 0
        with ThreadPoolExecutor(8) as pool:
            # Turns at once, until both workers have served some (the kernel picks which accepts).
            while sent < 200 and len(workers(scrape_site())) < 2:
                statuses = list(pool.map(lambda n: api.chat(f"Question {n}", stream=True).status, range(16)))
                assert statuses == [200] * 16
                sent += 16
        scrapes = [scrape_site() for _ in range(6)]  # landing on either worker

        assert len(workers(scrapes[0])) == 2
        for found in scrapes:
            assert value(found, "chat_turns_total", outcome="complete") == sent
            assert value(found, "chat_llm_calls_total") == sent
            assert value(found, "chat_held_requests", kind="stream") == 0  # none held now
    finally:
        site.stop()


@pytest.mark.django_db(transaction=True)
def test_the_dashboard_and_the_docs_name_only_metrics_the_site_has(client, settings, llm):
    settings.CHAT_METRICS_TOKEN = TOKEN
    post_chat(client, message="Hi")
    response = client.get("/metrics", headers=AUTH)
    families = list(text_string_to_metric_families(response.content.decode()))
    served = {family.name for family in families} | {s.name for family in families for s in family.samples}
    served |= {f"{family.name}_{'bucket' if family.type == 'histogram' else 'total'}" for family in families}
    for document in ["docs/grafana-dashboard.json", "docs/metrics.md"]:
        named = set(re.findall(r"\bchat_[a-z_]+", (Path(django_settings.BASE_DIR) / document).read_text()))
        assert named and named <= served, (document, named - served)


def test_a_scrape_answers_with_the_database_and_redis_down(live_site, fake_llm_server, own_redis):
    """When the dependencies fail is when the figures matter: the scrape reports what it can."""
    site = Site(site_env(fake_llm_server, CHAT_METRICS_TOKEN=TOKEN, REDIS_URL=own_redis.url,
                         DATABASE_URL=f"postgres://postgres@127.0.0.1:{free_port()}/nothing",
                         DATABASE_POOL_TIMEOUT="1"))
    try:
        own_redis.stop()
        response = SiteClient(site).request("GET", "/metrics", headers=AUTH)
        assert response.status == 200, response.body
        found = samples(response.body)
        assert value(found, "chat_token_budget_daily", budget="site") == 0
        assert ("chat_conversations_waiting", ()) not in found  # the queue is in the database
    finally:
        site.stop()
