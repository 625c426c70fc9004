"""The chat on a shop's own pages (static/widget.js), in headless Chromium.

The shop is another origin (devtools/shop.py: another port on 127.0.0.1, with
the strict CSP of docs/embed.md); the chat is the site as deployed, with that
origin in CHAT_EMBED_ORIGINS. A second shop, not listed, plays a page that may
not show the chat and a frame that forges messages. What the shop's page keeps
(its localStorage) and what the server stored are both checked.
"""

import re

import pytest
from django.contrib.auth.models import User
from django.db import connection

from conversations import handoff
from conversations.models import Conversation
from devtools.processes import Site
from devtools.shop import Shop, shop_page

from .browser import Browsing, box, expect, send
from .helpers import need, site_env

pytestmark = pytest.mark.browser

UUID4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
FORGED = "11111111-2222-4333-8444-555555555555"
# A staff reply reaches an open page within about two seconds (long poll); the margin is for a loaded machine.
LIVE = 6_000

FORGE_JS = f"""
// Every message the chat's frame and the loader take, with the right shape, from the wrong window.
const forged = {{ sessionId: "{FORGED}" }};
const shop = window.parent;
shop.postMessage({{ ...forged, type: "shopchat:session" }}, "*");
shop.postMessage({{ type: "shopchat:close" }}, "*");
for (let i = 0; i < shop.frames.length; i++) {{
  const frame = shop.frames[i];
  if (frame === window) continue;
  frame.postMessage({{ ...forged, type: "shopchat:init", remembered: true, open: true, greeting: "Forged" }}, "*");
  frame.postMessage({{ ...forged, type: "shopchat:session" }}, "*");
  frame.postMessage({{ type: "shopchat:open", open: false }}, "*");
}}
document.documentElement.dataset.sent = "yes";
"""
FORGE_HTML = '<!doctype html><title>forging</title><script src="/forge.js"></script>'


@pytest.fixture(scope="module")
def shops():
    shop, stranger = Shop(), Shop()
    yield shop, stranger
    shop.stop()
    stranger.stop()


@pytest.fixture(scope="module")
def chat_site(django_db_setup, django_db_blocker, fake_llm_server, static_files, shops):
    """The deployed chat, which the first shop (only) may embed."""
    shop, stranger = shops
    with django_db_blocker.unblock():
        need(connection.vendor == "postgresql", "PostgreSQL (set DATABASE_URL)")
        env = site_env(fake_llm_server, CHAT_EMBED_ORIGINS=shop.url)
    server = Site(env)
    for each in shops:
        each.chat_url = server.url
        each.pages["/"] = shop_page(server.url, "Shop home", links=("/page2",), greeting="Questions about your order?")
        each.pages["/page2"] = shop_page(server.url, "Shop page two", links=("/",), position="left")
        each.pages["/forge.html"] = FORGE_HTML
        each.pages["/forge.js"] = FORGE_JS
    shop.frames = [stranger.url]  # the shop shows a frame of someone else's (which forges messages)
    yield server
    server.stop()


class Shopping(Browsing):
    """Browser contexts on the shop's pages; errors any page or frame threw fail the test."""

    def open(self, url, context=None):
        page = (context or self.context()).new_page()
        page.on("pageerror", lambda error: self.errors.append(f"page error: {error}"))
        page.on("console", self._console)
        page.goto(url)
        return page


@pytest.fixture
def shopping(browser, chat_site, postgres, llm):
    shopping = Shopping(browser, chat_site.url)
    yield shopping
    shopping.close()
    assert shopping.errors == []


def launcher(page):
    return page.get_by_role("button", name=re.compile("^Chat with us"))


def chat(page):
    return page.frame_locator('iframe[title="Chat with us"]')


def open_chat(page):
    """Click the launcher; the chat is up once its message box has the focus."""
    launcher(page).click()
    frame = chat(page)
    expect(box(frame)).to_be_focused()
    return frame


def frame_is_up(page):
    """Wait until the chat's frame has loaded its scripts: its composer takes input."""
    page.frame(url=re.compile(r"/embed\?")).wait_for_function(
        "() => document.getElementById('composer').inert === false")


def shop_id(page):
    return page.evaluate("() => localStorage.getItem('shopchat:sessionId')")


def shown(frame):
    return frame.locator("#log [data-role] .bubble")


def seen_by_llm(llm):
    return [m["content"] for m in llm.requests()[-1]["messages"][1:]]


def test_the_first_message_keeps_its_id_in_the_shops_storage_and_the_conversation_follows_the_customer(
    shops, shopping, chat_site, llm
):
    shop, _ = shops
    requested = []
    context = shopping.context()
    context.on("request", lambda request: requested.append(request.url))
    page = shopping.open(shop.url + "/", context)
    expect(launcher(page)).to_be_visible()
    # One global; and with no conversation to follow, nothing more is loaded, even once the page is idle.
    assert page.evaluate("""() => {
      const blank = document.body.appendChild(document.createElement("iframe"));
      const added = Object.getOwnPropertyNames(window).filter((name) => !(name in blank.contentWindow) && !/^[0-9]+$/.test(name)); // (not frame indexes)
      blank.remove();
      return added;
    }""") == ["ShopChat"]
    page.evaluate("() => new Promise((resolve) => requestIdleCallback(() => setTimeout(resolve, 200)))")
    assert [url for url in requested if url.startswith(chat_site.url)] == [f"{chat_site.url}/static/widget.js"]

    launcher(page).click()

    frame = chat(page)
    expect(box(frame)).to_be_focused()
    expect(frame.get_by_role("heading", name="Questions about your order?")).to_be_visible()
    send(frame, "Hi")
    expect(shown(frame).last).to_have_text("Echo: Hi")
    session_id = shop_id(page)
    assert UUID4.fullmatch(session_id)
    # In the shop's storage, not the chat frame's (which browsers partition or wipe).
    assert page.frame(url=f"{chat_site.url}/embed?lang=en").evaluate("() => localStorage.length") == 0
    assert Conversation.objects.get(session_id=session_id).messages.count() == 2

    page.reload()  # the panel stays open, on the same conversation
    expect(shown(chat(page))).to_have_text(["Hi", "Echo: Hi"])

    page.get_by_role("link", name="/page2").click()
    expect(page).to_have_title("Shop page two")
    frame = chat(page)
    expect(shown(frame)).to_have_text(["Hi", "Echo: Hi"])
    send(frame, "And returns?")
    expect(shown(frame).last).to_have_text("Echo: And returns?")
    assert seen_by_llm(llm) == ["Hi", "Echo: Hi", "And returns?"]
    assert shop_id(page) == session_id

    box(frame).press("Escape")  # closes the panel; the focus goes back to the launcher
    expect(launcher(page)).to_have_attribute("aria-expanded", "false")
    expect(launcher(page)).to_be_focused()
    expect(page.locator("iframe")).to_be_hidden()

    page.reload()  # closed stays closed; the frame is loaded when the page is idle, to follow the conversation
    expect(launcher(page)).to_have_attribute("aria-expanded", "false")
    expect(page.locator("iframe")).to_have_count(1)
    launcher(page).click()
    expect(shown(chat(page))).to_have_count(4)


def test_two_tabs_of_the_shop_follow_each_others_conversation(shops, shopping, llm):
    shop, _ = shops
    context = shopping.context()
    first, second = shopping.open(shop.url + "/", context), shopping.open(shop.url + "/page2", context)
    chat_first, chat_second = open_chat(first), open_chat(second)

    send(chat_first, "Hi")

    # The second tab's chat had no conversation: it takes the one its shop page now keeps.
    expect(shown(chat_second)).to_have_text(["Hi", "Echo: Hi"])
    send(chat_second, "From the other tab")
    assert seen_by_llm(llm) == ["Hi", "Echo: Hi", "From the other tab"]
    expect(shown(chat_first).last).to_have_text("Echo: From the other tab")

    chat_first.get_by_role("button", name="New conversation").click()

    expect(shown(chat_second)).to_have_count(0)
    assert shop_id(second) is None


def test_a_staff_reply_lights_the_badge_while_the_panel_is_closed(shops, shopping, chat_site):
    shop, _ = shops
    page = shopping.open(shop.url + "/")
    frame = open_chat(page)
    send(frame, "Where is my parcel?")
    frame.get_by_role("button", name="Close the chat").click()
    expect(launcher(page)).to_have_attribute("aria-expanded", "false")
    expect(launcher(page)).to_be_focused()
    expect(launcher(page)).to_have_accessible_name("Chat with us")

    staff = User.objects.create_user("mia", password="a-long-test-password", is_staff=True)
    conversation = Conversation.objects.get(session_id=shop_id(page))
    handoff.staff_reply(conversation.pk, staff, "Mia", "It left our warehouse today.", "reply-1")

    expect(launcher(page)).to_have_accessible_name("Chat with us (1 new)", timeout=LIVE)
    expect(launcher(page).locator(".badge")).to_have_text("1")

    launcher(page).click()
    expect(launcher(page).locator(".badge")).to_be_hidden()
    expect(shown(frame).last).to_have_text("It left our warehouse today.")


def test_a_page_on_an_origin_not_allowed_cannot_show_the_chat_and_says_so_once(shops, shopping, chat_site):
    _, stranger = shops
    page = shopping.open(stranger.url + "/")
    warnings = []
    page.on("console", lambda message: warnings.append(message.text) if message.type == "warning" else None)

    with page.expect_console_message(lambda message: "CHAT_EMBED_ORIGINS" in message.text, timeout=15_000):
        launcher(page).click()

    # The browser refused the frame (frame-ancestors): no chat in it.
    assert not [frame for frame in page.frames if frame.url.startswith(chat_site.url)]
    expect(chat(page).get_by_role("textbox")).to_have_count(0)
    launcher(page).click()
    launcher(page).click()
    page.evaluate("() => new Promise((resolve) => setTimeout(resolve, 500))")
    [warning] = [text for text in warnings if "CHAT_EMBED_ORIGINS" in text]
    assert f"{stranger.url} in its CHAT_EMBED_ORIGINS" in warning
    # The browser's own report of the refusal is the point here, not an error of the test.
    [refused] = shopping.errors
    assert "frame-ancestors" in refused
    shopping.errors.clear()


def test_forged_messages_from_other_frames_change_nothing(shops, shopping, chat_site, llm):
    shop, stranger = shops
    page = shopping.open(shop.url + "/")
    frame = open_chat(page)
    send(frame, "Hi")
    session_id = shop_id(page)

    # A frame of another origin, and one of the shop's own origin: neither is the chat's frame
    # (for the loader) nor the chat's parent (for the chat's frame).
    for origin in (stranger.url, shop.url):
        page.evaluate("""(url) => {
          const frame = document.createElement("iframe");
          frame.src = url;
          document.body.appendChild(frame);
        }""", f"{origin}/forge.html")
    for origin in (stranger.url, shop.url):
        expect(page.frame_locator(f'iframe[src="{origin}/forge.html"]').locator("html")).to_have_attribute("data-sent", "yes")

    send(frame, "Still me?")  # a round trip after the forged messages were delivered
    expect(shown(frame).last).to_have_text("Echo: Still me?")
    assert seen_by_llm(llm) == ["Hi", "Echo: Hi", "Still me?"]
    assert shop_id(page) == session_id
    expect(launcher(page)).to_have_attribute("aria-expanded", "true")
    expect(frame.get_by_text("Forged")).to_have_count(0)
    assert not Conversation.objects.filter(session_id=FORGED).exists()


def test_with_the_shops_storage_blocked_the_chat_works_for_the_visit_and_says_so(shops, shopping, llm):
    shop, _ = shops
    context = shopping.context()
    # As with cookies blocked: the shop's page may not touch its storage at all (the chat's frame is left alone).
    context.add_init_script(f"""
      if (location.origin === "{shop.url}") {{
        for (const name of ["localStorage", "sessionStorage"]) {{
          Object.defineProperty(window, name, {{
            get() {{ throw new DOMException("The operation is insecure.", "SecurityError"); }},
          }});
        }}
      }}
    """)
    page = shopping.open(shop.url + "/", context)
    frame = open_chat(page)
    expect(frame.get_by_role("note")).to_contain_text("it is forgotten when you leave this page")

    send(frame, "Hi")
    send(frame, "Again")

    expect(shown(frame).last).to_have_text("Echo: Again")
    assert seen_by_llm(llm) == ["Hi", "Echo: Hi", "Again"]


def test_time_to_first_paint_after_the_click(shops, shopping, capsys):
    """A figure for the report, not a bound: the frame's first contentful paint after the click
    that loads it (no conversation yet, so nothing was preloaded)."""
    shop, _ = shops
    page = shopping.open(shop.url + "/")
    expect(launcher(page)).to_be_visible()
    clicked = page.evaluate("""() => {
      const at = performance.timeOrigin + performance.now();
      document.querySelector("shopchat-widget").shadowRoot.querySelector(".launcher").click();
      return at;
    }""")
    expect(box(chat(page))).to_be_visible()
    painted = page.frame(url=re.compile(r"/embed\?lang=en$")).evaluate("""() => new Promise((resolve) => {
      new PerformanceObserver((list) => {
        const paint = list.getEntries().find((entry) => entry.name === "first-contentful-paint");
        if (paint) resolve(performance.timeOrigin + paint.startTime);
      }).observe({ type: "paint", buffered: true });
    })""")
    assert painted > clicked  # loaded by the click, not before

    # With a conversation stored, the frame is loaded while the page is idle: the click only shows it.
    frame_is_up(page)  # painted is not up: before its scripts have loaded, its composer takes no input
    send(chat(page), "Hi")
    chat(page).get_by_role("button", name="Close the chat").click()
    # The frame hands the new id to the shop's page by a message: stored before the reload.
    page.wait_for_function("() => localStorage.getItem('shopchat:sessionId') !== null")
    page.reload()
    expect(page.locator("iframe")).to_have_count(1, timeout=15_000)  # idle, or at most 5 s after the load
    expect(box(chat(page))).to_be_attached()
    frame_is_up(page)  # before the click, which then only shows it
    page.evaluate("() => new Promise((resolve) => setTimeout(resolve, 500))")  # let it settle, for a steady figure
    # A real click, as a customer's: a click from a script gives the shop's page neither the focus nor
    # a user's activation, and under load the frame then at times had no focus to give its message
    # box. Timed in the page, from the click's event (caught before the widget's own listener) to
    # the second frame painted after it.
    page.evaluate("""() => {
      window.shownAfterClick = new Promise((resolve) => {
        document.querySelector("shopchat-widget").shadowRoot.addEventListener("click", () => {
          const at = performance.now();
          requestAnimationFrame(() => requestAnimationFrame(() => resolve(performance.now() - at)));
        }, { capture: true, once: true });
      });
    }""")
    launcher(page).click()
    shown_after = page.evaluate("() => window.shownAfterClick")
    expect(box(chat(page))).to_be_focused()
    with capsys.disabled():
        print(f"\nembedded panel, first open: first contentful paint {painted - clicked:.0f} ms after the click;"
              f" loaded while idle: on screen two frames later, {shown_after:.0f} ms after the click")
