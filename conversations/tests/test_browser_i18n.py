"""The chat page in the customer's language, in headless Chromium against the deployed site
(docs/i18n.md): the browser's language, the page's selector, right to left, and the API's words.

CHAT_DOCS_SCREENSHOTS=1 writes docs/rtl-light.png and docs/rtl-dark.png (the page in Arabic).
"""

import os
import re
from pathlib import Path

import pytest

from .browser import expect, serious_accessibility_violations

pytestmark = pytest.mark.browser

DOCS = Path(__file__).resolve().parents[2] / "docs"


@pytest.fixture(scope="module", autouse=True)
def compiled():
    """The site reads the .mo files when it starts: they must be built from the .po files already
    (`make test` does it, as `make run` does)."""
    for po in (DOCS.parent / "locale").glob("*/LC_MESSAGES/*.po"):
        mo = po.with_suffix(".mo")
        if not mo.exists() or mo.stat().st_mtime < po.stat().st_mtime:
            pytest.fail(f"{mo} is missing or older than its .po: run `make translations` first")


def box(page):
    """The message box (browser.box finds it by its English name)."""
    return page.locator("#message")


def wait_idle(page):
    """The turn is over (browser.wait_idle finds the send button by its English name)."""
    expect(page.locator("#log")).to_have_attribute("aria-busy", "false")
    expect(page.locator("#send")).to_be_enabled()


def html(page) -> list[str]:
    return page.evaluate("() => [document.documentElement.lang, document.documentElement.dir]")


def record_api_languages(context) -> list[str]:
    """The X-Chat-Language of every API call the pages of `context` make, as they make them."""
    seen: list[str] = []
    context.on("request", lambda request: seen.append(request.headers.get("x-chat-language", "-"))
               if "/api/" in request.url else None)
    return seen


@pytest.mark.parametrize(("locale", "lang", "words"), [
    ("de-DE", "de", {
        "welcome": "Hallo! Wie können wir helfen?",
        "person": "Mit einem Menschen sprechen",
        "placeholder": "Nachricht schreiben …",
        "too_long": "Nachrichten dürfen höchstens 4000 Zeichen lang sein; diese hat 4001. Bitte kürzen Sie sie.",
        "copy": "Kopieren",
    }),
    ("fr-FR", "fr", {
        "welcome": "Bonjour\u00a0! Comment pouvons-nous vous aider\u00a0?",
        "person": "Parler à une personne",
        "placeholder": "Écrivez un message…",
        "too_long": "Les messages ne peuvent pas dépasser 4000 caractères ; celui-ci en compte 4001. Veuillez le raccourcir.",
        "copy": "Copier",
    }),
])
def test_the_page_speaks_the_browsers_language(browsing, llm, locale, lang, words):
    context = browsing.context(locale=locale)
    sent = record_api_languages(context)
    page = browsing.page(context)
    assert html(page) == [lang, "ltr"]
    expect(page.locator("#welcome-title")).to_have_text(words["welcome"])
    expect(page.locator("#handoff-request")).to_contain_text(words["person"])
    expect(box(page)).to_have_attribute("placeholder", words["placeholder"])
    expect(page.get_by_test_id("language")).to_have_value(lang)

    # A reply, and the words the page's scripts add (Django's JavaScript catalog).
    box(page).fill("Hello there")
    box(page).press("Enter")
    wait_idle(page)
    expect(page.locator('#log [data-role="assistant"] .bubble').last).to_have_text("Echo: Hello there")
    expect(page.locator(".copy-button").last).to_contain_text(words["copy"])
    assert sent and set(sent) == {lang}, sent

    # A message over the length the page was given (CHAT_MESSAGE_MAX_CHARS): refused in the page's language.
    box(page).fill("x" * 4001)
    box(page).press("Enter")
    expect(page.locator("#notice")).to_have_text(words["too_long"])


def test_the_page_reads_right_to_left_in_arabic_and_mirrors(browsing, llm):
    llm.control("ok", reply="نعم، يمكنك إرجاع أي منتج خلال 30 يومًا من الاستلام. **الإرجاع مجاني.**")
    page = browsing.page(locale="ar", viewport={"width": 900, "height": 700})
    assert html(page) == ["ar", "rtl"]
    expect(page.locator("#welcome-title")).to_have_text("مرحبًا! كيف يمكننا مساعدتك؟")
    expect(page.locator("#handoff-request")).to_contain_text("التحدث إلى شخص")

    box(page).fill("هل يمكنني إرجاع طلبي؟")
    box(page).press("Enter")
    wait_idle(page)
    reply = page.locator('#log [data-role="assistant"]').last
    expect(reply.locator(".bubble")).to_contain_text("يمكنك إرجاع أي منتج")
    expect(reply.locator(".copy-button")).to_contain_text("نسخ")

    # Mirrored: the send button left of the box, the assistant's avatar right of its bubble,
    # the customer's own message on the left.
    send_box, text_box = page.locator("#send").bounding_box(), box(page).bounding_box()
    assert send_box["x"] < text_box["x"], (send_box, text_box)
    avatar, bubble = reply.locator(".avatar").bounding_box(), reply.locator(".bubble").bounding_box()
    assert avatar["x"] > bubble["x"] + bubble["width"] - 1, (avatar, bubble)
    question = page.locator('#log [data-role="user"] .bubble').last.bounding_box()
    assert question["x"] < bubble["x"] + bubble["width"] / 2, (question, bubble)

    for scheme in ("light", "dark"):
        page.emulate_media(color_scheme=scheme)
        page.wait_for_function("() => document.getAnimations().every((a) => a.playState !== 'running')")
        found = serious_accessibility_violations(page)
        assert found == [], "\n".join(found)
        if os.environ.get("CHAT_DOCS_SCREENSHOTS"):
            page.screenshot(path=str(DOCS / f"rtl-{scheme}.png"))


def test_a_message_reads_in_its_own_direction_whatever_the_page(browsing, llm):
    llm.control("ok", reply="Sure: שלום means hello.")
    page = browsing.page(locale="en-US")
    assert html(page) == ["en", "ltr"]
    box(page).fill("מה שלומך? אני רוצה להחזיר הזמנה.")
    expect(box(page)).to_have_attribute("dir", "auto")
    assert box(page).evaluate("(node) => getComputedStyle(node).direction") == "rtl"
    box(page).press("Enter")
    wait_idle(page)
    question = page.locator('#log [data-role="user"] .bubble').last
    expect(question).to_have_attribute("dir", "auto")
    assert question.evaluate("(node) => getComputedStyle(node).direction") == "rtl"
    reply = page.locator('#log [data-role="assistant"] .bubble').last
    expect(reply).to_have_attribute("dir", "auto")
    assert reply.evaluate("(node) => getComputedStyle(node).direction") == "ltr"
    # Every bubble, the stored ones too (a reload shows them from the history).
    page.reload()
    expect(page.locator("#log .bubble")).to_have_count(2)
    assert page.locator("#log .bubble").evaluate_all("nodes => nodes.map((n) => n.dir)") == ["auto", "auto"]


def test_the_customers_choice_is_kept_and_sent_with_every_call(browsing, llm):
    context = browsing.context(locale="en-US")
    sent = record_api_languages(context)
    page = browsing.page(context)
    expect(page.locator("#welcome-title")).to_have_text("Hi! How can we help?")

    page.get_by_test_id("language").select_option("es")
    page.wait_for_url(re.compile(r"[?&]lang=es"))
    assert html(page) == ["es", "ltr"]
    expect(page.locator("#welcome-title")).to_have_text("¡Hola! ¿En qué podemos ayudarte?")
    assert page.evaluate("() => localStorage.getItem('chatLanguage')") == "es"

    box(page).fill("Hola")
    box(page).press("Enter")
    wait_idle(page)
    assert sent and set(sent) == {"es"}, sent

    # The next visit: the cookie has the page rendered in it at once.
    again = context.new_page()
    again.goto("/")
    assert html(again) == ["es", "ltr"]
    expect(again.locator('#log [data-role="user"] .bubble')).to_have_text("Hola")
    # Cookies cleared: the choice kept beside the session id still wins, once the page has started.
    context.clear_cookies()
    again.goto("/")
    again.wait_for_url(re.compile(r"[?&]lang=es"))
    expect(again.locator("#welcome-title")).to_have_text("¡Hola! ¿En qué podemos ayudarte?")
    expect(again.locator('#log [data-role="user"] .bubble')).to_have_text("Hola")


def test_an_api_error_shown_by_the_page_is_in_its_language(browsing, llm):
    """The server's own message (a 404 for a forgotten conversation), not one the page made up."""
    context = browsing.context(locale="de-DE")
    page = browsing.page(context)
    reply = page.evaluate("""async () => {
        const response = await fetch('/api/devices', {headers: {'X-Session-Id': crypto.randomUUID(),
                                                                'X-Chat-Language': document.documentElement.lang}});
        return [response.status, (await response.json()).error.message];
    }""")
    assert reply == [404, "Unter dieser Sitzungs-ID ist keine Unterhaltung gespeichert."]


def test_a_failed_turn_and_a_handoff_notice_are_in_the_pages_language(browsing, llm):
    """Texts the server writes during a streamed turn and a handoff: in the language the page sent."""
    llm.control("status", status=500, fail_times=1)
    page = browsing.page(locale="de-DE")
    box(page).fill("Wo ist mein Paket?")
    box(page).press("Enter")
    wait_idle(page)
    alert = page.locator(".turn-error")
    expect(alert).to_contain_text("Der Assistent ist gerade nicht erreichbar. "
                                  "Ihre Nachricht ist gespeichert; versuchen Sie es gleich noch einmal.")
    expect(alert.locator(".retry-button")).to_have_text("Erneut versuchen")

    page = browsing.page(locale="fr-FR")
    page.locator("#handoff-request").click()
    notice = page.locator('#log [data-role="event"] .bubble').last
    expect(notice).to_contain_text("Vous avez demandé à parler à une personne.")
    expect(page.locator("#handoff-title")).to_have_text("En attente d’une personne de notre équipe")
