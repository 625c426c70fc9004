"""The honest handoff on the chat page, in headless Chromium, against the site as deployed (gunicorn,
PostgreSQL, Redis, fake LLM): outside opening hours the customer is told until when, leaves an email,
and later gets one email with the staff reply; "anyone there?" is answered with a "Talk to a person"
button.

Staff reply through conversations/handoff.py on the test database, as the admin does (the admin's
own page is another test's), so the email to the customer is sent by this process (mailoutbox).
"""

import pytest
from django.contrib.auth.models import User

from conversations import handoff, shared_state
from conversations.models import Conversation
from devtools.processes import Site

from .browser import box, expect, send, stored_id, wait_idle
from .helpers import site_env

pytestmark = pytest.mark.browser

DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


@pytest.fixture(scope="module")
def closed_site(django_db_setup, django_db_blocker, fake_llm_server, tmp_path_factory):
    """The deployed site with a knowledge file whose only opening day is three days from today."""
    from django.utils import timezone

    day = DAYS[(handoff.shop_time(timezone.now()).weekday() + 3) % 7]
    faq = tmp_path_factory.mktemp("knowledge") / "faq.md"
    faq.write_text("# FAQ\n\n## How long does shipping take?\n\n3 to 5 days.\n\n# Contact\n\n"
                   f"Opening hours: {day}, 9 am to 6 pm CET\nEmail: support@example.com\n", encoding="utf-8")
    with django_db_blocker.unblock():
        env = site_env(fake_llm_server, CHAT_KNOWLEDGE_FILE=str(faq), CHAT_SHOP_TIMEZONE="Europe/Berlin")
    server = Site(env)
    server.day = day
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _nobody_here():
    """No staff page has marked "someone is here" (another test's admin page may have)."""
    shared_state.delete_many([handoff.STAFF_SEEN])
    yield
    shared_state.delete_many([handoff.STAFF_SEEN])


def test_outside_hours_the_customer_leaves_an_email_and_gets_one_email_with_the_staff_reply(
        closed_site, postgres, llm, browsing, settings, mailoutbox):
    settings.CHAT_SITE_URL = closed_site.url
    browsing.url = closed_site.url
    page = browsing.page()
    send(page, "Hi")
    email_form = page.get_by_test_id("handoff-email")
    expect(email_form).to_be_hidden()

    page.get_by_role("button", name="Talk to a person").click()

    expect(page.locator('#log [data-role="event"]').last).to_contain_text(
        f"We're closed until {closed_site.day} 09:00")
    expect(email_form).to_be_visible()
    address = page.get_by_role("textbox", name="Leave your email")
    address.fill("not an address")
    page.get_by_role("button", name="Save email").click()
    expect(page.locator("#handoff-email-status")).to_contain_text("Please enter an email address")
    address.fill("anna@example.org")
    address.press("Enter")
    expect(page.locator("#handoff-email-status")).to_have_text(
        "Thank you. We'll write to anna@example.org when someone from our team replies.")
    conversation = Conversation.objects.get(session_id=stored_id(page))
    assert conversation.customer_email == "anna@example.org"

    mia = User.objects.create_user("mia", is_staff=True)
    handoff.staff_reply(conversation.pk, mia, "Mia", "Your parcel left our warehouse today.", "reply-1")
    handoff.staff_reply(conversation.pk, mia, "Mia", "Anything else I can do?", "reply-2")
    handoff.flush_email()

    expect(page.locator('#log [data-role="staff"]')).to_have_count(2, timeout=8_000)
    expect(email_form).to_be_hidden()  # a person answered here: nothing left to wait for by email
    [sent] = [m for m in mailoutbox if m.to == ["anna@example.org"]]
    assert "Your parcel left our warehouse today." in sent.body and "Anything else" not in sent.body
    assert stored_id(page) not in sent.body

    # The email's link, opened on another device (the phone the mail arrives on): it asks, then
    # continues the same conversation there, under a session of its own.
    link = next(word for word in sent.body.split() if "#join=" in word)
    assert link.startswith(closed_site.url + "/#join=")
    phone = browsing.page()
    phone.goto(link)
    phone.get_by_test_id("join-confirm").click()
    expect(phone.locator('#log [data-role="staff"]')).to_have_count(2)
    assert stored_id(phone) not in (None, stored_id(page))
    assert Conversation.objects.of_session(stored_id(phone)).get() == conversation
    send(phone, "Thanks, that is all.")
    expect(page.locator('#log [data-role="user"]').last).to_have_text("Thanks, that is all.", timeout=8_000)


def test_anyone_there_is_answered_with_a_button_that_asks_for_a_person(live_site, page):
    send(page, "Hello, anyone there?")
    expect(page.get_by_test_id("handoff-status")).to_be_hidden()  # not handed off
    offer = page.locator('#log [data-role="assistant"] .person-offer')
    expect(offer).to_have_count(1)

    send(page, "How long does shipping take?")
    expect(page.locator('#log [data-role="assistant"] .person-offer')).to_have_count(1)  # not under this one

    offer.click()
    expect(page.get_by_test_id("handoff-status")).to_have_attribute("data-state", "waiting")
    wait_idle(page)
    assert box(page).is_enabled()


def test_after_a_reload_the_email_field_is_offered_again_while_the_shop_is_closed(
        closed_site, postgres, llm, browsing):
    browsing.url = closed_site.url
    page = browsing.page()
    page.get_by_role("button", name="Talk to a person").click()
    expect(page.get_by_test_id("handoff-email")).to_be_visible()

    page.reload()

    expect(page.get_by_test_id("handoff-status")).to_have_attribute("data-state", "waiting")
    expect(page.get_by_test_id("handoff-email")).to_be_visible()
    page.get_by_role("textbox", name="Leave your email").fill("anna@example.org")
    page.get_by_role("button", name="Save email").click()
    expect(page.locator("#handoff-email-status")).to_contain_text("We'll write to anna@example.org")
    assert Conversation.objects.get(session_id=stored_id(page)).customer_email == "anna@example.org"
