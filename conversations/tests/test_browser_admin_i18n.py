"""The staff side's scripts in the staff member's language, in headless Chromium against the site as
deployed: with a German browser, the live view's words that live.js writes (the state line, what
Send and Hand back say) come from the project's JavaScript catalog, under the admin's strict CSP."""

import pytest
from django.contrib.auth.models import Permission, User

from conversations.models import StaffProfile

from .browser import expect
from .test_inbox import live, waiting

pytestmark = pytest.mark.browser


@pytest.fixture
def lena(live_site):
    user = User.objects.create_user("lena", password="a-long-test-password", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=["view_conversation", "reply_conversation"]))
    StaffProfile.set_name(user, "Lena")
    return user


def test_a_german_staff_members_live_view_script_writes_german(browsing, lena):
    conversation = waiting()
    staff = browsing.page(browsing.context(locale="de-DE"))  # records page errors and CSP violations
    staff.goto("/admin/")
    staff.get_by_label("Benutzername").fill("lena")  # Django's own login page, in German
    staff.get_by_label("Passwort").fill("a-long-test-password")
    staff.get_by_role("button", name="Anmelden").click()
    expect(staff.locator("#staff-waiting")).to_contain_text("Wartend:")

    staff.goto(live(conversation))
    expect(staff.locator("#live-state")).to_contain_text("Warten auf eine Person, seit")
    staff.get_by_role("button", name="Senden").click()  # nothing written yet: live.js says so
    expect(staff.locator("#reply-status")).to_have_text("Schreiben Sie zuerst eine Antwort.")

    staff.get_by_role("button", name="An den Assistenten zurückgeben").click()
    expect(staff.locator("#reply-status")).to_have_text("Zurückgegeben: Der Assistent antwortet wieder.")
    expect(staff.locator("#live-state")).to_have_text("Der Assistent antwortet")  # live.js's STATES
