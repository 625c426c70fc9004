"""The whole story of a customer who needs a person, in two headless Chromium browsers.

Against the site as deployed (gunicorn, PostgreSQL, Redis, the fake LLM): a
customer asks for a person on the chat page; a staff member, in a browser of
their own, logs in to the admin, finds the conversation in the queue and
answers; the customer sees the answer without reloading, and after a reload;
the staff member hands back, and the assistant answers again.
"""

import re

import pytest
from django.contrib.auth.models import Permission, User

from .browser import box, expect, send, stored_id, wait_idle

pytestmark = pytest.mark.browser

# A staff reply reaches the open page within about two seconds; the margin is
# for a loaded test machine.
LIVE = 4_000


@pytest.fixture
def support(live_site):
    user = User.objects.create_user("mia.schmidt", password="a-long-test-password", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=["view_conversation", "reply_conversation"]))
    return user


def test_a_customer_asks_for_a_person_staff_answer_from_the_admin_and_hand_back(browsing, llm, support):
    customer = browsing.page()
    send(customer, "Hi")
    customer.get_by_role("button", name="Talk to a person").click()
    banner = customer.get_by_test_id("handoff-status")
    expect(banner).to_have_attribute("data-state", "waiting")
    expect(customer.locator('#log [data-role="event"]').last).to_contain_text("You asked to talk to a person")
    box(customer).fill("My parcel arrived damaged")
    box(customer).press("Enter")
    wait_idle(customer)
    expect(customer.locator('#log [data-role="assistant"]')).to_have_count(1)  # only the answer to "Hi"
    reference = stored_id(customer)[:8]
    customer.evaluate("() => { window.notReloaded = true; }")

    # Staff, in a browser of their own.
    staff = browsing.context().new_page()
    staff.goto("/admin/")
    staff.get_by_label("Username").fill("mia.schmidt")
    staff.get_by_label("Password").fill("a-long-test-password")
    staff.get_by_role("button", name="Log in").click()
    expect(staff.locator("#handoff-queue .waiting-count")).to_have_text("1")
    staff.get_by_role("link", name="Customers waiting for a person").click()
    row = staff.locator("#result_list tbody tr")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("My parcel arrived damaged")
    expect(row).to_contain_text("waiting for a person")
    row.get_by_role("link", name=reference).click()  # the live view (test_browser_inbox.py)
    staff.get_by_role("link", name="Details and history").click()  # the change page, with its form
    expect(staff).to_have_title(re.compile(rf"Conversation {reference}"))
    expect(staff.locator(".inline-related td.field-content").last).to_have_text("My parcel arrived damaged")

    staff.get_by_label("Your name for customers").fill("Mia")
    staff.get_by_label("Reply").fill("Hello, Mia here. Sorry about that: I am sending a new one today.")
    staff.get_by_role("button", name="Send", exact=True).click()
    expect(staff.locator(".messagelist")).to_contain_text("Your reply was sent.")

    # The customer sees it without a reload, marked as from a person.
    reply = customer.locator('#log [data-role="staff"]')
    expect(reply).to_have_count(1, timeout=LIVE)
    expect(reply.locator(".author")).to_have_text("Mia")
    expect(reply.locator(".bubble")).to_contain_text("Hello, Mia here.")
    expect(banner).to_have_attribute("data-state", "staff")
    assert customer.evaluate("() => window.notReloaded") is True

    customer.reload()
    expect(customer.locator('#log [data-role="staff"] .bubble')).to_contain_text("Hello, Mia here.")
    expect(banner).to_have_attribute("data-state", "staff")

    # The name is remembered; the staff member hands back.
    expect(staff.get_by_label("Your name for customers")).to_have_value("Mia")
    staff.get_by_role("button", name="Hand back to the assistant").click()
    expect(staff.locator(".messagelist")).to_contain_text("Handed back")

    expect(customer.locator('#log [data-role="event"]').last).to_contain_text(
        "Mia handed you back to the assistant", timeout=LIVE
    )
    expect(banner).to_be_hidden()
    send(customer, "Are you there?")
    expect(customer.locator('#log [data-role="assistant"] .bubble').last).to_have_text("Echo: Are you there?")

    staff.reload()
    expect(staff.locator(".inline-related td.field-content").last).to_have_text("Echo: Are you there?")
    staff.goto("/admin/")
    expect(staff.locator("#handoff-queue .waiting-count")).to_have_text("0")
