"""The staff side's own pages in the staff member's admin language (docs/i18n.md): the conversations
list, the queue, the live view, the profile, the live view's JSON errors and the scripts' words (the
project's JavaScript catalog, loaded before static/admin-chat/*.js). Emails and transcripts stay English."""

import re
import uuid

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import translation

from conversations import sessions
from conversations.models import Session, StaffProfile
from conversations.views import catalog_version

from . import data
from .test_inbox import BASE, PROFILE, QUEUE, live, waiting

pytestmark = pytest.mark.django_db(transaction=True)

GERMAN = {"Accept-Language": "de-DE,de;q=0.9"}


@pytest.fixture
def superuser() -> Client:
    user = User.objects.create_superuser("chef", password="a-long-test-password")
    StaffProfile.set_name(user, "Mia")
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def quiet(settings):
    settings.CHAT_HANDOFF_EMAILS = []
    settings.OPENAI_API_KEY = ""  # the summary from the offline responder: no LLM


def page(client: Client, url: str, headers=None) -> str:
    response = client.get(url, headers=headers or {})
    assert response.status_code == 200, (url, response.status_code)
    return response.content.decode()


def absent(html: str, *english: str) -> None:
    for text in english:
        assert text not in html, text


def test_a_german_admin_gets_the_conversations_list_in_german(superuser, quiet):
    waiting()
    html = page(superuser, BASE, GERMAN)
    # The filter, its choices, a column, the actions, the search help: this project's words.
    assert "Mit fehlgeschlagenen Runden" in html and "Ohne fehlgeschlagene Runden" in html
    assert "Alle Geräte der ausgewählten Unterhaltungen abmelden (ein verlorenes Telefon)" in html
    assert "Ausgewählte Unterhaltungen als JSON Lines exportieren" in html
    assert "Die ganze Sitzungs-ID oder die 8-stellige Referenz, die der Kunde sieht." in html
    assert ">Referenz<" in html
    # The header of every staff page.
    assert "Wartend:" in html and ">Ihr Profil</a>" in html and "Benachrichtigen" in html
    absent(html, "Has failed turns", "No failed turns", "End all devices", "Export selected conversations",
           "The whole session id", "Waiting:", "Your profile", "Notify me")


def test_the_same_list_in_english_keeps_its_english_words(superuser, quiet):
    waiting()
    html = page(superuser, BASE, {"Accept-Language": "en"})
    assert "Has failed turns" in html and "Waiting:" in html and "Your profile" in html
    absent(html, "Mit fehlgeschlagenen Runden", "Wartend:")


def test_a_german_admin_gets_the_queue_in_german(superuser, quiet):
    conversation = waiting()
    html = page(superuser, QUEUE, GERMAN)
    assert "Offen (wartend und beantwortet)" in html  # admin's "All", renamed, in German too
    assert ">Wartend</a>" in html and ">Beantwortet</a>" in html and ">Geschlossen</a>" in html
    assert "Wartet seit" in html and "Die letzte Nachricht des Kunden" in html
    assert "warten auf eine Person" in html  # the handoff state (the model's choice label)
    assert conversation.reference in html
    absent(html, "Open (waiting and answered)", "Waiting for", "the customer's latest message", "waiting for a person",
           ">Answered<", ">Closed<")


def test_a_german_admin_gets_the_live_view_in_german(superuser, quiet):
    conversation = waiting()
    html = page(superuser, live(conversation), GERMAN)
    assert f"<h1>Unterhaltung {conversation.reference}</h1>" in html
    assert ">Warten auf eine Person</a>" in html  # the breadcrumb
    assert "Warten auf eine Person, seit <time" in html  # the state line
    assert '<h2 id="summary-title">Zusammenfassung</h2>' in html
    assert "Die letzten Nachrichten des Kunden" in html and "Was der Assistent schon beantwortet hat" in html
    assert "Antworten als <strong>Mia</strong>" in html and ">Namen ändern</a>" in html
    assert ">An den Assistenten zurückgeben</button>" in html and ">Unterhaltung schließen</button>" in html
    assert 'aria-label="Wer diese Unterhaltung beantwortet"' in html
    assert "Strg+Eingabe (⌘+Eingabe auf einem Mac) sendet." in html
    assert ">Kunde\n" in html  # who wrote the customer's message
    absent(html, f"Conversation {conversation.reference}", "Summary", "The customer's latest messages",
           "Reply as", "Hand back to the assistant", "Close the conversation", "Who answers", "Customer\n",
           ", since", "Details and history")


def test_a_german_admin_gets_a_conversations_page_in_german(superuser, quiet):
    conversation = waiting()
    html = page(superuser, f"{BASE}{conversation.pk}/change/", GERMAN)
    assert ">Live-Ansicht öffnen</a> (dem Kunden wie in einem Chat antworten)" in html
    assert f"<title>Unterhaltung {conversation.reference} |" in html  # the conversation's name (its __str__)
    assert "<h2>Sitzungs-ID</h2>" in html and "Vollständige Sitzungs-ID anzeigen" in html
    assert "<h2>Dem Kunden antworten</h2>" in html and "Ihr Name für Kunden:</label>" in html
    assert ">An den Assistenten zurückgeben</button>" in html
    assert "Runden, die der Assistent nicht beantworten konnte." in html  # a field's help text
    assert "Warten auf eine Person" in html  # the handoff field
    assert "<p>Kunde</p>" in html and "<p>Vollständig</p>" in html  # a message's role and status (choice labels)
    absent(html, f"Conversation {conversation.reference}", "Open the live view", "Show the full session id", "Answer the customer", "Your name for customers",
           "Turns the assistant could not answer.", "Hand back to the assistant")
    # The models' and fields' own names (their verbose names): the messages' columns, a field's label.
    assert 'class="column-role">Rolle' in html and 'class="column-content">Inhalt' in html
    assert "<label>Letzte Aktivität:</label>" in html and "<label>E-Mail des Kunden:</label>" in html
    absent(html, 'class="column-role">Role', 'class="column-content">Content', "Last activity at", "Customer email")


def test_a_german_admin_gets_the_models_names_in_german(superuser, quiet):
    html = page(superuser, "/admin/", GERMAN)
    for name in ("Unterhaltungen", "Gespeicherte Antworten", "Team-Profile"):
        assert f">{name}</a>" in html, name
    absent(html, ">Conversations</a>", ">Saved replies</a>", ">Staff profiles</a>")


def test_a_german_admin_gets_the_profile_page_in_german(superuser, quiet):
    html = page(superuser, PROFILE, GERMAN)
    assert "<title>Ihr Profil |" in html
    assert "Ihr Name für Kunden:</label>" in html
    assert "Wird mit Ihren Antworten und Rückgaben angezeigt" in html
    absent(html, "Your name for customers", "Shown with your replies", "Your profile")
    # What saving says, and what a blank name gets.
    saved = superuser.post(PROFILE, {"display_name": "Mia"}, headers=GERMAN, follow=True).content.decode()
    assert "Gespeichert: Ihre Antworten werden mit diesem Namen unterzeichnet." in saved
    blank = superuser.post(PROFILE, {"display_name": "  "}, headers=GERMAN).content.decode()
    assert "Wählen Sie den Namen, den Kunden bei Ihren Antworten sehen." in blank


def test_the_end_devices_message_has_a_plural_for_each_count(admin_client):
    lost = data.conversation()
    other = Session.objects.create(session_id=uuid.uuid4(), conversation=lost).session_id
    for session_id in (lost.session_id, other):
        sessions.remember(session_id, lost.pk, lost.last_activity_at)
    form = {"action": "end_devices", "_selected_action": [lost.pk]}

    german = admin_client.post(BASE, form, headers=GERMAN, follow=True).content.decode()
    assert "2 Sitzungen von 1 Unterhaltung beendet." in german
    english = admin_client.post(BASE, form, follow=True).content.decode()  # none left to end
    assert "Ended 0 sessions of 1 conversation." in english


def test_the_live_views_json_errors_are_in_the_admins_language(superuser, quiet):
    conversation = waiting()

    def error(response) -> str:
        assert response["Content-Type"] == "application/json"
        return response.json()["error"]["message"]

    assert error(superuser.get(live(conversation, "send/"), headers=GERMAN)) == "Verwenden Sie POST für diesen Endpunkt."
    assert error(superuser.get(live(conversation, "updates/") + "?after=x", headers=GERMAN)) == (
        "after muss die seq der zuletzt angezeigten Nachricht sein (-1 für keine).")
    assert error(superuser.get(f"{BASE}999999/live/updates/?after=-1&wait=0", headers=GERMAN)) == (
        "Keine Unterhaltung hat diese ID.")
    assert error(Client().get(live(conversation, "updates/"), headers=GERMAN)) == "Melden Sie sich zuerst in der Verwaltung an."
    # French with its no-break space before the colon; English as before.
    assert error(superuser.get(live(conversation, "updates/") + "?after=0&state=nope",
                               headers={"Accept-Language": "fr"})) == (
        "state doit être l’une de ces valeurs\u00a0: assistant, waiting, staff.")
    assert error(superuser.get(live(conversation, "send/"))) == "Use POST for this endpoint."


def scripts(html: str) -> list[str]:
    return re.findall(r'<script src="([^"]+)"', html)


@pytest.mark.parametrize("language", ["de", "fr", "es", "ar", "en"])
def test_the_staff_pages_load_the_catalog_of_their_language_before_their_scripts(superuser, quiet, language):
    conversation = waiting()
    catalog = f"/jsi18n/{catalog_version()}/{language}.js"
    for url in ("/admin/", QUEUE, PROFILE, live(conversation)):
        found = scripts(page(superuser, url, {"Accept-Language": language}))
        header = next(i for i, src in enumerate(found) if "admin-chat/header" in src)
        assert catalog in found, (url, found)
        assert found.index(catalog) < header, (url, found)  # deferred scripts run in document order
        assert f'<script src="{catalog}" defer>' in page(superuser, url, {"Accept-Language": language})
    found = scripts(page(superuser, live(conversation), {"Accept-Language": language}))
    live_js = next(i for i, src in enumerate(found) if "admin-chat/live" in src)
    assert found.index(catalog) < live_js


def test_the_catalog_has_the_staff_scripts_words():
    """What live.js and header.js ask gettext() for is in the catalog the staff pages load."""
    text = Client().get(f"/jsi18n/{catalog_version()}/de.js").content.decode()
    for german in ("Ein Kunde wartet auf eine Person", "Unterhaltung %(reference)s", "Der Assistent antwortet",
                   "Gespeicherte Antwort", "%(author)s (Team)"):
        assert german in text, german


def test_transcripts_and_the_emails_to_staff_stay_english_under_another_language(quiet):
    conversation = waiting()
    with translation.override("de"):
        assert conversation.get_handoff_display() == "warten auf eine Person"  # the admin shows it so
        assert ", waiting for a person" in conversation.transcript()
        assert conversation.handoff_in_english() == "waiting for a person"
