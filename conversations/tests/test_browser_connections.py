"""The page's long poll when the server refuses it for too many connections, in headless Chromium
(against the site as deployed; the refusal itself is tested in test_connections.py)."""

import time

import pytest

from .browser import send, wait_idle

pytestmark = pytest.mark.browser


def test_the_poll_waits_the_retry_after_of_a_refusal_before_it_asks_again(live_site, page):
    send(page, "Hi")
    wait_idle(page)
    asked = []

    def refuse(route):
        asked.append(time.monotonic())
        route.fulfill(status=429, content_type="application/json", headers={"Retry-After": "5"},
                      body='{"error": {"code": "too_many_connections", "message": "Too many."}}')

    page.route("**/api/updates?*", refuse)
    page.evaluate("() => document.dispatchEvent(new Event('visibilitychange'))")  # drop the poll in flight
    deadline = time.monotonic() + 10
    while not asked and time.monotonic() < deadline:
        page.wait_for_timeout(100)
    assert asked, "the page did not poll"

    page.wait_for_timeout(4_000)  # its own back-off would have asked again after 1 s and 3 s
    assert len(asked) == 1, [round(t - asked[0], 1) for t in asked]
    deadline = time.monotonic() + 15
    while len(asked) < 2 and time.monotonic() < deadline:
        page.wait_for_timeout(200)
    assert len(asked) == 2 and asked[1] - asked[0] >= 4.9


def test_the_poll_spreads_its_back_off_at_random(live_site, browsing):
    """Pages cut off together (a deploy) must not all ask again together: a failed poll waits half
    its back-off to all of it, at random. With the page's random numbers at their lowest, the
    first retry comes after half a second, not a second."""
    context = browsing.context()
    context.add_init_script("Math.random = () => 0;")
    page = browsing.page(context)
    send(page, "Hi")
    wait_idle(page)
    asked = []

    def refuse(route):
        asked.append(time.monotonic())
        route.fulfill(status=503, content_type="application/json",
                      body='{"error": {"code": "database_unavailable", "message": "Down."}}')

    page.route("**/api/updates?*", refuse)
    page.evaluate("() => document.dispatchEvent(new Event('visibilitychange'))")  # drop the poll in flight
    deadline = time.monotonic() + 10
    while len(asked) < 2 and time.monotonic() < deadline:
        page.wait_for_timeout(50)
    assert len(asked) >= 2, "the page did not poll again"
    assert 0.4 <= asked[1] - asked[0] < 0.85, asked[1] - asked[0]
