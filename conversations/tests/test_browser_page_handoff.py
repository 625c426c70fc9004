"""The chat page when the customer needs a person, and at the limits, in headless Chromium.

Against the site as deployed (gunicorn, PostgreSQL, Redis, fake LLM). Staff act
here through conversations/handoff.py on the test database, as the admin does;
the page must show what they did without a reload. (The whole story with staff
in a second browser, in the admin, is in the handoff tests.)
"""

import re

import pytest
from django.contrib.auth.models import User

from conversations import handoff, knowledge
from conversations.models import Conversation, Message
from devtools.processes import Site

from .browser import box, expect, send, stored_id, wait_idle
from .helpers import site_env

pytestmark = pytest.mark.browser

# A staff reply reaches an open page within about two seconds (long poll, woken
# within CHAT_UPDATES_TICK); the margin is for a loaded test machine.
LIVE = 4_000


def talk_to_a_person(page):
    page.get_by_role("button", name="Talk to a person").click()
    expect(page.get_by_test_id("handoff-status")).to_have_attribute("data-state", "waiting")
    expect(page.locator('#log [data-role="event"]').last).to_contain_text("You asked to talk to a person")


def conversation_of(page):
    return Conversation.objects.get(session_id=stored_id(page))


@pytest.fixture
def staff_member(live_site):
    return User.objects.create_user("mia", password="a-long-test-password", is_staff=True)


def test_talk_to_a_person_says_so_and_later_messages_are_kept_for_staff(live_site, page, llm):
    send(page, "Hi")
    banner = page.get_by_test_id("handoff-status")
    expect(banner).to_be_hidden()

    talk_to_a_person(page)

    expect(banner).to_be_visible()
    expect(banner).to_contain_text("Waiting for a person")
    expect(page.get_by_role("button", name="Talk to a person")).to_be_hidden()
    # The notice (hours, contact) is in the log as a centred system line.
    notice = page.locator('#log [data-role="event"] .bubble')
    expect(notice).to_contain_text(knowledge.contact_details().splitlines()[0])
    assert notice.evaluate("node => getComputedStyle(node).textAlign") == "center"
    assert conversation_of(page).handoff == "waiting"

    box(page).fill("My parcel arrived damaged")
    box(page).press("Enter")

    question = page.locator('#log [data-role="user"]').last
    expect(question.locator(".sent-mark")).to_have_text("Sent")
    wait_idle(page)
    expect(page.locator(".typing")).to_have_count(0)
    expect(page.locator('#log [data-role="assistant"]')).to_have_count(1)  # only the answer to "Hi"
    assert len(llm.requests()) == 1
    stored = list(conversation_of(page).messages.values_list("role", "content"))
    assert stored[-1] == ("user", "My parcel arrived damaged")

    page.reload()
    expect(banner).to_have_attribute("data-state", "waiting")
    expect(page.locator('#log [data-role]')).to_have_count(4)


def test_a_staff_reply_appears_in_every_open_tab_without_a_reload(live_site, browsing, staff_member):
    context = browsing.context()
    first = browsing.page(context)
    send(first, "Hi")
    second = browsing.page(context)
    expect(second.locator("#log [data-role]")).to_have_count(2)
    talk_to_a_person(first)
    expect(second.get_by_test_id("handoff-status")).to_have_attribute("data-state", "waiting")
    for tab in (first, second):
        tab.evaluate("() => { window.notReloaded = true; }")

    handoff.staff_reply(conversation_of(first).pk, staff_member, "Mia", "Hello, **Mia** here.", "reply-1")

    for tab in (first, second):
        reply = tab.locator('#log [data-role="staff"]')
        expect(reply).to_have_count(1, timeout=LIVE)
        expect(reply.locator(".author")).to_have_text("Mia")
        expect(reply.locator(".staff-badge")).to_have_text("Staff")
        expect(reply.locator(".bubble strong")).to_have_text("Mia")
        expect(tab.get_by_test_id("handoff-status")).to_contain_text("You are talking to Mia")
        assert tab.evaluate("() => window.notReloaded") is True
    # A person's reply does not look like the assistant's.
    colours = first.evaluate(
        """() => ['assistant', 'staff'].map(role =>
            getComputedStyle(document.querySelector(`[data-role="${role}"] .bubble`)).backgroundColor)"""
    )
    assert colours[0] != colours[1]


def test_hand_back_returns_the_conversation_to_the_assistant(live_site, page, llm, staff_member):
    send(page, "Hi")
    talk_to_a_person(page)
    conversation = conversation_of(page)
    handoff.staff_reply(conversation.pk, staff_member, "Mia", "Glad to help.", "reply-1")
    expect(page.locator('#log [data-role="staff"]')).to_have_count(1, timeout=LIVE)

    handoff.hand_back(conversation.pk, staff_member, "Mia")

    expect(page.locator('#log [data-role="event"]').last).to_contain_text(
        "Mia handed you back to the assistant", timeout=LIVE
    )
    expect(page.get_by_test_id("handoff-status")).to_be_hidden()
    expect(page.get_by_role("button", name="Talk to a person")).to_be_visible()
    send(page, "Are you there?")
    expect(page.locator('#log [data-role="assistant"] .bubble').last).to_have_text("Echo: Are you there?")


def test_the_poll_pauses_while_the_tab_is_hidden_and_asks_at_once_when_shown(live_site, page, staff_member):
    send(page, "Hi")
    talk_to_a_person(page)
    polls, open_polls, most_open = [], set(), [0]

    def started(request):
        if "/api/updates" in request.url:
            polls.append(request)
            open_polls.add(request)
            most_open[0] = max(most_open[0], len(open_polls))

    page.on("request", started)
    page.on("requestfinished", lambda request: open_polls.discard(request))
    page.on("requestfailed", lambda request: open_polls.discard(request))
    page.evaluate("""() => {
        Object.defineProperty(document, 'hidden', { configurable: true, get: () => true });
        Object.defineProperty(document, 'visibilityState', { configurable: true, get: () => 'hidden' });
        document.dispatchEvent(new Event('visibilitychange'));
    }""")
    page.wait_for_timeout(300)
    asked_while_visible = len(polls)

    handoff.staff_reply(conversation_of(page).pk, staff_member, "Mia", "Hello from Mia.", "reply-1")
    page.wait_for_timeout(2_500)

    assert len(polls) == asked_while_visible  # hidden: not asked, so not shown
    expect(page.locator('#log [data-role="staff"]')).to_have_count(0)

    page.evaluate("""() => {
        delete document.hidden;
        delete document.visibilityState;
        document.dispatchEvent(new Event('visibilitychange'));
    }""")

    expect(page.locator('#log [data-role="staff"]')).to_have_count(1, timeout=2_000)
    assert most_open[0] == 1  # one loop per tab


def test_waits_are_said_in_words(page):
    said = page.evaluate("""async () => {
        const { inAbout } = await import('/static/chat/view.js');
        return [5, 29, 45, 61, 21 * 60, 3600, 5 * 3600].map(inAbout);
    }""")

    assert said == [
        "in a few seconds", "in a few seconds", "in about a minute", "in about a minute",
        "in about 21 minutes", "in about an hour", "in about 5 hours",
    ]


def test_the_shop_name_is_on_the_page(page, settings):
    expect(page).to_have_title(re.compile(re.escape(settings.CHAT_SHOP_NAME), re.IGNORECASE))
    expect(page.get_by_role("heading", level=1)).to_have_text(re.compile(re.escape(settings.CHAT_SHOP_NAME), re.I))


@pytest.fixture(scope="module")
def limited_site(django_db_setup, django_db_blocker, fake_llm_server):
    """The deployed site with one message an hour per conversation (after the first)."""
    with django_db_blocker.unblock():
        env = site_env(fake_llm_server, CHAT_RATE_LIMIT_SESSION="1/h")
    server = Site(env)
    yield server
    server.stop()


def test_a_refused_message_says_when_to_come_back_and_how_to_reach_the_shop(
    limited_site, postgres, llm, browsing
):
    browsing.url = limited_site.url
    page = browsing.page()
    send(page, "First")
    send(page, "Second")

    send(page, "Third")

    notice = page.locator("#notice")
    expect(notice).to_be_visible()
    expect(notice).to_contain_text(re.compile(
        r"Please try again in (a few seconds|about a minute|about \d+ minutes|about an hour)\."
    ))
    expect(notice.locator(".notice-contact")).to_have_text(knowledge.contact_details().strip())
    expect(box(page)).to_have_value("Third")  # not stored: given back to send later
    assert [m["content"] for m in llm.requests()[-1]["messages"][1:]][-1] == "Second"
    session_messages = Message.objects.filter(conversation__session_id=stored_id(page))
    assert list(session_messages.values_list("content", flat=True)) == ["First", "Echo: First", "Second", "Echo: Second"]


def test_the_poll_backs_off_while_the_server_fails_and_recovers(live_site, page, staff_member):
    send(page, "Hi")
    talk_to_a_person(page)
    failing = []

    def fail(route):
        failing.append(route.request.url)
        route.fulfill(status=503, content_type="application/json",
                      body='{"error": {"code": "unavailable", "message": "Down for a moment."}}')

    page.route("**/api/updates?*", fail)
    page.evaluate("() => document.dispatchEvent(new Event('visibilitychange'))")  # drop the poll in flight
    page.wait_for_timeout(3_500)

    # Asked at 0 s, then after 1 s and 2 s more: not every 250 ms.
    assert 2 <= len(failing) <= 4, failing
    page.unroute("**/api/updates?*")
    handoff.staff_reply(conversation_of(page).pk, staff_member, "Mia", "Back again.", "reply-1")
    expect(page.locator('#log [data-role="staff"]')).to_have_count(1, timeout=4_000 + LIVE)
