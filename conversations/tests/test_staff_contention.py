"""Staff replying from the admin while a long transaction elsewhere holds the conversation's row or
its messages, against the site served the Procfile's way on PostgreSQL, over HTTP (the admin's
reply form): staff get a clear message, stored or "not sent, try again" with their reply kept,
never a 500; and customers' turns wait for nothing but the lock itself."""

import re
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
from django.contrib.auth import get_user_model

from conversations.models import Conversation, Handoff, Message
from devtools.processes import Site

from .client import SiteClient, StaffSession
from .helpers import database_url, site_env

pytestmark = pytest.mark.django_db(transaction=True)

PASSWORD = "a-good-password-1"

# A long transaction of another connection, holding what a staff reply needs.
LOCKS = {
    "the conversation's row": "SELECT 1 FROM conversations_conversation WHERE id = %s FOR UPDATE",
    "its messages": "LOCK TABLE conversations_message IN ACCESS EXCLUSIVE MODE",
}


@pytest.fixture
def patient_site(live_site, fake_llm_server):
    """The site with a lock timeout longer than any test here holds a lock."""
    site = Site(site_env(fake_llm_server, DATABASE_LOCK_TIMEOUT_MS="60000", DATABASE_STATEMENT_TIMEOUT_MS="90000"))
    yield site
    site.stop()


@pytest.fixture
def impatient_site(live_site, fake_llm_server):
    """The site with no lock timeout, but a statement timeout of 1 s."""
    site = Site(site_env(fake_llm_server, DATABASE_LOCK_TIMEOUT_MS="0", DATABASE_STATEMENT_TIMEOUT_MS="1000"))
    yield site
    site.stop()


def waiting_customer(site) -> tuple[str, Conversation]:
    session_id = SiteClient(site).chat("Can I talk to a human please?").ok()["sessionId"]
    return session_id, Conversation.objects.get(session_id=session_id)


def staff_member(site) -> StaffSession:
    get_user_model().objects.create_superuser("mia", "mia@example.com", PASSWORD)
    return StaffSession(site, "mia", PASSWORD)


def reply_form(text: str) -> dict[str, str]:
    """The reply box as the conversation's page shows it now, filled in."""
    seen = Message.objects.order_by("-seq").values_list("seq", flat=True).first()
    return {"author": "Mia", "reply": text, "token": uuid.uuid4().hex, "seen": str(seen), "action": "reply"}


def reply_url(conversation: Conversation) -> str:
    return f"/admin/conversations/conversation/{conversation.pk}/reply/"


def notes(page) -> list[str]:
    """The messages the admin shows at the top of a page."""
    return re.findall(r'<li class="(?:error|success|warning|info)">(.*?)</li>', page.text)


def reply_box(page) -> str:
    box = re.search(r'<textarea name="reply"[^>]*>\n?(.*?)</textarea>', page.text, re.S)
    assert box is not None, page.text
    return box.group(1)


class Locker:
    """Another connection's open transaction holding `lock` until release()."""

    def __init__(self, lock: str, conversation: Conversation):
        self.connection = psycopg.connect(database_url())
        self.connection.execute(LOCKS[lock], [conversation.pk] if "%s" in LOCKS[lock] else [])

    def release(self) -> None:
        self.connection.commit()
        self.connection.close()


def wait_until_blocked(count: int = 1) -> None:
    """Until `count` backends of the site wait for a lock."""
    with psycopg.connect(database_url(), autocommit=True) as watcher:
        for _ in range(600):
            [(waiting,)] = watcher.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
            ).fetchall()
            if waiting >= count:
                return
            threading.Event().wait(0.05)
    raise AssertionError("nothing waited for the lock")


@pytest.mark.parametrize("lock", LOCKS)
def test_a_lock_timeout_refuses_the_reply_with_a_message_and_keeps_it_to_send_again(live_site, lock):
    session_id, conversation = waiting_customer(live_site)
    staff = staff_member(live_site)
    form = reply_form("Hello, Mia here.\nHow can I help?")

    locker = Locker(lock, conversation)
    try:
        refused = staff.post(reply_url(conversation), form)
    finally:
        locker.release()

    assert refused.status == 302  # never a 500
    assert not Message.objects.filter(role=Message.Role.STAFF).exists()
    page = staff.follow(refused)
    assert page.status == 200
    assert notes(page) == ["Your reply was not sent: the conversation is busy just now (the database did not "
                           "answer in time). It is kept in the box below: press Send again in a moment."]
    assert reply_box(page) == "Hello, Mia here.\nHow can I help?"
    token = form["token"]
    assert f'name="token" value="{token}"' in page.text  # the same form: sent again, it is stored once

    sent = staff.follow(staff.post(reply_url(conversation), form))
    again = staff.follow(staff.post(reply_url(conversation), form))

    assert notes(sent) == ["Your reply was sent."]
    assert notes(again) == ["That reply was sent already; it was not sent again."]
    assert list(Message.objects.filter(role=Message.Role.STAFF).values_list("content", flat=True)) == [
        "Hello, Mia here.\nHow can I help?"]
    assert SiteClient(live_site).chat("Thanks!", session_id).ok()["handoff"] == Handoff.STAFF


def test_a_statement_timeout_refuses_hand_back_with_a_message(impatient_site):
    _, conversation = waiting_customer(impatient_site)
    staff = staff_member(impatient_site)

    form = {**reply_form(""), "action": "hand_back"}
    locker = Locker("the conversation's row", conversation)
    try:
        refused = staff.post(reply_url(conversation), form)
    finally:
        locker.release()

    assert refused.status == 302
    assert notes(staff.follow(refused)) == [
        "Nothing was changed: the conversation is busy just now (the database did not answer in time). "
        "Try again in a moment."]
    conversation.refresh_from_db()
    assert conversation.handoff == Handoff.WAITING


def test_a_statement_timeout_refuses_a_reply_with_a_message(impatient_site):
    _, conversation = waiting_customer(impatient_site)
    staff = staff_member(impatient_site)

    form = reply_form("Hello")
    locker = Locker("its messages", conversation)
    try:
        refused = staff.post(reply_url(conversation), form)
    finally:
        locker.release()

    assert refused.status == 302
    assert notes(staff.follow(refused))[0].startswith("Your reply was not sent: the conversation is busy")


def test_a_reply_waiting_for_a_lock_is_stored_when_it_ends_and_holds_up_no_customer(patient_site):
    session_id, conversation = waiting_customer(patient_site)
    staff = staff_member(patient_site)
    api = SiteClient(patient_site)

    form = reply_form("Hello, Mia here.")
    locker = Locker("the conversation's row", conversation)
    with ThreadPoolExecutor(2) as pool:
        try:
            replying = pool.submit(staff.post, reply_url(conversation), form)
            wait_until_blocked()
            # Other customers are answered while the staff reply waits (the lock lasts until released).
            others = [api.chat(f"Question {n}") for n in range(3)]
            assert [other.status for other in others] == [200, 200, 200]
            assert not replying.done()
            # This conversation's customer waits for the lock itself, and no longer.
            customer = pool.submit(api.chat, "Anyone there?", session_id)
            wait_until_blocked(2)
            assert not customer.done()
        finally:
            locker.release()
        stored = replying.result()
        assert customer.result().status == 200

    assert notes(staff.follow(stored)) == ["Your reply was sent."]
    assert set(Message.objects.filter(conversation=conversation).values_list("content", flat=True)) >= {
        "Hello, Mia here.", "Anyone there?"}
