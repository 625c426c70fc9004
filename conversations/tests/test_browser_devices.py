"""Continue on another device, and "Not you?", in two and three headless Chromium browsers against
the site as deployed (gunicorn, PostgreSQL, Redis, the fake LLM): a link and a typed code each bring
a browser into the conversation, all continue live, a used or expired code and fifty wrong ones are
refused, a previewer's GET of the link consumes nothing, "Not you?" ends one browser only and
"Delete" ends them all."""

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from conversations.models import Conversation, DeviceLink, Session
from devtools.processes import Site

from .browser import Browsing, box, expect, send, stored_id, wait_idle
from .client import SiteClient
from .helpers import site_env

pytestmark = pytest.mark.browser

# What another browser writes reaches an open page within about two seconds; the margin is for a
# loaded test machine.
LIVE = 6_000


def make_offer(page) -> tuple[str, str]:
    """Open the devices dialog and make a link and code; (link, code)."""
    page.get_by_test_id("devices-open").click()
    page.get_by_test_id("offer-make").click()
    expect(page.get_by_test_id("offer-code")).to_have_text(re.compile(r"^[0-9A-Z]{5}-[0-9A-Z]{5}$"))
    expect(page.locator("#offer-qr svg")).to_be_visible()
    link = page.get_by_test_id("offer-link").input_value()
    code = page.get_by_test_id("offer-code").text_content()
    page.locator("#devices-close").click()
    return link, code


def type_code(page, code: str):
    page.get_by_test_id("join-with-code").click()
    page.get_by_test_id("join-code").fill(code)
    page.get_by_test_id("join-confirm").click()


def bubbles(page, role: str):
    return page.locator(f'#log [data-role="{role}"] .bubble')


def test_a_link_and_a_code_bring_two_more_browsers_in_and_all_three_continue_live(browsing, llm):
    phone = browsing.page()
    send(phone, "Where is my parcel?")
    link, code = make_offer(phone)
    assert link.startswith(browsing.url + "/#join=")

    # A link previewer (or a scanner) fetches the link: nothing is consumed.
    preview = SiteClient(browsing.url).request("GET", link.removeprefix(browsing.url))
    assert preview.status == 200 and DeviceLink.objects.count() == 1

    # The laptop has a conversation of its own: it is asked before it leaves it.
    laptop = browsing.page()
    send(laptop, "My own question")
    own = stored_id(laptop)
    laptop.goto(link)
    expect(laptop.locator("#join-dialog")).to_be_visible()
    expect(laptop.locator("#join-leave")).to_be_visible()
    assert "#join=" not in laptop.url  # out of the address bar, the history and bookmarks
    laptop.get_by_test_id("join-confirm").click()
    expect(bubbles(laptop, "user").first).to_have_text("Where is my parcel?")
    expect(bubbles(laptop, "user")).to_have_count(1)
    assert stored_id(laptop) not in (own, stored_id(phone))

    # The tablet types a code (loosely: lower case, a space for the hyphen).
    link, code = make_offer(phone)
    tablet = browsing.page()
    type_code(tablet, code.lower().replace("-", " "))
    expect(bubbles(tablet, "user").first).to_have_text("Where is my parcel?")
    assert len({stored_id(p) for p in (phone, laptop, tablet)}) == 3

    # Each writes; the others see it without a reload.
    send(laptop, "From the laptop")
    for page in (phone, tablet):
        expect(bubbles(page, "user").last).to_have_text("From the laptop", timeout=LIVE)
        expect(bubbles(page, "assistant").last).to_have_text("Echo: From the laptop", timeout=LIVE)
    send(tablet, "From the tablet")
    for page in (phone, laptop):
        expect(bubbles(page, "user").last).to_have_text("From the tablet", timeout=LIVE)

    # The devices, as the phone sees them: three, this one marked.
    phone.get_by_test_id("devices-open").click()
    items = phone.get_by_test_id("device-list").locator("li")
    expect(items).to_have_count(3)
    expect(items.first).to_contain_text("(this browser)")
    expect(items.first).to_contain_text(re.compile(r"Chrome|Chromium|A browser"))
    phone.locator("#devices-close").click()

    # A used code is refused with a clear message.
    used = browsing.page()
    type_code(used, code)
    expect(used.get_by_test_id("join-error")).to_contain_text("used already")
    assert Session.objects.count() == 4  # the three, and the laptop's own conversation's

    # "Not you?" on the tablet ends the tablet only: it starts fresh, the others go on.
    tablet.get_by_test_id("devices-open").click()
    tablet.get_by_test_id("not-you").click()
    expect(bubbles(tablet, "user")).to_have_count(0)
    expect(tablet.locator("#notice")).to_contain_text("left the conversation")
    assert stored_id(tablet) is None
    send(tablet, "A stranger's question")
    assert Conversation.objects.count() == 3  # the phone's, the laptop's own, the stranger's
    send(phone, "Still here")
    expect(bubbles(laptop, "user").last).to_have_text("Still here", timeout=LIVE)
    assert "Still here" not in tablet.locator("#log").inner_text()

    # Delete on the phone ends every browser: the laptop's page learns it at once.
    phone.get_by_role("button", name="Delete this conversation").click()
    phone.get_by_role("button", name="Delete", exact=True).click()
    expect(bubbles(phone, "user")).to_have_count(0)
    expect(bubbles(laptop, "user")).to_have_count(0, timeout=LIVE)
    expect(laptop.locator("#notice")).to_contain_text("no longer kept", timeout=LIVE)
    assert stored_id(laptop) is None
    assert Session.objects.count() == 2  # the laptop's own conversation and the stranger's


def test_a_link_opened_in_the_browser_of_its_conversation_asks_nothing_and_stays_usable(browsing, llm):
    """An emailed link clicked in the browser that holds the conversation: no dialog offering to
    leave it for itself, no second session; the link still brings another browser in. A used link
    opened in a browser with a conversation of its own says so at once."""
    phone = browsing.page()
    send(phone, "Where is my parcel?")
    own = stored_id(phone)
    link, _ = make_offer(phone)

    with phone.expect_response(lambda response: response.url.endswith("/api/devices/join")) as checked:
        phone.goto(link)
    assert checked.value.json() == {"sessionId": own, "newSession": False, "sameConversation": True}
    expect(bubbles(phone, "user").first).to_have_text("Where is my parcel?")
    wait_idle(phone)
    expect(phone.locator("#join-dialog")).to_be_hidden()
    assert "#join=" not in phone.url and stored_id(phone) == own
    assert Session.objects.count() == 1 and DeviceLink.objects.count() == 1

    laptop = browsing.page()
    laptop.goto(link)
    laptop.get_by_test_id("join-confirm").click()
    expect(bubbles(laptop, "user").first).to_have_text("Where is my parcel?")
    assert Session.objects.count() == 2

    stranger = browsing.page()
    send(stranger, "My own question")
    stranger.goto(link)
    expect(stranger.locator("#join-dialog")).to_be_visible()
    expect(stranger.get_by_test_id("join-error")).to_contain_text("used already")


def test_a_customer_ends_another_browser_from_the_devices_list(browsing, llm):
    phone = browsing.page()
    send(phone, "Hi")
    link, _ = make_offer(phone)
    lost = browsing.page()
    lost.goto(link)
    lost.get_by_test_id("join-confirm").click()
    expect(bubbles(lost, "user").first).to_have_text("Hi")

    phone.get_by_test_id("devices-open").click()
    phone.get_by_role("button", name=re.compile(r"^End ")).click()
    expect(phone.get_by_test_id("device-list").locator("li")).to_have_count(1)

    expect(bubbles(lost, "user")).to_have_count(0, timeout=LIVE)
    assert stored_id(lost) is None
    assert Session.objects.count() == 1


def test_an_expired_code_is_refused_with_a_clear_message(browsing, llm):
    phone = browsing.page()
    send(phone, "Hi")
    _, code = make_offer(phone)
    DeviceLink.objects.update(expires_at=timezone.now() - timedelta(seconds=1))

    other = browsing.page()
    type_code(other, code)

    expect(other.get_by_test_id("join-error")).to_contain_text("expired")
    assert stored_id(other) is None


def test_a_browser_with_a_conversation_types_a_code_after_it_is_told_it_leaves_its_own(browsing, llm):
    phone = browsing.page()
    send(phone, "Hi from the phone")
    _, code = make_offer(phone)
    laptop = browsing.page()
    send(laptop, "My own conversation")
    own = stored_id(laptop)

    laptop.get_by_test_id("devices-open").click()
    laptop.get_by_test_id("code-enter").click()
    expect(laptop.locator("#join-leave")).to_be_visible()
    laptop.get_by_role("button", name="Cancel").click()
    assert stored_id(laptop) == own  # cancelled: nothing changed
    expect(bubbles(laptop, "user").first).to_have_text("My own conversation")

    laptop.get_by_test_id("devices-open").click()
    laptop.get_by_test_id("code-enter").click()
    laptop.get_by_test_id("join-code").fill(code)
    laptop.get_by_test_id("join-confirm").click()
    expect(bubbles(laptop, "user").first).to_have_text("Hi from the phone")
    assert stored_id(laptop) not in (own, stored_id(phone))


@pytest.fixture
def strict_site(live_site, fake_llm_server, own_redis):
    """The deployed site with the join lockout on (10 refusals an hour per address), counted in a
    redis-server of this test's own."""
    site = Site(site_env(fake_llm_server, REDIS_URL=own_redis.url, CHAT_DEVICE_JOIN_FAILURES_IP="10/h"))
    yield site
    site.stop()


def test_fifty_wrong_codes_are_refused_then_locked_out_and_the_right_one_too(browser, strict_site):
    browsing = Browsing(browser, strict_site.url)
    try:
        phone = browsing.page()
        send(phone, "Hi")
        _, code = make_offer(phone)

        guesser = browsing.page()
        guesser.get_by_test_id("join-with-code").click()
        error = guesser.get_by_test_id("join-error")
        wrong = "0000000000" if code.replace("-", "") != "0000000000" else "1111111111"
        for n in range(50):
            guesser.get_by_test_id("join-code").fill(wrong)
            guesser.get_by_test_id("join-confirm").click()
            expect(error).to_contain_text("Too many wrong codes" if n >= 10 else "not valid")
            guesser.evaluate("() => { document.getElementById('join-error').textContent = ''; }")

        guesser.get_by_test_id("join-code").fill(code)
        guesser.get_by_test_id("join-confirm").click()
        expect(error).to_contain_text("Too many wrong codes")
        assert stored_id(guesser) is None
        wait_idle(phone)
        assert box(phone).is_enabled()
    finally:
        browsing.close()
    assert browsing.errors == []
