"""The chat page in headless Chromium: what the browser tests share.

The fixtures (`browser`, `browsing`, `page`) are in conftest.py; here are
Chromium's launch and the page's controls. Playwright and Chromium are
optional: the fixtures skip without them (helpers.need).
"""

from pathlib import Path

from .helpers import need

CHROMIUM = Path("/usr/bin/chromium")

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # pragma: no cover - requirements-dev.txt has it
    expect = sync_playwright = None  # type: ignore[assignment]


def need_chromium() -> None:
    need(sync_playwright is not None, "Playwright (pip install -r requirements-dev.txt)")
    need(CHROMIUM.exists(), f"Chromium at {CHROMIUM} (apt-get install chromium)")


def launch(playwright):
    """Headless Chromium, as every browser test runs it."""
    return playwright.chromium.launch(
        executable_path=str(CHROMIUM),
        args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
    )


class Browsing:
    """New browser contexts (each one a separate browser profile) on the live site.

    Records errors the page throws and Content-Security-Policy violations, which
    fail the test at the end.
    """

    def __init__(self, browser, url):
        self.browser = browser
        self.url = url
        self.contexts = []
        self.errors = []

    def context(self, **options):
        context = self.browser.new_context(base_url=self.url, **options)
        context.set_default_timeout(10_000)
        self.contexts.append(context)
        return context

    def page(self, context=None, **options):
        page = (context or self.context(**options)).new_page()
        page.on("pageerror", lambda error: self.errors.append(f"page error: {error}"))
        page.on("console", self._console)
        page.goto("/")
        return page

    def _console(self, message):
        if message.type == "error" and "Content Security Policy" in message.text:
            self.errors.append(f"CSP violation: {message.text}")

    def close(self):
        for context in self.contexts:
            context.close()


# --- the chat page's controls ----------------------------------------------------


def box(page):
    return page.get_by_role("textbox", name="Message")


def send(page, text):
    """Type `text` and press Enter, then wait until the turn is over."""
    box(page).fill(text)
    box(page).press("Enter")
    wait_idle(page)


def wait_idle(page):
    expect(page.get_by_role("log")).to_have_attribute("aria-busy", "false")
    expect(page.get_by_role("button", name="Send")).to_be_enabled()


def stored_id(page):
    return page.evaluate("() => localStorage.getItem('sessionId')")


# --- accessibility ---------------------------------------------------------------------

# axe-core, vendored for the tests only (vendor/axe-core/README.md).
AXE = Path(__file__).parent / "vendor" / "axe-core" / "axe.min.js"


def serious_accessibility_violations(page) -> list[str]:
    """axe-core's serious and critical violations on the page as it is now; [] when there are none.
    Evaluated through the DevTools protocol, which the page's strict CSP does not stop."""
    if not page.evaluate("() => typeof window.axe === 'object'"):
        page.evaluate(AXE.read_text() + "\n;undefined")
    return page.evaluate("""async () => {
        const found = await window.axe.run(document, { resultTypes: ["violations"] });
        return found.violations.filter((v) => v.impact === "serious" || v.impact === "critical")
            .map((v) => `${v.id} (${v.impact}): ${v.help} at ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`);
    }""")
