"""Secure by default: deploy checks, headers, cross-site refusal, the admin's CSRF."""

import os
import subprocess
import sys

import pytest
from django.test import Client

from conversations.models import Conversation
from devtools.processes import ROOT

from .helpers import post_chat

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
    for command, extra in [
        (["-c", "import chatsite.asgi"], {}),  # the web process, as gunicorn loads it
        (["manage.py", "check"], {"DJANGO_DEBUG": "0"}),
    ]:
        result = subprocess.run([sys.executable, *command], cwd=ROOT, env={**env, **extra},
                                capture_output=True, text=True)
        assert result.returncode != 0, command
        assert "DJANGO_SECRET_KEY" in result.stderr, command


def test_manage_py_from_a_plain_shell_gets_development_settings():
    """The README's support commands work in a new terminal with nothing set: as `make run`, DEBUG on."""
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
