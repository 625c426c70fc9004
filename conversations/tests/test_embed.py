"""The chat on a shop's own pages, without a browser: who may frame /embed, the deploy check,
the setting's format, the loader's size. (In Chromium: test_browser_embed.py.)"""

import gzip
import os
import subprocess
import sys

import pytest
from django.core.checks import run_checks

from devtools.processes import ROOT

pytestmark = pytest.mark.django_db

LOADER = ROOT / "static" / "widget.js"


def frame_ancestors(response) -> str:
    policy = dict(part.strip().split(" ", 1) for part in response["Content-Security-Policy"].split(";"))
    return policy["frame-ancestors"]


def test_the_embedded_page_may_be_framed_by_the_listed_origins_only(client, settings):
    settings.CHAT_EMBED_ORIGINS = ["https://shop.example", "http://127.0.0.1:8080"]

    response = client.get("/embed")

    assert response.status_code == 200
    assert frame_ancestors(response) == "https://shop.example http://127.0.0.1:8080"
    assert not response.has_header("X-Frame-Options")
    # The rest of the page's policy is the chat page's own: no inline script, nothing from elsewhere.
    assert "script-src 'self';" in response["Content-Security-Policy"]
    assert "connect-src 'self';" in response["Content-Security-Policy"]
    # It tells embed.js whose messages to take, and starts there instead of main.js.
    page = response.content.decode()
    assert '<meta name="chat-embed-origins" content="https://shop.example http://127.0.0.1:8080">' in page
    assert "chat/embed." in page and "chat/main." not in page


def test_with_no_origin_listed_nobody_may_frame_it(client, settings):
    settings.CHAT_EMBED_ORIGINS = []

    response = client.get("/embed")

    assert frame_ancestors(response) == "'none'"


@pytest.mark.parametrize("path", ["/", "/admin/login/"])
def test_every_other_page_keeps_refusing_to_be_framed(client, settings, path):
    settings.CHAT_EMBED_ORIGINS = ["https://shop.example"]

    response = client.get(path)

    assert response["X-Frame-Options"] == "DENY"
    assert frame_ancestors(response) == "'none'"
    assert "embed" not in response.content.decode().lower()


@pytest.mark.parametrize("origins, warning", [
    ([], "conversations.W001"),
    (["*"], "conversations.W002"),
    (["https://shop.example", "*"], "conversations.W002"),
    (["https://shop.example"], None),
])
def test_check_deploy_warns_when_nobody_or_anybody_may_embed(settings, origins, warning):
    settings.CHAT_EMBED_ORIGINS = origins
    settings.CHAT_SITE_URL = "https://chat.example.com"  # else its own warning (test_honest_handoff.py)

    found = [message.id for message in run_checks(include_deployment_checks=True)
             if message.id.startswith("conversations.")]

    assert found == ([warning] if warning else [])
    # Not outside `check --deploy`: a development run has no shop.
    assert not [m for m in run_checks() if m.id.startswith("conversations.")]


@pytest.mark.parametrize("value, expected", [
    ("https://Shop.Example/, http://127.0.0.1:8080", "['https://shop.example', 'http://127.0.0.1:8080']"),
    ("", "[]"),
    ("*", "['*']"),
])
def test_the_origins_setting_is_read_as_origins(value, expected):
    assert read_setting(value).stdout.strip() == expected


@pytest.mark.parametrize("value", ["shop.example", "https://shop.example/path", "https://shop.example; script-src *"])
def test_a_malformed_origin_stops_the_site_from_starting(value):
    """It would otherwise fail silently in the browser, or write into the page's CSP."""
    result = read_setting(value)
    assert result.returncode != 0
    assert "CHAT_EMBED_ORIGINS: " in result.stderr and "is not an origin" in result.stderr


def read_setting(value: str) -> subprocess.CompletedProcess:
    env = {key: val for key, val in os.environ.items() if not key.startswith("CHAT_")}
    env.update(DJANGO_SECRET_KEY="t", CHAT_EMBED_ORIGINS=value)
    return subprocess.run(
        [sys.executable, "-c", "from chatsite import settings; print(settings.CHAT_EMBED_ORIGINS)"],
        cwd=ROOT, env=env, capture_output=True, text=True,
    )


def test_the_loader_is_small():
    """The one script a shop adds to every page: under 8 KB gzipped (the issue's bound)."""
    assert len(gzip.compress(LOADER.read_bytes(), 9)) < 8 * 1024


def test_the_loader_is_served_under_its_own_name(client):
    """Shops link /static/widget.js, which must not change name with its content."""
    response = client.get("/static/widget.js")

    assert response.status_code == 200
    assert "javascript" in response["Content-Type"]
