"""The customer's language through a whole turn: the LLM told it, the offline responder answering in it,
the conversation recording it (languages.py; the store's side: test_store_contract.py)."""

import uuid

import pytest
from django.utils import translation

from conversations import languages
from conversations.models import Conversation

from .client import post_chat

pytestmark = pytest.mark.django_db(transaction=True)


def _system_prompt(request: dict) -> str:
    return request["messages"][0]["content"]


@pytest.mark.parametrize("language, name", [("de", "German"), ("ar", "Arabic"), ("en", "English")])
def test_the_llm_is_told_to_answer_in_the_customers_language(client, llm, language, name):
    with translation.override(language):  # as the i18n middleware leaves it for the request
        status, body = post_chat(client, headers={"Accept-Language": language}, message="Hello")
    assert status == 200, body
    prompt = _system_prompt(llm.requests()[-1])
    assert f"The customer's page is in {name}: answer in {name}." in prompt
    assert Conversation.objects.get(session_id=body["sessionId"]).language == language


def test_an_english_faq_is_given_to_the_llm_with_the_instruction_to_translate(client, llm):
    with translation.override("fr"):
        post_chat(client, headers={"Accept-Language": "fr"}, message="Quelle est votre politique de retour ?")
    prompt = _system_prompt(llm.requests()[-1])
    assert "answer in French. The FAQ is in English: translate what you use from it." in prompt
    assert "Q: What is your return policy?" in prompt


def test_the_offline_responder_answers_a_german_customer_from_the_german_file(client, settings):
    settings.OPENAI_API_KEY = ""
    with translation.override("de"):
        status, body = post_chat(client, headers={"Accept-Language": "de"}, message="Kann ich mit PayPal bezahlen?")
    assert status == 200, body
    assert body["reply"].startswith("Wir akzeptieren Visa, Mastercard")


@pytest.mark.django_db
def test_the_page_suggests_questions_and_shows_contact_details_from_the_file_in_its_language(client):
    german = client.get("/", headers={"Accept-Language": "de-DE,de;q=0.9"}).content.decode()
    french = client.get("/", headers={"Accept-Language": "fr"}).content.decode()  # no faq.fr.md

    assert "Wie sind Ihre Rückgaberegeln?" in german and "What is your return policy?" not in german
    assert "What is your return policy?" in french


def test_a_language_code_is_read_as_one_of_the_sites_languages():
    assert [languages.code(v) for v in ("de-AT", "fr", "AR", "pt-BR", "", None)] == ["de", "fr", "ar", "en", "en", "en"]
    with translation.override("es"):
        assert languages.current() == "es"
    assert languages.english_name("de") == "German"


def test_a_conversation_inserted_by_the_code_before_the_migration_reads_as_english():
    """During a rolling deploy a worker of the previous release inserts conversations without the
    new columns: the database's defaults fill them."""
    from django.db import connection
    from django.utils import timezone

    new = {"language", "staff_summary_language"}
    fields = [f for f in Conversation._meta.concrete_fields if not f.primary_key and f.attname not in new]
    values = Conversation(session_id=uuid.uuid4())
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {Conversation._meta.db_table} ({', '.join(f.column for f in fields)}) "
            f"VALUES ({', '.join(['%s'] * len(fields))})",
            [f.get_db_prep_save(getattr(values, f.attname), connection) for f in fields],
        )
    stored = Conversation.objects.get(session_id=values.session_id)
    assert (stored.language, stored.staff_summary_language) == ("en", "")
    assert stored.created_at <= timezone.now()
