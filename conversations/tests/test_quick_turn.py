"""The quick path (turns.py, conversations/loop_io.py): a returning customer's turn on the deployed
site's event loop, three statements and no thread; anything else on the ORM path.

The turn's rules are tested in test_turns.py and its faults in test_faults.py, against the same
deployed site, so on this path too; here: that the path is taken, and what it costs."""

import json
import urllib.request
from urllib.parse import urlsplit

import pytest
from django.db import connection

from bench.wire import WireLog, summarize
from conversations.models import Message
from devtools.processes import Site

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


def post(site: Site, body: dict) -> dict:
    request = urllib.request.Request(f"{site.url}/api/chat", data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def test_a_returning_turn_is_three_statements_on_the_event_loops_pool(proxied_site, postgres, llm):
    site, wire = proxied_site
    session = post(site, {"message": "Hi"})["sessionId"]  # a new conversation: the ORM path
    for n in range(3):
        wire.clear()
        body = post(site, {"message": f"Turn {n}", "sessionId": session})
        sent = summarize(wire.events)

        assert body["reply"] == f"Echo: Turn {n}" and body["sessionId"] == session
        # Read the history, store the question with its slot, store the reply: nothing else,
        # not even the health check that Django's pool sends when it hands out a connection.
        assert [statement.split()[0] for statement in sent["statements"]] == ["SELECT", "INSERT", "UPDATE"]
        assert sent["transaction_control"] == [] and sent["health_checks"] == []

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'chatsite quick turns'")
        assert cursor.fetchone()[0] >= 1
    assert Message.objects.filter(conversation__session_id=session).count() == 8


def test_a_turn_that_is_not_the_common_case_goes_the_orm_way_and_is_answered_the_same(proxied_site, postgres,
                                                                                       llm):
    site, wire = proxied_site
    session = post(site, {"message": "Hi"})["sessionId"]
    first = post(site, {"message": "Twice", "sessionId": session, "clientMessageId": "twice-1"})
    wire.clear()

    again = post(site, {"message": "Twice", "sessionId": session, "clientMessageId": "twice-1"})

    # A question sent again: its stored reply, without an LLM call, by the ORM path (which reads
    # again and decides) after the quick path's read found the clientMessageId.
    assert again == first
    assert sum(1 for r in llm.requests() if "Twice" in json.dumps(r)) == 1
    assert sent_health_checks(wire) >= 1


def sent_health_checks(wire: WireLog) -> int:
    return len(summarize(wire.events)["health_checks"])
