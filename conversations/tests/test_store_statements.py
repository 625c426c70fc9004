"""Every turn of the deployed site on the turn store's PostgreSQL backend (store/postgres.py): on
the worker's event loop, a returning customer's turn in three statements, and no turn on
Django's pool (whose connections announce themselves with a health check).

The turn's rules are tested against both backends in test_store_contract.py, its transitions
and faults in test_turns.py and test_faults.py against the same deployed site; here: that the
store serves every turn, and what a turn costs."""

import json
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import pytest
from django.db import connection
from django.utils import timezone

from conversations.models import Message
from devtools.processes import Site
from devtools.wire import WireLog, summarize

from .client import SiteClient
from .helpers import database_url, need, site_env

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def proxied_site(django_db_setup, django_db_blocker, fake_llm_server, static_files):
    """The deployed site, its PostgreSQL traffic through a proxy that records each statement."""
    from django.conf import settings

    with django_db_blocker.unblock():
        need(connection.vendor == "postgresql", "PostgreSQL (set DATABASE_URL)")
        need(bool(settings.REDIS_URL), "Redis (set REDIS_URL)")
        url = urlsplit(database_url())
        wire = WireLog(url.hostname or "127.0.0.1", url.port or 5432)
        proxied = url._replace(netloc=f"{url.username}@127.0.0.1:{wire.port}").geturl()
        site = Site(site_env(fake_llm_server, DATABASE_URL=proxied))
    yield site, wire
    site.stop()


def test_a_returning_turn_is_three_statements_on_the_event_loops_pool(proxied_site, postgres, llm):
    site, wire = proxied_site
    api = SiteClient(site)
    wire.clear()
    session = api.chat("Hi").ok()["sessionId"]
    assert sent_health_checks(wire) == 0  # a first message too: the store's pool, not Django's
    for n in range(3):
        wire.clear()
        body = api.chat(f"Turn {n}", session).ok()
        sent = summarize(wire.events)

        assert body["reply"] == f"Echo: Turn {n}" and body["sessionId"] == session
        # Read the history, store the question with its slot, store the reply: nothing else,
        # not even the health check that Django's pool sends when it hands out a connection.
        assert [statement.split()[0] for statement in sent["statements"]] == ["SELECT", "INSERT", "UPDATE"]
        assert sent["transaction_control"] == [] and sent["health_checks"] == []

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'chatsite turns'")
        assert cursor.fetchone()[0] >= 1
    assert Message.objects.filter(conversation__session_id=session).count() == 8


def test_a_question_sent_again_is_answered_from_the_store_in_one_statement(proxied_site, postgres, llm):
    site, wire = proxied_site
    api = SiteClient(site)
    session = api.chat("Hi").ok()["sessionId"]
    first = api.chat("Twice", session, "twice-1").ok()
    wire.clear()

    again = api.chat("Twice", session, "twice-1").ok()

    # Its stored reply, without an LLM call: the history read finds it.
    assert again == first
    assert sum(1 for r in llm.requests() if "Twice" in json.dumps(r)) == 1
    assert [statement.split()[0] for statement in summarize(wire.events)["statements"]] == ["SELECT"]
    assert sent_health_checks(wire) == 0


def sent_health_checks(wire: WireLog) -> int:
    return len(summarize(wire.events)["health_checks"])


def prepared(wire: WireLog) -> list[str]:
    """The first word of each statement prepared on one of the site's connections (a named Parse)."""
    return [sql.split()[0] for kind, sql in wire.snapshot() if kind == "prepare"]


def parsed_for_one_run(wire: WireLog) -> list[str]:
    """The first word of each of a turn's statements parsed for one run only (an unnamed Parse)."""
    return [sql.split()[0] for kind, sql in wire.snapshot() if kind == "parse" and "conversations_message" in sql]


@pytest.mark.parametrize("setting, prepares", [("1", True), ("0", False)])
def test_a_turns_statements_are_prepared_on_a_connection_after_five_runs_unless_turned_off(
        fake_llm_server, postgres, llm, setting, prepares):
    """PostgreSQL parses and plans a statement for each run until psycopg prepares it on that
    connection, after 5 runs; from then on a turn only binds and runs its statements. With
    DATABASE_PREPARED_STATEMENTS=0 (a pooler that does not keep prepared statements) nothing is
    prepared. One worker whose store has one connection, so that every turn runs on it."""
    url = urlsplit(database_url())
    wire = WireLog(url.hostname or "127.0.0.1", url.port or 5432)
    proxied = url._replace(netloc=f"{url.username}@127.0.0.1:{wire.port}").geturl()
    site = Site(site_env(fake_llm_server, DATABASE_URL=proxied, WEB_CONCURRENCY="1", DATABASE_POOL_MAX_SIZE="2",
                         DATABASE_PREPARED_STATEMENTS=setting))
    try:
        api = SiteClient(site)
        session = api.chat("Hi").ok()["sessionId"]
        wire.clear()
        replies = [api.chat(f"Turn {n}", session).ok()["reply"] for n in range(12)]
    finally:
        site.stop()

    assert replies == [f"Echo: Turn {n}" for n in range(12)]
    assert [s.split()[0] for s in summarize(wire.snapshot())["statements"]] == ["SELECT", "INSERT", "UPDATE"] * 12
    if prepares:
        # Each parsed for its first five runs and prepared at its sixth. The first turn (before
        # these) started the conversation: it read no history, and stored its question and reply
        # with the same INSERT and UPDATE. The last turns' statements were sent to be run only.
        assert sorted(prepared(wire)) == ["INSERT", "SELECT", "UPDATE"]
        assert sorted(parsed_for_one_run(wire)) == ["INSERT"] * 4 + ["SELECT"] * 5 + ["UPDATE"] * 4
    else:
        assert prepared(wire) == []
        assert len(parsed_for_one_run(wire)) == 3 * 12


def test_a_worker_renews_the_leases_of_all_its_slow_turns_together(fake_llm_server, postgres, llm):
    """Three turns on a slow LLM outlive the 1 s lease many times over: their leases are renewed
    (by one UPDATE a tick for all of them), so none is taken over and each is answered once."""
    site = Site(site_env(fake_llm_server, CHAT_TURN_LEASE_SECONDS="1"))
    api = SiteClient(site)
    try:
        sessions = [api.chat(f"Hi {n}").ok()["sessionId"] for n in range(3)]
        llm.control("ok", delay=3.0)
        with ThreadPoolExecutor(6) as pool:
            turns = [pool.submit(api.chat, f"Slow {n}", session, f"slow-{n}")
                     for n, session in enumerate(sessions)]
            time.sleep(2.0)  # two leases' length after the slots were taken
            slots = list(Message.objects.filter(client_message_id__startswith="slow-", role="assistant"))
            read_at = timezone.now()
            # A retry of each now: its owner is alive, so no takeover, and no second LLM call.
            retries = [pool.submit(api.chat, f"Slow {n}", session, f"slow-{n}")
                       for n, session in enumerate(sessions)]
            replies = [turn.result().ok() for turn in turns]
            retried = [retry.result()[:2] for retry in retries]
    finally:
        site.stop()

    assert len(slots) == 3
    assert all(slot.status == "answering" and slot.lease_until > read_at for slot in slots)
    assert [reply["reply"] for reply in replies] == [f"Echo: Slow {n}" for n in range(3)]
    assert [(status, body.get("error", {}).get("code")) for status, body in retried] == [(409, "turn_in_progress")] * 3
    assert sum(1 for r in llm.requests() if "Slow" in json.dumps(r)) == 3

