"""Secure by default: deploy checks, headers, cross-site refusal, the admin's CSRF."""

import os
import subprocess
import sys

import pytest
from django.test import Client

from conversations.models import Conversation

from .conftest import ROOT, post_chat

pytestmark = pytest.mark.django_db(transaction=True)


def test_deploy_checks_pass_with_production_settings():
    env = {key: value for key, value in os.environ.items() if not key.startswith(("DJANGO_", "CHAT_"))}
    env.update(DJANGO_SECRET_KEY="a-long-random-production-secret-" + "x7Qp" * 10,
               DJANGO_ALLOWED_HOSTS="chat.example.com")
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT, env=env, capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr + result.stdout


def test_production_settings_refuse_to_start_without_a_secret_key():
    env = {key: value for key, value in os.environ.items() if not key.startswith("DJANGO_")}
    result = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=env,
                            capture_output=True, text=True)
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY" in result.stderr


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
    import urllib.error
    import urllib.request

    def get(path, **kwargs):
        request = urllib.request.Request(f"{live_site.url}{path}", **kwargs)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.headers
        except urllib.error.HTTPError as error:
            return error.code, error.headers

    for path, kwargs in [
        ("/api/history", {}),
        ("/api/chat", {"data": b'{"message": "Hi"}', "headers": {"Content-Type": "application/json"}}),
        ("/healthz", {}),
    ]:
        status, headers = get(path, **kwargs)
        assert status in (200, 400), path
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Referrer-Policy"] == "same-origin"
        assert headers["Cache-Control"] == "no-store"
        assert headers["X-Request-Id"]

    status, headers = get("/")
    assert status == 200
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert headers["X-Frame-Options"] == "DENY"
    status, headers = get("/admin/login/")
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
