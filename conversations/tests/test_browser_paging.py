"""The chat page on a long conversation, in headless Chromium against the site as deployed: it shows
the newest page, loads older pages as the customer scrolls up (without moving what they read), and
says so when a full conversation gives way to a new one."""

import re

import pytest
from django.conf import settings

from . import data
from .browser import box, expect, send, stored_id

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SEQS = "items => items.map(item => Number(item.dataset.seq))"


def open_conversation(page, conversation) -> None:
    page.evaluate("id => localStorage.setItem('sessionId', id)", str(conversation.session_id))
    page.reload()


def top_of(page, seq: int) -> float:
    """Where the message at `seq` is on the screen."""
    return page.locator(f'#log [data-seq="{seq}"]').evaluate("item => item.getBoundingClientRect().top")


def scroll_to_top(page) -> None:
    page.evaluate("() => { document.getElementById('conversation').scrollTop = 0; }")


def test_scrolling_up_loads_older_messages_in_order_without_a_jump(page):
    conversation = data.long_conversation(160, question_chars=60, reply_chars=300)
    held = []
    older = re.compile(r".*/api/history\?before=.*")
    # The first older page waits until the test lets it go; the others go at once.
    page.route(older, lambda route: route.continue_() if held else held.append(route))
    open_conversation(page, conversation)

    log = page.locator("#log [data-seq]")
    expect(log).to_have_count(50)
    assert log.evaluate_all(SEQS) == list(range(110, 160))
    expect(page.locator("#earlier")).not_to_be_visible()  # there, keeping its room, but idle

    scroll_to_top(page)
    expect(page.locator("#earlier")).to_be_visible()
    expect(page.locator("#earlier")).to_have_text("Loading earlier messages…")
    while not held:
        page.wait_for_timeout(20)
    shown_at = top_of(page, 110)
    held[0].continue_()

    expect(log).to_have_count(100)
    assert abs(top_of(page, 110) - shown_at) <= 2  # no jump: what was read stays put
    while log.count() < 160:
        count = log.count()
        scroll_to_top(page)
        expect(log).not_to_have_count(count)

    seqs = log.evaluate_all(SEQS)
    assert seqs == list(range(160))
    texts = log.evaluate_all("items => items.map(item => item.querySelector('.bubble').innerText.trim())")
    assert [int(text.split(":")[0]) for text in texts] == seqs
    expect(page.locator("#earlier")).to_be_hidden()


def test_a_full_conversation_gives_way_to_a_new_one_with_a_notice(page, llm):
    conversation = data.long_conversation(settings.CHAT_CONVERSATION_MAX_MESSAGES - 2,
                                          question_chars=40, reply_chars=40)
    open_conversation(page, conversation)
    expect(page.locator("#log [data-seq]")).to_have_count(50)

    send(page, "One more question")
    assert stored_id(page) == str(conversation.session_id)
    send(page, "And another")

    expect(page.locator("#notice")).to_contain_text("reached its maximum length")
    assert stored_id(page) != str(conversation.session_id)
    roles = page.locator("#log [data-role]").evaluate_all("items => items.map(item => item.dataset.role)")
    assert roles == ["user", "assistant"]
    expect(page.locator("#log")).to_contain_text("Echo: And another")
    expect(box(page)).to_be_editable()


def test_an_older_page_that_fails_to_load_says_so_and_loads_on_the_next_scroll(page):
    conversation = data.long_conversation(80, question_chars=60, reply_chars=300)
    failures = []

    def fail_once(route):
        if failures:
            route.continue_()
        else:
            failures.append(route.request.url)
            route.abort()  # the network drops the request

    page.route(re.compile(r".*/api/history\?before=.*"), fail_once)
    open_conversation(page, conversation)
    log = page.locator("#log [data-seq]")
    expect(log).to_have_count(50)

    scroll_to_top(page)
    expect(page.locator("#earlier")).to_have_text("Could not load earlier messages. Scroll up to try again.")
    assert log.count() == 50
    page.evaluate("() => { document.getElementById('conversation').scrollTop = 300; }")
    scroll_to_top(page)

    expect(log).to_have_count(80)
    assert log.evaluate_all(SEQS) == list(range(80))
    expect(page.locator("#earlier")).to_be_hidden()
