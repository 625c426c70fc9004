"""Two instances of the deployed site on one PostgreSQL and Redis: the web processes keep no state.

A conversation started on one instance continues on the other, as it must
behind a load balancer that sends each request wherever it likes.
"""

import pytest
from django.conf import settings

from conversations.models import Conversation
from devtools.processes import Site

from .client import SiteClient
from .helpers import need


@pytest.fixture(scope="module")
def other_site(site, fake_llm_server):
    """A second instance of the site, beside `site`, on the same database, Redis and LLM."""
    server = Site(site.env)
    yield server
    server.stop()


def test_a_conversation_started_on_one_instance_continues_on_the_other(live_site, other_site, llm):
    need(bool(settings.REDIS_URL), "Redis (set REDIS_URL)")
    assert other_site.port != live_site.port

    status, first, _ = SiteClient(live_site).send({"message": "Do you ship abroad?"})
    assert status == 200 and first["newSession"]
    session_id = first["sessionId"]

    status, second, _ = SiteClient(other_site).send({"message": "And to Norway?", "sessionId": session_id})
    assert status == 200
    assert second["sessionId"] == session_id and not second["newSession"]
    # The instance that had never seen the session showed the LLM the whole conversation.
    seen = [m["content"] for m in llm.requests()[-1]["messages"] if m["role"] != "system"]
    assert seen == ["Do you ship abroad?", "Echo: Do you ship abroad?", "And to Norway?"]

    status, third, _ = SiteClient(live_site).send({"message": "How long does it take?", "sessionId": session_id})
    assert status == 200 and third["sessionId"] == session_id and not third["newSession"]

    for site in (live_site, other_site):
        status, history, _ = SiteClient(site).history(session_id)
        assert status == 200
        assert [m["content"] for m in history["messages"]] == [
            "Do you ship abroad?", "Echo: Do you ship abroad?",
            "And to Norway?", "Echo: And to Norway?",
            "How long does it take?", "Echo: How long does it take?",
        ]
    assert Conversation.objects.filter(session_id=session_id).count() == 1


def test_turns_split_between_instances_keep_every_session(live_site, other_site, llm):
    need(bool(settings.REDIS_URL), "Redis (set REDIS_URL)")
    sessions = []
    for n in range(6):
        status, body, _ = SiteClient((live_site, other_site)[n % 2]).send({"message": f"start {n}"})
        assert status == 200
        sessions.append(body["sessionId"])

    # Each session's next turns alternate between the instances, starting on the other one.
    for turn in range(2):
        for n, session_id in enumerate(sessions):
            site = (other_site, live_site)[(n + turn) % 2]
            status, body, _ = SiteClient(site).send({"message": f"turn {turn} of {n}", "sessionId": session_id})
            assert status == 200, body
            assert body["sessionId"] == session_id and not body["newSession"]

    assert Conversation.objects.count() == 6
    for conversation in Conversation.objects.all():
        assert [m.seq for m in conversation.messages.all()] == list(range(6))
