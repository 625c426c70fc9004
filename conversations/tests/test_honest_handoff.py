"""The honest handoff (handoff.py, "What the customer is told"): inside opening hours or with staff on
the admin, "usually within N minutes", N measured; outside, "closed until <time>" and an email the first
staff reply goes to once; "anyone there?" answered with an offer, an explicit request handed off at once;
and the check that the emails' links can be clicked."""

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from asgiref.sync import async_to_sync
from django.conf import settings
from django.contrib.auth.models import Permission, User
from django.core.checks import run_checks
from django.db import OperationalError
from django.utils import timezone

from conversations import handoff, knowledge, middleware, shared_state
from conversations.models import Conversation, DeviceLink, Message, Session

from .client import post_chat, post_handoff

DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
FAQ = """# Shop FAQ

## How long does shipping take?

Standard shipping takes 3 to 5 business days.

# Contact

Opening hours: {hours}
Email: support@example.com
"""


def knowledge_file(settings, tmp_path: Path, hours: str) -> None:
    path = tmp_path / "faq.md"
    path.write_text(FAQ.format(hours=hours), encoding="utf-8")
    settings.CHAT_KNOWLEDGE_FILE = path


def closed_now(settings, tmp_path: Path) -> str:
    """A knowledge file whose only opening day is three days from today: closed whenever the test runs.
    Returns that day's name."""
    day = DAYS[(handoff.shop_time(timezone.now()).weekday() + 3) % 7]
    knowledge_file(settings, tmp_path, f"{day}, 9 am to 6 pm CET")
    return day


def open_now(settings, tmp_path: Path) -> None:
    knowledge_file(settings, tmp_path, "Monday to Sunday, 0:00 to 24:00")


@pytest.fixture(autouse=True)
def _fresh_wait(settings):
    """N measured afresh, and nobody "here": another test's admin page may have left its mark in Redis."""
    settings.CHAT_SHOP_TIMEZONE = "Europe/Berlin"
    handoff.forget_measured_wait()
    shared_state.delete_many([handoff.STAFF_SEEN])
    yield
    handoff.forget_measured_wait()
    shared_state.delete_many([handoff.STAFF_SEEN])


def staff(username="mia.schmidt") -> User:
    user = User.objects.create_user(username, is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=["view_conversation", "reply_conversation"]))
    return user


# --- opening hours, as the shop writes them ------------------------------------------------


@pytest.mark.parametrize("line, monday, saturday, sunday", [
    ("Monday to Friday, 9 am to 6 pm CET", ((540, 1080),), (), ()),
    ("Mon-Fri 09:00-18:00; Sat 10:00-14:00", ((540, 1080),), ((600, 840),), ()),
    ("Monday to Friday, 9:30 am to 5:30 pm; Saturday, 10 am to 2 pm", ((570, 1050),), ((600, 840),), ()),
    ("Saturday to Monday, 10 am to 12 pm", ((600, 720),), ((600, 720),), ((600, 720),)),
])
def test_opening_hours_are_read_as_the_shop_writes_them(line, monday, saturday, sunday):
    hours = knowledge.parse_opening_hours(line)
    assert hours is not None
    assert (hours.days[0], hours.days[5], hours.days[6]) == (monday, saturday, sunday)


@pytest.mark.parametrize("line", ["", "Call us any time", "Monday to Friday", "Funday, 9 am to 6 pm",
                                  "Monday, 6 pm to 9 am", "Monday, 13 pm to 14 pm"])
def test_hours_that_do_not_read_promise_no_time(line):
    assert knowledge.parse_opening_hours(line) is None


@pytest.mark.parametrize("now, told", [
    ("2026-12-04 18:30", "We're closed until Monday 09:00 CET"),  # a Friday evening
    ("2026-12-03 20:00", "We're closed until tomorrow 09:00 CET"),  # a Thursday evening
    ("2026-12-01 07:15", "We're closed until 09:00 CET"),  # a Tuesday morning
    ("2026-10-24 12:00", "We're closed until Monday 09:00 CET"),  # summer time ends on the Sunday between
    ("2026-03-28 12:00", "We're closed until Monday 09:00 CEST"),  # and starts
])
@pytest.mark.django_db(transaction=True)
def test_outside_the_hours_the_customer_is_told_until_when_and_offered_the_email(settings, tmp_path, now, told):
    knowledge_file(settings, tmp_path, "Monday to Friday, 9 am to 6 pm CET")
    moment = datetime.fromisoformat(now).replace(tzinfo=handoff.ZoneInfo("Europe/Berlin"))

    outlook = async_to_sync(handoff.outlook)(moment)

    assert outlook.text.startswith(f"You asked to talk to a person. {told}; leave your email below")
    assert outlook.offer_email is True


@pytest.mark.django_db(transaction=True)
def test_inside_the_hours_the_customer_is_told_a_person_answers_within_n_minutes(settings, tmp_path):
    knowledge_file(settings, tmp_path, "Monday to Friday, 9 am to 6 pm CET")
    moment = datetime(2026, 12, 3, 10, 0, tzinfo=handoff.ZoneInfo("Europe/Berlin"))

    outlook = async_to_sync(handoff.outlook)(moment)

    assert outlook.text.startswith("You asked to talk to a person. A person will answer here, usually within "
                                   f"{handoff.WAIT_FALLBACK_MINUTES} minutes.")
    assert outlook.offer_email is False


@pytest.mark.django_db(transaction=True)
def test_a_staff_page_open_a_moment_ago_counts_as_someone_here_outside_the_hours(client, settings, tmp_path,
                                                                                monkeypatch):
    knowledge_file(settings, tmp_path, "Monday to Friday, 9 am to 6 pm CET")
    sunday = datetime(2026, 12, 6, 12, 0, tzinfo=handoff.ZoneInfo("Europe/Berlin"))
    assert "closed until" in async_to_sync(handoff.outlook)(sunday).text
    monkeypatch.setattr(middleware, "_staff_marked", 0.0)
    User.objects.create_user("visitor", is_staff=True)  # may not answer: does not count
    client.force_login(User.objects.get(username="visitor"))
    client.get("/admin/")
    assert "closed until" in async_to_sync(handoff.outlook)(sunday).text

    monkeypatch.setattr(middleware, "_staff_marked", 0.0)
    client.force_login(staff())
    assert client.get("/admin/").status_code == 200

    outlook = async_to_sync(handoff.outlook)(sunday)
    assert "A person will answer here, usually within" in outlook.text and not outlook.offer_email


# --- N, measured from recent handoffs -----------------------------------------------------


def handed_off(waited: timedelta | None, ago: timedelta) -> Conversation:
    """A conversation whose customer asked for a person `ago`, answered by staff `waited` later."""
    asked = timezone.now() - ago
    conversation = Conversation.objects.create(last_activity_at=timezone.now())
    Message.objects.create(conversation=conversation, seq=0, role="user", content="a human please", created_at=asked)
    Message.objects.create(conversation=conversation, seq=1, role="event", content="You asked ...", created_at=asked)
    if waited is not None:
        Message.objects.create(conversation=conversation, seq=2, role="staff", content="Hi", author="Mia",
                               created_at=asked + waited)
        Message.objects.create(conversation=conversation, seq=3, role="staff", content="Done", author="Mia",
                               created_at=asked + waited + timedelta(hours=5))  # a later reply: not the wait
    return conversation


@pytest.mark.django_db(transaction=True)
def test_n_is_the_median_wait_of_recent_handoffs_rounded_up(settings, tmp_path):
    open_now(settings, tmp_path)
    for minutes in (3, 7.5, 40):
        handed_off(timedelta(minutes=minutes), ago=timedelta(hours=2))
    handed_off(None, ago=timedelta(hours=1))  # not answered yet: no wait to count
    handed_off(timedelta(minutes=500), ago=timedelta(days=8))  # too old

    outlook = async_to_sync(handoff.outlook)(timezone.now())

    assert "usually within 8 minutes." in outlook.text


@pytest.mark.django_db(transaction=True)
def test_with_too_few_handoffs_or_the_database_failing_n_is_the_fallback(settings, tmp_path, monkeypatch):
    open_now(settings, tmp_path)
    handed_off(timedelta(minutes=2), ago=timedelta(hours=2))
    handed_off(timedelta(minutes=2), ago=timedelta(hours=2))
    assert f"within {handoff.WAIT_FALLBACK_MINUTES} minutes." in async_to_sync(handoff.outlook)(timezone.now()).text

    handed_off(timedelta(minutes=2), ago=timedelta(hours=2))
    handoff.forget_measured_wait()

    def fails(now):
        raise OperationalError("the database went away")

    monkeypatch.setattr(handoff, "recent_waits", fails)
    assert f"within {handoff.WAIT_FALLBACK_MINUTES} minutes." in async_to_sync(handoff.outlook)(timezone.now()).text
    monkeypatch.undo()
    handoff.forget_measured_wait()
    assert "within 2 minutes." in async_to_sync(handoff.outlook)(timezone.now()).text


# --- through the API: the notice, the email field, one email ---------------------------------


def leave_email(client, **body):
    response = client.post("/api/handoff/email", data=json.dumps(body), content_type="application/json")
    return response.status_code, response.json()


@pytest.mark.django_db(transaction=True)
def test_inside_the_hours_the_handoff_offers_no_email(client, settings, tmp_path):
    open_now(settings, tmp_path)

    status, body = post_handoff(client)

    assert status == 200 and body["offerEmail"] is False
    assert "A person will answer here, usually within 15 minutes." in body["notice"]


@pytest.mark.django_db(transaction=True)
def test_outside_the_hours_the_email_left_gets_the_first_staff_reply_once_with_a_link_and_no_session_id(
        client, settings, tmp_path, mailoutbox):
    day = closed_now(settings, tmp_path)
    settings.CHAT_SITE_URL = "https://chat.example.com"
    settings.CHAT_HANDOFF_EMAILS = ["support@example.com"]
    status, chat = post_chat(client, message="I want to talk to a human about my refund")
    assert status == 200 and chat["handoff"] == "waiting" and chat["offerEmail"] is True
    assert chat["notice"].startswith(f"You asked to talk to a person. We're closed until {day} 09:00 ")

    assert leave_email(client, sessionId=chat["sessionId"], email="  anna@example.org ") == (
        200, {"sessionId": chat["sessionId"], "email": "anna@example.org"})
    conversation = Conversation.objects.get()
    assert conversation.customer_email == "anna@example.org"
    mia = staff()
    handoff.staff_reply(conversation.pk, mia, "Mia", "Your refund left today.", "t1")
    handoff.staff_reply(conversation.pk, mia, "Mia", "Your refund left today.", "t1")  # the same form again
    handoff.staff_reply(conversation.pk, mia, "Mia", "Anything else?", "t2")
    handoff.flush_email()

    to_customer = [m for m in mailoutbox if m.to == ["anna@example.org"]]
    assert len(to_customer) == 1
    [sent] = to_customer
    assert "Mia replied:\n\nYour refund left today.\n" in sent.body and "Anything else?" not in sent.body
    assert "https://chat.example.com/#join=" in sent.body
    assert chat["sessionId"] not in sent.body and chat["sessionId"] not in sent.subject
    assert conversation.reference in sent.subject
    # Staff were told how long the customer has waited.
    [to_staff] = [m for m in mailoutbox if m.to == ["support@example.com"]]
    assert "Waiting since " in to_staff.body

    # Leaving the address again (a second request) sends the next reply.
    assert leave_email(client, sessionId=chat["sessionId"], email="anna@example.org")[0] == 200
    handoff.staff_reply(conversation.pk, mia, "Mia", "One more thing.", "t3")
    handoff.flush_email()
    assert len([m for m in mailoutbox if m.to == ["anna@example.org"]]) == 2


def join_with(client, token: str):
    response = client.post("/api/devices/join", data=json.dumps({"token": token}), content_type="application/json")
    return response.status_code, response.json()


@pytest.mark.django_db(transaction=True)
def test_the_emails_link_brings_any_browser_into_the_conversation_once(client, settings, tmp_path, mailoutbox):
    closed_now(settings, tmp_path)
    settings.CHAT_SITE_URL = "https://chat.example.com"
    _, chat = post_handoff(client)
    assert leave_email(client, sessionId=chat["sessionId"], email="anna@example.org")[0] == 200
    conversation = Conversation.objects.get()
    handoff.staff_reply(conversation.pk, staff(), "Mia", "Your refund left today.", "t1")
    handoff.flush_email()
    [sent] = mailoutbox
    token = sent.body.split("https://chat.example.com/#join=", 1)[1].split()[0]
    assert len(token) == 43 and "works once, for 7 days" in sent.body
    [link] = DeviceLink.objects.all()
    assert link.kind == "email" and link.code_hash is None and token not in str(vars(link))
    assert timedelta(days=6, hours=23) < link.expires_at - timezone.now() <= timedelta(days=7)
    # "Continue on another device" on the first browser leaves the email's link alone.
    offered = client.post("/api/devices/link", headers={"X-Session-Id": chat["sessionId"]})
    assert offered.status_code == 200 and DeviceLink.objects.filter(kind="email").count() == 1

    status, joined = join_with(client, token)  # the mail client's browser, say on a phone

    assert status == 200 and joined["sessionId"] != chat["sessionId"]
    assert Session.objects.get(session_id=joined["sessionId"]).conversation_id == conversation.pk
    history = client.get("/api/history", headers={"X-Session-Id": joined["sessionId"]}).json()
    assert [m["content"] for m in history["messages"] if m["role"] == "staff"] == ["Your refund left today."]
    assert join_with(client, token)[1]["error"]["code"] == "join_not_found"  # once
    assert DeviceLink.objects.filter(kind="device").count() == 1  # the device offer still stands


@pytest.mark.django_db(transaction=True)
def test_an_expired_email_link_is_refused_and_without_a_site_url_the_email_has_none(
        client, settings, tmp_path, mailoutbox):
    closed_now(settings, tmp_path)
    settings.CHAT_SITE_URL = "https://chat.example.com"
    _, chat = post_handoff(client)
    leave_email(client, sessionId=chat["sessionId"], email="anna@example.org")
    mia = staff()
    handoff.staff_reply(Conversation.objects.get().pk, mia, "Mia", "Hello!", "t1")
    handoff.flush_email()
    token = mailoutbox[0].body.split("#join=", 1)[1].split()[0]
    DeviceLink.objects.update(expires_at=timezone.now() - timedelta(seconds=1))

    assert join_with(client, token)[1]["error"]["code"] == "join_expired"

    settings.CHAT_SITE_URL = ""
    leave_email(client, sessionId=chat["sessionId"], email="anna@example.org")
    handoff.staff_reply(Conversation.objects.get().pk, mia, "Mia", "Hello again!", "t2")
    handoff.flush_email()
    assert "#join=" not in mailoutbox[1].body and "in the browser you wrote from" in mailoutbox[1].body


@pytest.mark.django_db(transaction=True)
def test_without_an_email_left_a_staff_reply_emails_no_customer(client, settings, tmp_path, mailoutbox):
    closed_now(settings, tmp_path)
    _, chat = post_handoff(client)
    conversation = Conversation.objects.get()
    assert leave_email(client, sessionId=chat["sessionId"], email="anna@example.org")[0] == 200
    assert leave_email(client, sessionId=chat["sessionId"], email="") == (
        200, {"sessionId": chat["sessionId"], "email": None})  # taken back

    handoff.staff_reply(conversation.pk, staff(), "Mia", "Hello!", "t1")
    handoff.flush_email()

    assert mailoutbox == []


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("body, status, code", [
    ({"email": "anna@example.org"}, 400, "invalid_session_id"),
    ({"sessionId": "nope", "email": "anna@example.org"}, 400, "invalid_session_id"),
    ({"sessionId": "SESSION"}, 400, "invalid_email"),
    ({"sessionId": "SESSION", "email": 42}, 400, "invalid_email"),
    ({"sessionId": "SESSION", "email": "not an address"}, 400, "invalid_email"),
    ({"sessionId": "SESSION", "email": "a@b"}, 400, "invalid_email"),
    ({"sessionId": "SESSION", "email": "x" * 250 + "@example.org"}, 400, "invalid_email"),
    ({"sessionId": "SESSION", "email": "anna@example.org\nBcc: everyone@example.org"}, 400, "invalid_email"),
    ({"sessionId": "0b8e5f0e-9a3c-4c49-9a51-0d7f8e1c2a3b", "email": "anna@example.org"}, 404, "session_not_found"),
])
def test_a_bad_email_request_gets_a_clear_error(client, body, status, code):
    _, chat = post_handoff(client)
    if body.get("sessionId") == "SESSION":
        body["sessionId"] = chat["sessionId"]

    got_status, got = leave_email(client, **body)

    assert (got_status, got["error"]["code"]) == (status, code)
    assert Conversation.objects.get().customer_email == ""


# --- "anyone there?" is answered; "a human please" hands off ---------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("message", ["Hello, anyone there?", "hello?", "anyone there?", "is anybody there"])
def test_asking_whether_anyone_is_there_is_answered_with_the_offer_of_a_person(client, message):
    status, body = post_chat(client, message=message)

    assert status == 200 and body["handoff"] == "assistant" and body["notice"] is None
    assert "Talk to a person" in body["reply"] and body["offerPerson"] is True


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("message", ["I want to talk to a human", "agent please", "can I speak to someone?"])
def test_an_explicit_request_hands_off_at_once(client, message):
    status, body = post_chat(client, message=message)

    assert status == 200 and body["handoff"] == "waiting" and body["reply"] is None and body["notice"]


@pytest.mark.django_db(transaction=True)
def test_an_ordinary_question_comes_without_the_offer(client):
    assert post_chat(client, message="How long does shipping take?")[1]["offerPerson"] is False


# --- check --deploy -------------------------------------------------------------------------


@pytest.mark.parametrize("url, warned", [("", "conversations.W003"), ("http://chat.example.com", "conversations.W004"),
                                         ("https://chat.example.com", None)])
def test_check_deploy_warns_when_the_emails_links_cannot_be_clicked_or_are_not_https(settings, url, warned):
    settings.CHAT_SITE_URL = url

    ids = {message.id for message in run_checks(include_deployment_checks=True)}

    assert {"conversations.W003", "conversations.W004"} & ids == ({warned} if warned else set())


@pytest.mark.django_db(transaction=True)
def test_the_address_left_is_shown_only_to_staff_who_may_answer(client, settings, tmp_path):
    closed_now(settings, tmp_path)
    _, chat = post_handoff(client)
    assert leave_email(client, sessionId=chat["sessionId"], email="anna@example.org")[0] == 200
    page = f"/admin/conversations/conversation/{Conversation.objects.get().pk}/change/"
    viewer = User.objects.create_user("viewer", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_conversation"))

    client.force_login(viewer)
    assert "anna@example.org" not in client.get(page).content.decode()
    client.force_login(staff())
    assert "anna@example.org" in client.get(page).content.decode()


def test_a_time_zone_that_does_not_exist_stops_the_site_with_one_line():
    env = {key: value for key, value in os.environ.items() if not key.startswith(("DJANGO_", "CHAT_"))}
    env.update(DJANGO_DEBUG="1", DJANGO_SECRET_KEY="t", CHAT_SHOP_TIMEZONE="Mars/Olympus_Mons")

    result = subprocess.run([sys.executable, "manage.py", "check"], cwd=settings.BASE_DIR, env=env,
                            capture_output=True, text=True)

    assert result.returncode != 0
    assert result.stderr.strip() == ("chatsite: CHAT_SHOP_TIMEZONE='Mars/Olympus_Mons' is not a time zone: "
                                     "use a name such as Europe/Berlin.")


# --- dependencies failing ------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_with_redis_stopped_a_staff_page_still_counts_in_its_own_process_and_nothing_fails(
        client, settings, tmp_path, own_redis, monkeypatch):
    knowledge_file(settings, tmp_path, "Monday to Friday, 9 am to 6 pm CET")
    sunday = datetime(2026, 12, 6, 12, 0, tzinfo=handoff.ZoneInfo("Europe/Berlin"))
    own_redis.stop()
    assert "closed until" in async_to_sync(handoff.outlook)(sunday).text
    monkeypatch.setattr(middleware, "_staff_marked", 0.0)
    client.force_login(staff())

    assert client.get("/admin/").status_code == 200

    assert "usually within" in async_to_sync(handoff.outlook)(sunday).text


class FailingMail:
    """An email backend whose server is down."""

    def __init__(self, *args, **kwargs):
        pass

    def send_messages(self, messages):
        raise ConnectionRefusedError("the mail server is down")


@pytest.mark.django_db(transaction=True)
def test_with_the_mail_server_down_the_staff_reply_stands_and_no_second_email_is_tried(
        client, settings, tmp_path, mailoutbox, caplog):
    closed_now(settings, tmp_path)
    _, chat = post_handoff(client)
    assert leave_email(client, sessionId=chat["sessionId"], email="anna@example.org")[0] == 200
    conversation = Conversation.objects.get()
    settings.EMAIL_BACKEND = f"{__name__}.FailingMail"

    _, stored = handoff.staff_reply(conversation.pk, staff(), "Mia", "Hello!", "t1")
    handoff.flush_email()

    assert stored and conversation.messages.filter(role="staff").count() == 1
    assert "handoff: the email to the customer failed" in caplog.text
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    handoff.staff_reply(conversation.pk, User.objects.get(), "Mia", "Still there?", "t2")
    handoff.flush_email()
    assert [m for m in mailoutbox if m.to == ["anna@example.org"]] == []  # at most one, never two


@pytest.mark.django_db(transaction=True)
def test_the_history_offers_the_email_again_only_while_waiting_with_the_shop_closed(client, settings, tmp_path):
    closed_now(settings, tmp_path)
    _, chat = post_handoff(client)

    def offered():
        return client.get("/api/history", headers={"X-Session-Id": chat["sessionId"]}).json()["offerEmail"]

    assert offered() is True
    open_now(settings, tmp_path)
    assert offered() is False
    closed_now(settings, tmp_path)
    handoff.staff_reply(Conversation.objects.get().pk, staff(), "Mia", "Hello!", "t1")
    assert offered() is False  # answered: the page shows the reply
