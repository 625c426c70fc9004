"""The site in the customer's language (docs/i18n.md): the shipped translations are complete and
up to date with the code, and the page, the catalog and the API answer in the language asked for."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.test import RequestFactory
from django.utils import translation

from conversations.middleware import request_language

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]
LOCALE = ROOT / "locale"
SHIPPED = [code for code, _name in settings.LANGUAGES if code != settings.LANGUAGE_CODE]
DOMAINS = ("django", "djangojs")
# What `make messages` reads (Makefile, MESSAGES_ARGS): the code, without the tests and the tools.
SOURCES = ("manage.py", "chatsite", "conversations", "templates", "static")


def need_gettext() -> None:
    if not (shutil.which("msgfmt") and shutil.which("xgettext")):
        pytest.fail("GNU gettext is needed (make test installs it; else: apt-get install gettext)")


@pytest.fixture(scope="module", autouse=True)
def compiled():
    """The .mo files, built from the .po files as `make test` does (they are not in git)."""
    need_gettext()
    call_command("compilemessages", locale=SHIPPED, verbosity=0)


def entries(po: Path) -> list[dict]:
    """The .po file's messages (the header left out): msgid, msgid_plural, msgstr(s), flags."""
    found: list[dict] = []
    fields: dict = {}
    key = None
    for line in po.read_text(encoding="utf-8").splitlines() + [""]:
        if (not line.strip() or (line.startswith(("#", "msgid ")) and fields.get("msgstr"))) and fields:
            if fields.get("msgid", [""]) != [""]:
                found.append(fields)
            fields, key = {}, None
        if line.startswith("#,"):
            fields.setdefault("flags", set()).update(flag.strip() for flag in line[2:].split(","))
        elif line.startswith('"'):
            fields[key][-1] += _unquote(line)
        elif line.startswith("msg"):
            name, _space, rest = line.partition(" ")
            key = "msgstr" if name.startswith("msgstr") else name
            fields.setdefault(key, []).append(_unquote(rest))
    return found


def _unquote(text: str) -> str:
    return text.strip()[1:-1].encode("latin-1", "backslashreplace").decode("unicode_escape")


@pytest.mark.parametrize("domain", DOMAINS)
@pytest.mark.parametrize("language", SHIPPED)
def test_every_shipped_message_is_translated(language, domain):
    po = LOCALE / language / "LC_MESSAGES" / f"{domain}.po"
    messages = entries(po)
    assert messages, po
    untranslated = [m["msgid"][0] for m in messages if not all(m["msgstr"]) or "fuzzy" in m.get("flags", ())]
    assert untranslated == [], f"{po}: translate these (and drop any fuzzy flag): {untranslated}"
    # The placeholders survive translation: "%(count)d minutes" may not lose its %(count)d.
    for m in messages:
        wanted = set(re.findall(r"%\(\w+\)[sd]", m["msgid"][0] + "".join(m.get("msgid_plural", []))))
        for text in m["msgstr"]:
            assert set(re.findall(r"%\(\w+\)[sd]", text)) <= wanted, (po, m["msgid"][0], text)


def test_the_po_files_are_up_to_date_with_the_code(tmp_path):
    """makemessages on a copy of the code finds exactly the messages each shipped .po holds: a text
    added or changed in the code without `make messages` (and its translation) fails here."""
    need_gettext()
    for name in SOURCES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, tmp_path / name, ignore=shutil.ignore_patterns("tests", "__pycache__"))
        else:
            shutil.copy(source, tmp_path / name)
    for domain in DOMAINS:
        subprocess.run(
            [sys.executable, "manage.py", "makemessages", "-d", domain, "-l", "de", "--no-location", "--verbosity", "0"],
            cwd=tmp_path, check=True, timeout=120,
            env={"PATH": "/usr/bin:/bin", "DJANGO_SECRET_KEY": "x", "DJANGO_DEBUG": "1", "PYTEST_VERSION": "1"},
        )
        in_code = {m["msgid"][0] for m in entries(tmp_path / "locale" / "de" / "LC_MESSAGES" / f"{domain}.po")}
        assert in_code, domain
        for language in SHIPPED:
            shipped = {m["msgid"][0] for m in entries(LOCALE / language / "LC_MESSAGES" / f"{domain}.po")}
            assert shipped == in_code, (
                f"locale/{language}/LC_MESSAGES/{domain}.po is not up to date: run `make messages` and translate. "
                f"Missing: {sorted(in_code - shipped)}; no longer in the code: {sorted(shipped - in_code)}")


def test_the_widget_has_its_launcher_words_in_every_language():
    """static/widget.js runs on the shop's page, without the catalogs: its table covers LANGUAGES."""
    source = (ROOT / "static" / "widget.js").read_text(encoding="utf-8")
    table = re.search(r"const LABELS = \{(.*?)\};", source, re.S).group(1)
    assert set(re.findall(r"^\s*(\w+): \[", table, re.M)) == {code for code, _name in settings.LANGUAGES}


# --- Which language ---------------------------------------------------------------


@pytest.mark.parametrize(("headers", "query", "expected"), [
    ({}, "", "en"),
    ({"Accept-Language": "de-DE,de;q=0.9,en;q=0.5"}, "", "de"),
    ({"Accept-Language": "fr-FR"}, "", "fr"),
    ({"Accept-Language": "ar-EG"}, "", "ar"),
    ({"Accept-Language": "ja-JP"}, "", "en"),
    ({"Accept-Language": "ja-JP,es;q=0.8"}, "", "es"),
    ({"X-Chat-Language": "de-DE", "Accept-Language": "fr"}, "", "de"),
    ({"X-Chat-Language": "AR", "Accept-Language": "fr"}, "", "ar"),
    ({"X-Chat-Language": "tlh", "Accept-Language": "fr"}, "", "fr"),  # unknown: ignored
    ({"X-Chat-Language": "x" * 500, "Accept-Language": "es"}, "", "es"),
    ({"Accept-Language": "de"}, "lang=es-MX", "es"),  # the embedded chat's host page
    ({"Accept-Language": "de"}, "lang=nope", "de"),
    ({"Accept-Language": "es"}, "lang=fr_FR", "fr"),  # a host page's lang written with "_"
    ({"Accept-Language": "es"}, "lang=../de", "es"),
    ({"Cookie": f"{settings.LANGUAGE_COOKIE_NAME}=fr", "Accept-Language": "de"}, "", "fr"),  # the page's choice
])
def test_the_language_of_a_request(headers, query, expected):
    request = RequestFactory().get("/api/history" + ("?" + query if query else ""), headers=headers)
    assert request_language(request) == expected


def error_of(response) -> dict:
    assert response["Content-Type"] == "application/json"
    return response.json()["error"]


@pytest.mark.parametrize(("headers", "expected"), [
    ({}, "Send the session id in the X-Session-Id header."),
    ({"Accept-Language": "de-DE,de;q=0.9"}, "Senden Sie die Sitzungs-ID im Header X-Session-Id."),
    ({"Accept-Language": "fr-FR"}, "Envoyez l’identifiant de session dans l’en-tête X-Session-Id."),
    ({"Accept-Language": "de", "X-Chat-Language": "es"}, "Envía el identificador de sesión en la cabecera X-Session-Id."),
    ({"X-Chat-Language": "ar"}, "أرسل معرّف الجلسة في الترويسة X-Session-Id."),
])
def test_an_api_error_follows_the_requests_language(client, headers, expected):
    response = client.get("/api/history", headers=headers)
    assert response.status_code == 400
    error = error_of(response)
    assert error == {"code": "invalid_session_id", "message": expected}  # the code stays: clients act on it
    assert "Accept-Language" in response["Vary"]
    assert response["Content-Language"] == (headers.get("X-Chat-Language") or headers.get("Accept-Language", "en"))[:2]


def test_errors_with_numbers_and_class_defaults_are_translated(client, settings):
    settings.CHAT_MESSAGE_MAX_CHARS = 10
    response = client.post("/api/chat", {"message": "x" * 11}, content_type="application/json",
                           headers={"X-Chat-Language": "de"})
    assert error_of(response) == {"code": "message_too_long", "message": "message darf höchstens 10 Zeichen lang sein."}
    response = client.get("/api/nowhere", headers={"Accept-Language": "fr"})
    assert error_of(response)["message"] == "Ce point d’accès de l’API n’existe pas."
    from conversations.errors import TurnInProgress

    with translation.override("es"):
        assert TurnInProgress().message == "Todavía se está respondiendo el mensaje anterior de esta conversación."
    assert TurnInProgress().message == "The previous message in this conversation is still being answered."


def test_the_language_is_active_while_an_api_view_runs(client, monkeypatch):
    """The contract with the turn (which records the customer's language): get_language() in the view."""
    from conversations import views

    seen = []

    async def spy(**kwargs):
        seen.append(translation.get_language())
        raise views.ApiError(404, "not_found", "x")

    monkeypatch.setattr(views.forget, "forget", spy)
    client.get("/api/history", headers={"X-Chat-Language": "fr-CA", "X-Session-Id": "nope"})
    # An invalid id is refused before: ask with a valid one, which the spy answers.
    client.delete("/api/history", headers={"X-Chat-Language": "fr-CA",
                                           "X-Session-Id": "00000000-0000-4000-8000-000000000000"})
    assert seen == ["fr"]


def test_a_streamed_turn_is_written_in_the_customers_language_after_its_view_returned(live_site, llm):
    """The error event of a streamed turn is written by the server after the view and its middleware
    have returned (middleware._written_later): the customer's language must still be active then."""
    from .client import SiteClient

    llm.control("status", status=500)
    streamed = SiteClient(live_site).chat("Wo ist mein Paket?", stream=True, headers={"X-Chat-Language": "de"},
                                          timeout=10)
    with translation.override("de"):
        expected = translation.gettext("The assistant is unavailable right now.")
    assert expected != "The assistant is unavailable right now."
    assert "event: error" in streamed.text and expected in streamed.text, streamed.text
    assert streamed.headers["Content-Language"] == "de"


# --- The page ---------------------------------------------------------------------


@pytest.mark.parametrize(("headers", "lang", "direction", "words"), [
    ({}, "en", "ltr", "Hi! How can we help?"),
    ({"Accept-Language": "de-DE"}, "de", "ltr", "Hallo! Wie können wir helfen?"),
    ({"Accept-Language": "fr-FR"}, "fr", "ltr", "Bonjour\u00a0! Comment pouvons-nous vous aider\u00a0?"),
    ({"Accept-Language": "es"}, "es", "ltr", "¡Hola! ¿En qué podemos ayudarte?"),
    ({"Accept-Language": "ar"}, "ar", "rtl", "مرحبًا! كيف يمكننا مساعدتك؟"),
])
def test_the_page_is_rendered_in_the_language_with_its_direction(client, headers, lang, direction, words):
    response = client.get("/", headers=headers)
    page = response.content.decode()
    assert f'<html lang="{lang}" dir="{direction}">' in page
    assert words in page
    assert f'<option value="{lang}" lang="{lang}" selected>' in page
    assert {"Accept-Language", "Cookie"} <= {v.strip() for v in response["Vary"].split(",")}
    # Its scripts' words: the catalog of the same language, under a URL that changes with the translations.
    [catalog] = re.findall(r'<script defer src="(/jsi18n/[0-9a-f]{12}/' + lang + r'\.js)"></script>', page)
    assert page.index(catalog) < page.index("/static/chat/main")


def test_the_embedded_chat_takes_the_host_pages_language(client):
    page = client.get("/embed?lang=ar-SA", headers={"Accept-Language": "de"}).content.decode()
    assert '<html lang="ar" dir="rtl" class="embedded">' in page


def test_the_message_box_reads_in_its_own_direction(client):
    page = client.get("/").content.decode()
    assert re.search(r'<textarea id="message"[^>]* dir="auto"', page)


def test_the_javascript_catalog_is_cached_for_good_under_its_url(client):
    page = client.get("/", headers={"Accept-Language": "de"}).content.decode()
    [url] = re.findall(r'src="(/jsi18n/[^"]+)"', page)
    response = client.get(url, headers={"Accept-Language": "fr"})  # the URL decides, not the header
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/javascript")
    body = response.content.decode()
    assert "Nicht beantwortet." in body and "Sans réponse." not in body
    assert response["Cache-Control"] == "public, max-age=31536000, immutable"
    assert "Vary" not in response
    # An old page's catalog after the translations changed: served, not kept long.
    stale = client.get(url.replace(url.split("/")[2], "0" * 12))
    assert stale.status_code == 200 and "max-age=300" in stale["Cache-Control"]
    assert client.get(url.replace("/de.js", "/tlh.js")).status_code == 404
