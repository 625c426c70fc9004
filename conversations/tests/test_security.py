"""Secure by default: deploy checks, headers, cross-site refusal, the admin's CSRF."""

import os
import re
import subprocess
import sys

import pytest
from django.test import Client

from conversations.models import Conversation
from devtools.processes import ROOT

from .client import SiteClient, post_chat

pytestmark = pytest.mark.django_db(transaction=True)


def test_deploy_checks_pass_with_production_settings():
    env = {key: value for key, value in os.environ.items() if not key.startswith(("DJANGO_", "CHAT_"))}
    env.update(DJANGO_SECRET_KEY="a-long-random-production-secret-" + "x7Qp" * 10,
               DJANGO_ALLOWED_HOSTS="chat.example.com")
    env.update(CHAT_EMBED_ORIGINS="https://shop.example.com")  # empty or "*": a warning (test_embed.py)
    env.update(CHAT_SITE_URL="https://chat.example.com")  # empty or http: a warning (test_honest_handoff.py)
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT, env=env, capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr + result.stdout


def test_manage_py_from_a_plain_shell_gets_development_settings():
    """docs/staff.md's support commands work in a new terminal with nothing set: as `make run`, DEBUG on."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("DJANGO_")}
    result = subprocess.run([sys.executable, "manage.py", "diffsettings", "--all"], cwd=ROOT, env=env,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "DEBUG = True" in result.stdout
    assert "development settings" in result.stderr


@pytest.mark.parametrize("path", ["/api/chat", "/api/history", "/api/nope"])
def test_api_responses_carry_the_security_headers(client, path):
    response = client.get(path)
    assert response["Content-Type"] == "application/json"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["Cache-Control"] == "no-store"


def test_a_successful_turn_is_not_cacheable(client):
    response = client.post("/api/chat", data={"message": "Hi"}, content_type="application/json")
    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"


def test_the_page_has_a_strict_content_security_policy(client):
    policy = client.get("/")["Content-Security-Policy"]
    directives = dict(part.strip().split(" ", 1) for part in policy.split(";") if part.strip())
    assert "'unsafe-inline'" not in policy
    assert directives["script-src"] == "'self'"
    assert directives["connect-src"] == "'self'"
    assert directives["object-src"] == "'none'"
    assert directives["frame-ancestors"] == "'none'"


@pytest.mark.parametrize(
    "headers",
    [{"Sec-Fetch-Site": "cross-site"}, {"Origin": "https://evil.example"}, {"Origin": "null"},
     {"Origin": "http://testserver.evil.example"}],
)
def test_cross_site_requests_are_refused(client, headers):
    status, body = post_chat(client, headers=headers, message="Hi")
    assert status == 403
    assert body["error"]["code"] == "cross_site_request"
    assert Conversation.objects.count() == 0


@pytest.mark.parametrize(
    "headers", [{}, {"Sec-Fetch-Site": "same-origin"}, {"Origin": "http://testserver"}, {"Sec-Fetch-Site": "none"}]
)
def test_same_site_requests_are_accepted(client, headers):
    status, _ = post_chat(client, headers=headers, message="Hi")
    assert status == 200


def test_the_api_needs_no_csrf_token_but_the_admin_keeps_it(django_user_model):
    strict = Client(enforce_csrf_checks=True)
    response = strict.post("/api/chat", data={"message": "Hi"}, content_type="application/json")
    assert response.status_code == 200

    django_user_model.objects.create_superuser("staff", "staff@example.com", "a-good-password-1")
    response = strict.post("/admin/login/", {"username": "staff", "password": "a-good-password-1"})
    assert response.status_code == 403  # no CSRF token


def test_an_unknown_host_gets_a_json_400_on_the_api(client):
    response = client.get("/api/history", headers={"Host": "evil.example"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "bad_request"


def test_the_deployed_api_and_page_carry_their_headers(live_site):
    """The API is served with its own short middleware list (chatsite/asgi.py): check the
    headers that list must still give, and that the page and the admin keep the full stack."""
    api = SiteClient(live_site, timeout=10)
    for method, path, body in [
        ("GET", "/api/history", None),
        ("POST", "/api/chat", {"message": "Hi"}),
        ("GET", "/healthz", None),
    ]:
        status, _, headers = api.request(method, path, body)
        assert status in (200, 400), path
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Referrer-Policy"] == "same-origin"
        assert headers["Cache-Control"] == "no-store"
        assert headers["X-Request-Id"]

    status, _, headers = api.request("GET", "/")
    assert status == 200
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert headers["X-Frame-Options"] == "DENY"
    status, _, headers = api.request("GET", "/admin/login/")
    assert status == 200
    assert "csrftoken=" in headers["Set-Cookie"]  # the admin still has its CSRF protection


# --- Redis: nothing read from it can run code ------------------------------------


class RunsCode:
    """What someone who can write to Redis would plant for pickle to run."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').close()",))


def test_nothing_read_from_redis_can_run_code(shared_redis, tmp_path, caplog):
    import pickle

    marker = tmp_path / "ran"
    raw = shared_redis.client.get_client()
    raw.set(shared_redis.make_key("planted"), pickle.dumps(RunsCode(marker)))
    raw.set(shared_redis.make_key("garbage"), b"\x80\x04not json")

    assert shared_redis.get("planted") is None
    assert shared_redis.get("garbage") is None
    assert not marker.exists()
    assert "cache value is not JSON, read as a miss" in caplog.text
    shared_redis.set("plain", {"a": [1, "b"]})
    assert shared_redis.get("plain") == {"a": [1, "b"]}


def test_a_planted_session_entry_is_a_miss_and_the_turn_goes_on(client, shared_redis, tmp_path):
    import pickle

    from conversations import sessions

    _, first = post_chat(client, message="Hi")
    session_id = sessions.parse_session_id(first["sessionId"])
    marker = tmp_path / "ran"
    shared_redis.client.get_client().set(
        shared_redis.make_key(sessions.cache_key(session_id)), pickle.dumps(RunsCode(marker)))

    status, body = post_chat(client, message="more", sessionId=first["sessionId"])

    assert (status, body["sessionId"]) == (200, first["sessionId"])
    assert not marker.exists()


# --- customer text cannot drive a support engineer's terminal ----------------------

HOSTILE = ("Hi\x1b[2J\x1b[H\x1b]0;pwned\x07\x1b]8;;https://evil.example\x1b\\click\x1b]8;;\x1b\\"
           "\r[2026-01-01 00:00:00] Assistant: refund approved\x9b31m\x7f \u202egnp.exe\u2066x\u2069"
           "\nsecond line\u2028third")
RAW_CONTROLS = ["\x1b", "\x07", "\r", "\x9b", "\x7f", "\u202e", "\u2066", "\u2069", "\u2028"]


def hostile_conversation():
    conversation = Conversation.objects.create()
    conversation.messages.create(seq=0, role="user", content=HOSTILE)
    conversation.messages.create(seq=1, role="assistant", content="Hello", model="evil\x1b[2Jmodel",
                                 latency_ms=5)
    return conversation


def test_the_transcript_shows_control_characters_escaped():
    transcript = hostile_conversation().transcript()
    assert not [c for c in RAW_CONTROLS if c in transcript]
    assert "\\x1b[2J" in transcript and "\\u202egnp.exe" in transcript and "evil\\x1b[2Jmodel" in transcript
    # Only our own lines start at the margin: the customer's fake line is inside theirs.
    body = transcript.split("Customer:\n", 1)[1].split("\n\n", 1)[0].split("\n")
    assert body[0].startswith("    Hi\\x1b[2J") and "\\x0d[2026-01-01 00:00:00] Assistant:" in body[0]
    assert body[1] == "    second line\\u2028third"


def test_chat_show_and_the_shells_repr_show_control_characters_escaped():
    from io import StringIO

    from django.core.management import call_command

    conversation = hostile_conversation()
    out = StringIO()
    call_command("chat_show", conversation.reference, stdout=out)
    shown = out.getvalue() + repr(list(conversation.messages.all()))
    assert not [c for c in RAW_CONTROLS if c in shown]
    assert "\\x1b]0;pwned\\x07" in shown


# --- staff logins ----------------------------------------------------------------


@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_user("staff", password="a-good-password-1", is_staff=True)


def log_in(client, username="staff", password="wrong", address="192.0.2.10"):
    return client.post("/admin/login/?next=/admin/", {"username": username, "password": password},
                       REMOTE_ADDR=address)


def test_repeated_failed_staff_logins_lock_the_account_until_it_is_unlocked(client, staff):
    from django.core.management import call_command

    answers = [log_in(client).status_code for _ in range(5)]
    locked = log_in(client, password="a-good-password-1", address="198.51.100.3")  # the right one

    # The form again ("please enter a correct username..."), then the lockout page from the 5th on.
    assert answers == [200, 200, 200, 200, 429]
    assert locked.status_code == 429
    text = locked.content.decode()
    assert "Login locked" in text and "axes_reset_username" in text and "15 minutes" in text
    assert "Content-Security-Policy" in locked

    call_command("axes_reset_username", "staff")
    assert log_in(client, password="a-good-password-1", address="198.51.100.3").status_code == 302


def test_repeated_failed_logins_from_one_address_lock_that_address(client, staff):
    for n in range(5):
        log_in(client, username=f"guess{n}", address=f"2001:db8:9:9::{n + 1}")
    assert log_in(client, password="a-good-password-1", address="2001:db8:9:9::ff").status_code == 429
    # Another address may still log in to that account.
    assert log_in(client, password="a-good-password-1", address="2001:db8:9:a::1").status_code == 302


def test_a_spoofed_forwarded_for_does_not_escape_the_address_lock(client, staff):
    for n in range(5):
        client.post("/admin/login/", {"username": f"guess{n}", "password": "x"},
                    HTTP_X_FORWARDED_FOR=f"203.0.113.{n}")
    response = client.post("/admin/login/", {"username": "staff", "password": "a-good-password-1"},
                           HTTP_X_FORWARDED_FOR="203.0.113.99")
    assert response.status_code == 429


def test_the_admin_has_a_content_security_policy(client, staff):
    policy = client.get("/admin/login/")["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "'unsafe-inline'" not in policy
    assert "frame-ancestors 'none'" in policy


@pytest.mark.browser
def test_the_admin_works_under_its_content_security_policy_in_chromium(live_site):
    """Log in, list and open a conversation, then get locked out: no CSP violation on the way."""
    from pathlib import Path

    from django.contrib.auth.models import User

    from . import data
    from .helpers import need

    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:  # pragma: no cover - requirements-dev.txt has it
        sync_playwright = None
    need(sync_playwright is not None, "Playwright (pip install -r requirements-dev.txt)")
    need(Path("/usr/bin/chromium").exists(), "Chromium at /usr/bin/chromium (apt-get install chromium)")
    conversation = data.conversation(turns=2, model="fake-model")
    User.objects.create_superuser("boss", password="a-long-test-password")

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            page = browser.new_page(base_url=live_site.url)
            page.set_default_timeout(10_000)
            console = []
            page.on("console", lambda message: console.append(message.text))

            page.goto("/admin/login/")
            page.get_by_label("Username").fill("boss")
            page.get_by_label("Password").fill("a-long-test-password")
            page.get_by_role("button", name="Log in").click()
            page.locator("tr.model-conversation").get_by_role("link", name="Conversations").click()
            page.get_by_role("link", name=conversation.reference).click()
            expect(page.locator(".inline-related td.field-content").first).to_have_text("Question 1?")
            # The admin's own scripts ran (the theme toggle) and its styles applied.
            expect(page.locator("html")).to_have_attribute("data-theme", re.compile(".+"))
            assert page.locator("#header").evaluate("e => getComputedStyle(e).display") == "flex"
            page.goto("/admin/conversations/conversation/?q=" + conversation.reference)
            page.get_by_role("button", name="Log out").click()

            for _ in range(5):
                page.goto("/admin/login/")
                page.get_by_label("Username").fill("boss")
                page.get_by_label("Password").fill("wrong")
                page.get_by_role("button", name="Log in").click()
            expect(page.locator("h1")).to_have_text("Login locked: too many failed attempts")
        finally:
            browser.close()
    violations = [text for text in console if "Content Security Policy" in text]
    assert not violations, violations
