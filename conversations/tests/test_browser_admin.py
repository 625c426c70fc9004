"""Support staff in headless Chromium: log in to admin, find a conversation by its reference, read it.

Against the site as deployed (gunicorn on the test database), with a staff
user who has only the "Can view conversation" permission.
"""

import re

import pytest
from django.contrib.auth.models import Permission, User

from . import data
from .browser import expect, launch, need_chromium, sync_playwright

pytestmark = pytest.mark.browser

def test_staff_log_in_search_by_reference_and_read_the_conversation(live_site):
    need_chromium()
    # The ORM first: while Playwright's sync API runs, this thread counts as async.
    wanted = data.conversation(turns=2, model="fake-model")
    other = data.conversation()
    staff = User.objects.create_user("support", password="a-long-test-password", is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_conversation"))

    with sync_playwright() as playwright:
        browser = launch(playwright)
        try:
            page = browser.new_page(base_url=live_site.url)
            page.set_default_timeout(10_000)

            page.goto("/admin/")
            expect(page).to_have_url(re.compile(r"/admin/login/"))
            page.get_by_label("Username").fill("support")
            page.get_by_label("Password").fill("a-long-test-password")
            page.get_by_role("button", name="Log in").click()

            # The Conversations model (the app is called Conversations too).
            page.locator("tr.model-conversation").get_by_role("link", name="Conversations").click()
            expect(page.locator("#result_list tbody tr")).to_have_count(2)

            # By the whole id, as a customer reads it out; the list shows only the reference.
            page.locator("#searchbar").fill(str(wanted.session_id))
            page.locator("#searchbar").press("Enter")
            rows = page.locator("#result_list tbody tr")
            expect(rows).to_have_count(1)
            expect(rows).to_contain_text(wanted.reference)
            expect(rows).not_to_contain_text(str(wanted.session_id))
            expect(rows).not_to_contain_text(other.reference)

            rows.get_by_role("link", name=wanted.reference).click()
            expect(page).to_have_title(re.compile(rf"Conversation {wanted.reference} \| View conversation"))
            cells = page.locator(".inline-related td.field-content")
            expect(cells).to_have_text(["Question 1?", "Answer 1.", "Question 2?", "Answer 2."])
            expect(page.locator(".inline-related")).to_contain_text("fake-model")
            expect(page.locator("textarea")).to_have_count(0)  # read-only
        finally:
            browser.close()
