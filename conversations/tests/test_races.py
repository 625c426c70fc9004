"""Races between a conversation's customer, its staff and its deletion, against the site served the
Procfile's way on PostgreSQL, as real HTTP requests: each was reproduced against the site before
the turn store decided a conversation's state in one place."""

import json
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connections

from conversations import handoff
from conversations.models import Conversation, Handoff, Message
from devtools.processes import Site

from .client import SiteClient
from .helpers import site_env

pytestmark = pytest.mark.django_db(transaction=True)


def chat(site, message: str, session_id: str | None = None, client_message_id: str | None = None,
         headers: dict | None = None) -> tuple[int, dict]:
    return SiteClient(site).chat(message, session_id, client_message_id, headers=headers)[:2]


def history(site, session_id: str) -> dict:
    return SiteClient(site).history(session_id).ok()


def test_forget_racing_turns_deletes_everything_and_never_answers_500(live_site, llm):
    llm.control("ok", delay=0.05)
    statuses = []
    for round_ in range(10):
        _, first = chat(live_site, "Hi")
        session_id = first["sessionId"]
        with ThreadPoolExecutor(5) as pool:
            turns = [pool.submit(chat, live_site, f"Message {n}", session_id, f"r{round_}-{n}") for n in range(4)]
            forgot = pool.submit(SiteClient(live_site).forget, session_id)
            statuses += [turn.result()[0] for turn in turns] + [forgot.result().status]
        assert forgot.result().status == 204
        assert not Conversation.objects.filter(session_id=session_id).exists()
    assert not [status for status in statuses if status >= 500], statuses
    # Whatever arrived after the delete started a conversation of its own or nothing; no message
    # was left without its conversation, and none of the deleted conversations' words survive.
    assert not Message.objects.filter(content="Hi").exists()


@pytest.fixture
def proxied_site(live_site, fake_llm_server):
    """The site behind a trusted proxy on 127.0.0.1, so that tests can speak from other addresses."""
    site = Site(site_env(fake_llm_server, CHAT_TRUSTED_PROXIES="127.0.0.1/32"))
    yield site
    site.stop()


@pytest.mark.parametrize("client_message_id", ["m-1712345678-000001", str(uuid.uuid4())])
def test_a_first_message_id_is_no_key_to_someone_elses_conversation(proxied_site, llm, client_message_id):
    _, mine = chat(proxied_site, "My order 4711 is late", client_message_id=client_message_id,
                   headers={"X-Forwarded-For": "203.0.113.5"})
    status, theirs = chat(proxied_site, "Hi", client_message_id=client_message_id,
                          headers={"X-Forwarded-For": "198.51.100.23"})

    assert status == 200 and theirs["sessionId"] != mine["sessionId"]
    assert "4711" not in json.dumps(history(proxied_site, theirs["sessionId"]))
    assert Conversation.objects.count() == 2


def test_the_same_first_message_from_the_same_address_finds_its_conversation(proxied_site, llm):
    client_message_id = str(uuid.uuid4())
    address = {"X-Forwarded-For": "203.0.113.5"}
    _, first = chat(proxied_site, "Where is my parcel?", client_message_id=client_message_id, headers=address)
    status, again = chat(proxied_site, "Where is my parcel?", client_message_id=client_message_id, headers=address)

    assert status == 200 and again["sessionId"] == first["sessionId"] and again["reply"] == first["reply"]
    assert llm.stats()["received"] == 1


def test_a_client_message_id_equal_to_a_staff_token_is_answered_not_500(live_site, llm):
    _, first = chat(live_site, "Can I talk to a human please?")
    conversation = Conversation.objects.get()
    handoff.staff_reply(conversation.pk, None, "Mia", "Hello, Mia here.", "staff-token-1")
    handoff.hand_back(conversation.pk, None, "Mia")
    assert "staff-token-1" not in json.dumps(history(live_site, first["sessionId"]))  # staff's tokens

    status, body = chat(live_site, "Thanks", first["sessionId"], "staff-token-1")

    assert status == 200 and body["reply"] == "Echo: Thanks"


def test_a_turn_in_progress_is_seen_after_a_notice_lands_behind_its_slot(live_site, llm):
    _, first = chat(live_site, "Hi")
    llm.control("ok", delay=3)
    conversation = Conversation.objects.get()
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(chat, live_site, "Tell me about returns", first["sessionId"], "slow-1")
        deadline = time.monotonic() + 10
        while not Message.objects.filter(status=Message.Status.ANSWERING).exists():
            assert time.monotonic() < deadline, "the slow turn never took its slot"
            time.sleep(0.05)
        handoff.request_person(conversation.pk)
        handoff.hand_back(conversation.pk, None, "Mia")  # a notice now follows the slot

        seen = history(live_site, first["sessionId"])
        status, second = chat(live_site, "And shipping?", first["sessionId"], "second-1")
        assert slow.result()[0] == 200

    assert seen["turnInProgress"] is True
    assert status == 409 and second["error"]["code"] == "turn_in_progress"
    assert Message.objects.filter(role=Message.Role.ASSISTANT).count() == 2  # no second reply at once


def close(conversation_id: int) -> None:
    """Staff press Close, from a thread of its own (its connection handed back after)."""
    try:
        handoff.hand_back(conversation_id, None, "Mia", close=True)
    finally:
        connections.close_all()


def test_close_racing_the_customers_goodbye_never_reopens_the_conversation(live_site, llm):
    _, first = chat(live_site, "Can I talk to a human please?")
    conversation = Conversation.objects.get()
    statuses = []
    for n in range(15):
        handoff.staff_reply(conversation.pk, None, "Mia", f"Anything else? ({n})", f"token-{n}")
        closing = threading.Thread(target=close, args=(conversation.pk,))
        closing.start()
        statuses.append(chat(live_site, "ok thanks, bye", first["sessionId"], f"bye-{n}")[0])
        closing.join()
        conversation.refresh_from_db()
        assert conversation.handoff == Handoff.ASSISTANT, n

    assert set(statuses) == {200}
    assert Message.objects.filter(role=Message.Role.EVENT, content__startswith="You asked").count() == 1
