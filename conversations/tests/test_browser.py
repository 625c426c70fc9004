"""The chat page in headless Chromium, against the site as deployed (gunicorn, PostgreSQL, Redis, fake LLM).

What the page keeps (the sessionId in localStorage) and what the server
stored (GET /api/history) are both checked, so a page that only looks right
cannot pass. The fake LLM echoes "Echo: <question>" unless told otherwise.
"""

import re
import time
import uuid

import pytest

from .browser import box, expect, send, stored_id, wait_idle
from .client import SiteClient

pytestmark = pytest.mark.browser

UUID4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


# --- helpers (the shared ones are in browser.py; the fixtures in conftest.py) ---------


def messages(page):
    """[(role, text)] as shown, oldest first."""
    return page.locator("#log [data-role]").evaluate_all(
        "items => items.map(item => [item.dataset.role, item.querySelector('.bubble').innerText.trim()])"
    )


def replies(page):
    return page.locator('#log [data-role="assistant"] .bubble')


def history(site, session_id):
    """What the server keeps: (status, messages) of GET /api/history."""
    status, body, _ = SiteClient(site).history(session_id, timeout=10)
    return status, body["messages"] if status == 200 else None


def eventually(check, timeout=5.0):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.05)


# --- the session in the browser -----------------------------------------------


def test_first_visit_stores_the_issued_id_and_the_second_message_reuses_it(live_site, page, llm):
    assert stored_id(page) is None
    expect(page.locator("#reference")).to_be_hidden()

    send(page, "Hi")

    expect(replies(page).last).to_have_text("Echo: Hi")
    session_id = stored_id(page)
    assert UUID4.fullmatch(session_id)
    expect(page.locator("footer")).to_contain_text(f"Conversation reference {session_id[:8]}")

    send(page, "What is your return policy?")

    expect(replies(page).last).to_have_text("Echo: What is your return policy?")
    assert stored_id(page) == session_id
    # The server continued the same conversation: the model saw the first turn.
    assert [m["content"] for m in llm.requests()[-1]["messages"][1:]] == [
        "Hi", "Echo: Hi", "What is your return policy?"
    ]
    status, stored = history(live_site, session_id)
    assert status == 200 and len(stored) == 4


def test_the_page_is_served_under_a_strict_content_security_policy(browsing):
    context = browsing.context()
    response = context.new_page().goto("/")
    policy = response.headers["content-security-policy"]
    for directive in ("script-src 'self'", "style-src 'self'", "connect-src 'self'", "object-src 'none'",
                      "frame-ancestors 'none'"):
        assert directive in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy


def test_reload_shows_the_whole_conversation_and_continues_it(live_site, page):
    send(page, "First question")
    send(page, "Second question")
    session_id = stored_id(page)

    page.reload()

    expect(page.locator("#log [data-role]")).to_have_count(4)
    assert messages(page) == [
        ["user", "First question"], ["assistant", "Echo: First question"],
        ["user", "Second question"], ["assistant", "Echo: Second question"],
    ]
    send(page, "Third question")
    assert stored_id(page) == session_id
    assert messages(page)[-2:] == [["user", "Third question"], ["assistant", "Echo: Third question"]]
    assert len(history(live_site, session_id)[1]) == 6


def test_a_new_browser_gets_a_new_id(browsing):
    first = browsing.page()
    send(first, "Hi")
    second = browsing.page()

    expect(second.locator("#log [data-role]")).to_have_count(0)
    send(second, "Hi")

    assert UUID4.fullmatch(stored_id(second))
    assert stored_id(second) != stored_id(first)


@pytest.mark.parametrize("corrupt", ["not-a-session-id", "unknown"])
def test_a_corrupt_or_unknown_stored_id_is_dropped_quietly(live_site, page, corrupt):
    bad = str(uuid.uuid4()) if corrupt == "unknown" else corrupt
    page.evaluate("id => localStorage.setItem('sessionId', id)", bad)
    page.reload()

    page.wait_for_function("() => localStorage.getItem('sessionId') === null")
    expect(page.locator("#log [data-role]")).to_have_count(0)
    expect(page.locator("#notice")).to_be_hidden()

    send(page, "Hello again")

    expect(replies(page).last).to_have_text("Echo: Hello again")
    session_id = stored_id(page)
    assert UUID4.fullmatch(session_id) and session_id != bad
    assert history(live_site, bad)[0] in (400, 404)


def test_new_conversation_forgets_the_id_and_clears_the_view(live_site, page):
    send(page, "Hi")
    old_id = stored_id(page)

    page.get_by_role("button", name="New conversation").click()

    expect(page.locator("#log [data-role]")).to_have_count(0)
    expect(page.locator("#reference")).to_be_hidden()
    assert stored_id(page) is None
    expect(box(page)).to_be_focused()

    send(page, "Hi")
    assert UUID4.fullmatch(stored_id(page)) and stored_id(page) != old_id
    assert messages(page) == [["user", "Hi"], ["assistant", "Echo: Hi"]]
    assert history(live_site, old_id)[0] == 200  # forgotten by the page, not deleted


def test_delete_this_conversation_asks_first_then_deletes_it(live_site, page):
    send(page, "Please forget me")
    session_id = stored_id(page)
    delete = page.get_by_role("button", name="Delete this conversation")

    delete.click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_be_hidden()
    assert stored_id(page) == session_id
    assert history(live_site, session_id)[0] == 200

    delete.click()
    dialog.get_by_role("button", name="Delete").click()

    expect(page.locator("#log [data-role]")).to_have_count(0)
    page.wait_for_function("() => localStorage.getItem('sessionId') === null")
    assert history(live_site, session_id)[0] == 404
    expect(delete).to_be_disabled()


# --- what a user sees and does ------------------------------------------------


XSS = (
    '<img src=x onerror="window.__xss=1"><script>window.__xss=1</script>'
    '<svg onload="window.__xss=1"></svg> [click me](javascript:window.__xss=1) '
    '![pixel](http://127.0.0.1:9/pixel.png) <a href="javascript:window.__xss=1">a</a>'
)


def test_markup_sent_by_the_user_and_echoed_by_the_model_stays_inert_text(browsing, llm):
    llm.control("ok", reply=XSS)
    page = browsing.page()
    requested = []
    page.on("request", lambda request: requested.append(request.url))

    send(page, XSS)
    page.reload()
    wait_idle(page)

    user, reply = page.locator('[data-role="user"] .bubble'), replies(page)
    expect(user).to_have_text(XSS)  # exactly what was typed, as text
    expect(reply).to_contain_text('<img src=x onerror="window.__xss=1"><script>')
    log = page.get_by_role("log")
    written = log.locator(".bubble")  # what was typed or replied, not the page's own icons
    assert written.locator("img, script, svg, iframe, object, embed, style").count() == 0
    assert written.locator("[onerror], [onload]").count() == 0
    for link in written.locator("a").all():
        assert re.match(r"(https?|mailto):", link.get_attribute("href"))
    assert page.evaluate("() => window.__xss") is None
    assert all(url.startswith(browsing.url) for url in requested), requested


def test_replies_are_rendered_as_safe_markdown_and_can_be_copied(browsing, llm):
    reply = (
        "**Returns** are _free_:\n\n1. Pack the item\n2. Print the label\n\n"
        "```\nlabel <b>42</b>\n```\nSee [our policy](https://shop.example/returns) or `RET-1`."
    )
    llm.control("ok", reply=reply)
    page = browsing.page(permissions=["clipboard-read", "clipboard-write"])

    send(page, "How do returns work?")

    bubble = replies(page).last
    expect(bubble.locator("strong")).to_have_text("Returns")
    expect(bubble.locator("em")).to_have_text("free")
    expect(bubble.locator("ol > li")).to_have_text(["Pack the item", "Print the label"])
    expect(bubble.locator("pre code")).to_have_text("label <b>42</b>")
    link = bubble.get_by_role("link", name="our policy")
    expect(link).to_have_attribute("href", "https://shop.example/returns")
    expect(link).to_have_attribute("rel", "noopener noreferrer")
    expect(link).to_have_attribute("target", "_blank")

    page.locator('[data-role="assistant"]').last.hover()
    page.get_by_role("button", name="Copy").click()
    expect(page.get_by_role("button", name="Copied")).to_be_visible()
    assert page.evaluate("() => navigator.clipboard.readText()") == reply


MARKDOWN_ATTACKS = [
    "[x](javascript:alert(1))", "[x](JaVaScRiPt:alert(1))", "[x]( javascript:alert(1))",
    "[x](data:text/html,<script>alert(1)</script>)", "[x](vbscript:msgbox)", "[x](//evil.example/)",
    "![x](https://evil.example/x.png)", "<img src=x onerror=alert(1)>", "<a href=javascript:alert(1)>x</a>",
    "**<b onclick=alert(1)>x</b>**", "```html\n<script>alert(1)</script>\n```", "> <iframe src=//evil>",
    "| <img> | x |\n|---|---|\n| <svg onload=alert(1)> | [y](javascript:1) |",
    "- [x](https://ok.example) <style>*{}</style>\n  - `<script>`", "<https://ok.example/?q=<script>>",
    "[a [nested](https://ok.example)](https://ok.example/2)", "*" * 50 + "_" * 50 + "[" * 50,
]


def test_the_markdown_renderer_builds_only_harmless_elements(page):
    built = page.evaluate(
        """async attacks => {
          const { renderMarkdown } = await import('/static/markdown.js');
          return attacks.map(text => {
            const holder = document.createElement('div');
            holder.appendChild(renderMarkdown(text));
            return [...holder.querySelectorAll('*')].map(node => [
                node.tagName.toLowerCase(),
                Object.fromEntries([...node.attributes].map(a => [a.name, a.value])),
            ]);
          });
        }""",
        MARKDOWN_ATTACKS,
    )

    allowed = {"p", "br", "strong", "em", "del", "code", "pre", "a", "ul", "ol", "li", "blockquote",
               "h3", "h4", "hr", "div", "table", "thead", "tbody", "tr", "th", "td"}
    for text, nodes in zip(MARKDOWN_ATTACKS, built, strict=True):
        for tag, attributes in nodes:
            assert tag in allowed, (text, tag)
            if tag == "a":
                assert attributes == {"href": attributes["href"], "rel": "noopener noreferrer", "target": "_blank"}
                assert re.match(r"(https://(ok|evil)\.example/|mailto:)", attributes["href"]), text
            else:
                assert set(attributes) <= {"class", "start", "data-language"}, (text, tag, attributes)


def test_the_reply_appears_word_by_word_after_a_typing_indicator(page, llm):
    words = "one two three four five six seven eight nine ten"
    llm.control("ok", reply=words, delay=0.5, chunk_delay=0.15)

    box(page).fill("Count for me")
    box(page).press("Enter")

    expect(page.locator('[data-role="assistant"] .typing')).to_be_visible()
    page.wait_for_function(
        """() => {
            const text = document.querySelector('[data-role="assistant"] .bubble').innerText;
            return text.includes('one') && !text.includes('ten');
        }"""
    )
    expect(page.locator('[data-role="assistant"] .typing')).to_have_count(0)
    wait_idle(page)
    expect(replies(page).last).to_have_text(words)


def test_stop_ends_the_reply_and_the_partial_reply_is_kept_as_stopped(live_site, page, llm):
    words = [f"word{i}" for i in range(40)]
    llm.control("ok", reply=" ".join(words), chunk_delay=0.15)

    box(page).fill("Tell me everything")
    box(page).press("Enter")
    expect(replies(page).last).to_contain_text("word2")
    page.get_by_role("button", name="Stop").click()

    wait_idle(page)
    expect(page.locator('[data-role="assistant"] .badge')).to_have_text("Stopped")
    expect(box(page)).to_be_focused()
    shown = replies(page).last.inner_text().strip()
    assert shown.startswith("word0 word1 word2") and "word39" not in shown
    session_id = stored_id(page)

    def stored_reply():
        _, stored = history(live_site, session_id)
        return stored[-1] if stored and stored[-1]["role"] == "assistant" else None

    reply = eventually(stored_reply)
    assert reply["status"] == "stopped"
    assert " ".join(words).startswith(reply["content"]) and "word39" not in reply["content"]
    assert eventually(lambda: llm.stats()["cancelled"] == 1)

    page.reload()
    expect(page.locator('[data-role="assistant"] .badge')).to_have_text("Stopped")
    expect(replies(page).last).to_have_text(reply["content"])

    llm.control("ok")
    send(page, "Thanks")
    expect(replies(page).last).to_have_text("Echo: Thanks")


def test_a_failed_turn_says_so_and_retry_completes_it_without_a_duplicate(live_site, page, llm):
    llm.control("status", status=500, fail_times=1)

    send(page, "Where is my parcel?")

    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("unavailable")
    expect(page.locator('[data-role="assistant"]')).to_have_count(0)
    page.get_by_role("button", name="Retry").click()

    wait_idle(page)
    expect(replies(page).last).to_have_text("Echo: Where is my parcel?")
    expect(page.get_by_role("button", name="Retry")).to_have_count(0)
    assert messages(page) == [["user", "Where is my parcel?"], ["assistant", "Echo: Where is my parcel?"]]
    _, stored = history(live_site, stored_id(page))
    assert [(m["role"], m["content"], m["status"]) for m in stored] == [
        ("user", "Where is my parcel?", "complete"),
        ("assistant", "Echo: Where is my parcel?", "complete"),
    ]
    assert len(llm.requests()) == 2

    page.reload()
    expect(page.locator("#log [data-role]")).to_have_count(2)


def test_a_failed_turn_can_be_retried_after_a_reload(live_site, page, llm):
    llm.control("status", status=503, fail_times=1)
    send(page, "Is my order late?")
    expect(page.get_by_role("alert")).to_be_visible()

    page.reload()
    page.get_by_role("button", name="Retry").click()

    wait_idle(page)
    assert messages(page) == [["user", "Is my order late?"], ["assistant", "Echo: Is my order late?"]]
    assert len(history(live_site, stored_id(page))[1]) == 2


def test_keyboard_enter_sends_once_and_shift_enter_adds_a_line(page, llm):
    llm.control("ok", chunk_delay=0.2)
    message = box(page)

    message.press_sequentially("line one")
    message.press("Shift+Enter")
    message.press_sequentially("line two")
    message.press("Enter")
    expect(page.get_by_role("button", name="Send")).to_be_disabled()
    expect(message).to_be_focused()
    message.press_sequentially("next")
    message.press("Enter")  # while the reply is coming: not sent
    message.press("Enter")

    wait_idle(page)
    assert messages(page) == [["user", "line one\nline two"], ["assistant", "Echo: line one\nline two"]]
    assert len(llm.requests()) == 1
    expect(message).to_have_value("next")

    page.get_by_role("button", name="Send").dblclick()
    wait_idle(page)
    assert len(llm.requests()) == 2
    expect(page.locator('[data-role="user"]')).to_have_count(2)


def test_two_tabs_on_one_session_stay_coherent(browsing):
    context = browsing.context()
    first, second = browsing.page(context), browsing.page(context)

    send(first, "Hi from the first tab")
    expect(second.locator("#log [data-role]")).to_have_count(2)
    assert stored_id(second) == stored_id(first)
    expect(second.locator("#reference-id")).to_have_text(stored_id(first)[:8])

    send(second, "Hi from the second tab")
    assert stored_id(second) == stored_id(first)
    expect(first.locator("#log [data-role]")).to_have_count(4)
    assert messages(first) == messages(second)

    first.get_by_role("button", name="New conversation").click()
    expect(second.locator("#log [data-role]")).to_have_count(0)
    expect(second.locator("#reference")).to_be_hidden()


def test_a_message_sent_while_another_tab_is_answered_waits_its_turn(live_site, browsing, llm):
    llm.control("ok", chunk_delay=0.25, reply="A slow answer for the first tab, word by word.")
    context = browsing.context()
    first, second = browsing.page(context), browsing.page(context)

    box(first).fill("First tab asks")
    box(first).press("Enter")
    expect(second.locator('[data-role="assistant"] .typing')).to_be_visible()  # it follows the other tab
    statuses = []
    second.on("response", lambda response: statuses.append(response.status) if "/api/chat" in response.url else None)
    llm.control("ok")
    send(second, "Second tab asks")

    assert statuses[0] == 409 and statuses[-1] == 200  # turn_in_progress, waited out, then sent again

    wait_idle(first)
    expected = [
        ["user", "First tab asks"], ["assistant", "A slow answer for the first tab, word by word."],
        ["user", "Second tab asks"], ["assistant", "Echo: Second tab asks"],
    ]
    expect(second.locator("#log [data-role]")).to_have_count(4)
    assert messages(second) == expected
    expect(first.locator("#log [data-role]")).to_have_count(4)
    assert messages(first) == expected
    assert len(history(live_site, stored_id(first))[1]) == 4


def test_a_server_too_busy_for_a_turn_is_waited_out(live_site, page):
    refused = []

    def busy_once(route):
        if refused:
            route.continue_()
            return
        refused.append(route.request.url)
        route.fulfill(status=503, headers={"Retry-After": "1"}, content_type="application/json",
                      body='{"error": {"code": "overloaded", "message": "The assistant is busy right now."}}')

    page.route("**/api/chat", busy_once)
    send(page, "Are you busy?")

    assert len(refused) == 1
    assert messages(page) == [["user", "Are you busy?"], ["assistant", "Echo: Are you busy?"]]
    expect(page.get_by_role("alert")).to_have_count(0)


def test_phone_width_and_dark_mode(browsing):
    page = browsing.page(viewport={"width": 360, "height": 720}, color_scheme="dark", is_mobile=True)

    send(page, "A long question " + "with many words " * 20)

    assert page.evaluate("() => document.scrollingElement.scrollWidth") <= 360
    for name in ("New conversation", "Delete this conversation", "Send"):
        expect(page.get_by_role("button", name=name)).to_be_visible()
    background = page.evaluate("() => getComputedStyle(document.body).backgroundColor")
    assert sum(map(int, re.findall(r"\d+", background)[:3])) < 100, background
