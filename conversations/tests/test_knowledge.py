"""The knowledge file and the offline responder: parsing, matching, the fallback, requests for a person."""

import os

import pytest
from django.conf import settings as django_settings
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from conversations import knowledge

from . import faq_questions as faq

SHIPPED_FAQ = django_settings.BASE_DIR / "knowledge" / "faq.md"


@pytest.fixture(autouse=True)
def _shipped_faq(settings):
    """The questions are written for the FAQ in the repository, whatever the environment says."""
    settings.CHAT_KNOWLEDGE_FILE = SHIPPED_FAQ


# Measured with make faq-eval when these were set: QUESTIONS 80/84 (95%), UNSEEN 22/26 (85%).
# A little below, so that editing a keyword does not fail the build, but losing
# typo tolerance or the keywords does (without typo tolerance: 90%; the old matcher: 43%).
MIN_SHARE_QUESTIONS = 0.92
MIN_SHARE_UNSEEN = 0.8
MIN_SHARE_REALISTIC = 0.9


def test_the_question_set_is_big_and_varied_enough():
    expected = [answer for _, answer in faq.QUESTIONS]
    assert len(faq.QUESTIONS) >= 40
    assert {entry.question for entry in knowledge.entries()} | {faq.CONTACT} <= set(expected)
    assert expected.count(faq.FALLBACK) >= 5 and expected.count(faq.PERSON) >= 5


def test_the_share_answered_right_stays_at_or_above_what_was_measured():
    share, misses = faq.evaluate(faq.QUESTIONS)
    assert share >= MIN_SHARE_QUESTIONS, misses
    share, misses = faq.evaluate(faq.UNSEEN)
    assert share >= MIN_SHARE_UNSEEN, misses


@pytest.mark.parametrize(
    "question, expected",
    [
        # A newcomer's questions from a trial of the site: all used to get the topic list.
        ("I want a refund", faq.RETURNS),
        ("Can I send it back and get my money?", faq.RETURNS),
        ("what's your phone number", faq.CONTACT),
        ("my parcel is late", faq.TRACKING),
        ("Arrive in Austria?", faq.INTERNATIONAL),  # not the domestic shipping times
        # Word forms, typos, a country next to the domestic heading's own words.
        ("returning an item I bought", faq.RETURNS),
        ("retrun policy?", faq.RETURNS),
        ("shiping time", faq.SHIPPING),
        ("How long does shipping to Switzerland take?", faq.INTERNATIONAL),
        ("How long does shipping take?", faq.SHIPPING),
        ("shipping", faq.SHIPPING),  # a word most entries use, but all the customer wrote
        ("Do you deliver to France?", faq.INTERNATIONAL),
        ("Can I talk to a human?", faq.PERSON),
        ("what's the weather in Berlin?", faq.FALLBACK),
    ],
)
def test_must_pass_questions(question, expected):
    assert faq.classify(question) == expected


def test_every_heading_finds_its_own_entry():
    for entry in knowledge.entries():
        assert knowledge.match(entry.question) == entry


def test_an_unanswered_question_gets_the_contact_details_and_the_way_to_a_person_not_the_topic_list():
    answer = knowledge.offline_answer("Do you have a shop in Munich I can visit?")

    assert "Talk to a person" in answer
    assert "support@example.com" in answer and "+49 30 1234 5678" in answer
    assert "Monday to Friday, 9 am to 6 pm" in answer
    assert "return policy" not in answer.lower()  # no list of topics


def test_a_matched_question_gets_the_entry_answer_and_a_contact_question_the_details():
    assert knowledge.offline_answer("I want a refund").startswith("You can return any unused item")
    contact = knowledge.offline_answer("what's your phone number")
    assert "+49 30 1234 5678" in contact and "Talk to a person" not in contact


def test_greetings_and_thanks_get_a_short_reply_not_the_fallback():
    assert knowledge.offline_answer("Hello!").startswith("Hello! How can I help?")
    assert knowledge.offline_answer("thanks a lot").startswith("You're welcome")


def test_a_request_for_a_person_answered_offline_points_to_the_button():
    answer = knowledge.offline_answer("agent please")
    assert "Talk to a person" in answer and "support@example.com" in answer


def test_contact_details_are_the_contact_section_without_its_keywords():
    details = knowledge.contact_details()

    assert details.splitlines()[:3] == [
        "Opening hours: Monday to Friday, 9 am to 6 pm CET",
        "Email: support@example.com (we answer within one business day)",
        "Phone: +49 30 1234 5678",
    ]
    assert "Keywords" not in details


def test_keywords_are_never_shown_to_customers_or_the_llm():
    prompt = knowledge.system_prompt()

    assert "Keywords" not in prompt and "money back" not in prompt
    assert all("Keywords" not in entry.answer for entry in knowledge.entries())
    assert "support@example.com" in prompt and "Talk to a person" in prompt
    assert "Contact" not in [entry.question for entry in knowledge.entries()]


WANTS_PERSON = [
    "Can I talk to a human?",
    "agent please",
    "real person",
    "call me",
    "Please call me back",
    "speak to someone",
    "operator",
    "operator!!",
    "humna",
    "I want to speak to someone about my refund",
    "Can I speak with a representative?",
    "connect me with customer support",
    "i want a real agent not a bot",
    "let me talk to a human",
    "I'd like to talk to a person please",
    "get me a humna now",
    "talk to an opperator",
    "I don't want to talk to a bot, get me a person",
    "My parcel is late and I'm getting annoyed, can I talk to a real person?",
]
NOT_PERSON = [
    "is this product human-safe?",
    "what does the agent fee cover",
    "I need the agent fee refunded",
    "How do I contact customer support?",
    "what's your phone number",
    "I need someone to sign for the parcel, is that needed?",
    "Someone stole my parcel from the doorstep",
    "Is there a staff discount?",
    "are you human?",
    "Is this written by a person?",
    "I don't want to talk to a person",
    "please don't call me",
    "Do people usually return this?",
    "Can I call you?",
    "my order is late",
    "",
]


# Asking whether anyone is there is not asking for a person: the assistant answers, with the offer of one.
ANYONE_THERE = ["is anyone there?", "Hello, anyone there?", "hello?", "anyone there", "is somebody there?",
                "you there?", "are you a bot?", "anybody?"]


@pytest.mark.parametrize("text", ANYONE_THERE)
def test_asking_whether_anyone_is_there_gets_the_offer_of_a_person_not_a_handoff(settings, text):
    settings.CHAT_KNOWLEDGE_FILE = SHIPPED_FAQ
    assert not knowledge.wants_person(text)
    assert knowledge.asks_if_anyone_there(text) and knowledge.suggests_person(text)
    assert "press **Talk to a person**" in knowledge.offline_answer(text)


@pytest.mark.parametrize("text", ["hello", "hi there", "How long does shipping take?", "is it there yet?",
                                  "are you open on Sunday?"])
def test_a_greeting_or_a_question_is_not_asking_whether_anyone_is_there(text):
    assert not knowledge.asks_if_anyone_there(text)


def test_an_upset_customer_gets_an_apology_and_the_offer_before_the_faq_answer(settings):
    settings.CHAT_KNOWLEDGE_FILE = SHIPPED_FAQ
    tracking = next(e for e in knowledge.entries() if e.question == faq.TRACKING).answer

    reply = knowledge.offline_answer("my parcel is two weeks late, I want my money back NOW")

    assert reply.startswith("I'm sorry about this. If you'd like a person from our team to look into it, press "
                            "**Talk to a person**.")
    assert reply.endswith(tracking)
    assert knowledge.suggests_person("my parcel is two weeks late, I want my money back NOW")
    # Calm questions, and capitals that are not shouting, get the answer alone.
    for calm in ["my parcel is two weeks late", "Do you ship to the UK?", "Is the price in EUR?"]:
        assert not knowledge.upset(calm) and not knowledge.offline_answer(calm).startswith("I'm sorry about")


def test_a_yes_no_question_about_what_the_file_does_not_list_is_answered_we_dont_list_it(settings):
    settings.CHAT_KNOWLEDGE_FILE = SHIPPED_FAQ

    assert knowledge.offline_answer("Can I pay with Klarna?").startswith(
        "We don't list Klarna. We accept Visa, Mastercard")
    assert knowledge.offline_answer("Can I pay with PayPal?").startswith("We accept Visa")  # listed
    assert knowledge.offline_answer("Can I return shoes?").startswith("You can return")  # a thing, not a name


def test_two_questions_in_one_message_get_both_answers(settings):
    settings.CHAT_KNOWLEDGE_FILE = SHIPPED_FAQ
    answers = {e.question: e.answer for e in knowledge.entries()}

    reply = knowledge.offline_answer("How long does shipping take and can I pay with PayPal?")

    assert reply == answers[faq.SHIPPING] + "\n\n" + answers[faq.PAYMENT]


def test_the_realistic_set_keeps_its_share_and_the_tuned_sets_do_not_regress(settings):
    settings.CHAT_KNOWLEDGE_FILE = SHIPPED_FAQ
    share, misses = faq.evaluate_answers(faq.REALISTIC)
    assert share >= MIN_SHARE_REALISTIC, misses
    assert {answer for _, answer in faq.REALISTIC} >= {faq.OFFER, faq.PERSON}


@pytest.mark.parametrize("text", WANTS_PERSON)
def test_a_request_for_a_person_is_recognised(text):
    assert knowledge.wants_person(text)


@pytest.mark.parametrize("text", NOT_PERSON)
def test_other_uses_of_person_words_are_not_a_request(text):
    assert not knowledge.wants_person(text)


def test_wants_person_reads_no_file(settings, tmp_path):
    settings.CHAT_KNOWLEDGE_FILE = tmp_path / "missing.md"

    assert knowledge.wants_person("agent please")


FORMAT = """# Our FAQ

A note for the editor: {note}

## Do you sell gift cards?
Keywords: voucher, present card

Yes, from 10 EUR, by email.

# Contact

Keywords: telephone
Opening hours: every day, 8 am to 8 pm
Email: help@shop.example
"""


def test_the_file_format_headings_keywords_contact_and_notes(settings, tmp_path):
    path = tmp_path / "faq.md"
    path.write_text(FORMAT.format(note="ignored"), encoding="utf-8")
    settings.CHAT_KNOWLEDGE_FILE = path

    (entry,) = knowledge.entries()
    assert entry == knowledge.Entry(
        "Do you sell gift cards?", "Yes, from 10 EUR, by email.", ("voucher", "present card")
    )
    assert knowledge.contact_details() == "Opening hours: every day, 8 am to 8 pm\nEmail: help@shop.example"
    assert knowledge.offline_answer("can I buy a voucher?") == "Yes, from 10 EUR, by email."
    assert "help@shop.example" in knowledge.offline_answer("telephone?")
    assert "ignored" not in knowledge.system_prompt()


def test_the_file_is_read_once_and_again_after_it_changes(settings, tmp_path):
    path = tmp_path / "faq.md"
    path.write_text(FORMAT.format(note="one"), encoding="utf-8")
    settings.CHAT_KNOWLEDGE_FILE = path
    knowledge.offline_answer("voucher")
    misses = knowledge._parse.cache_info().misses

    for question in ("voucher", "where is my order", "hello"):
        knowledge.offline_answer(question)
    assert knowledge._parse.cache_info().misses == misses

    path.write_text(FORMAT.replace("10 EUR", "20 EUR"), encoding="utf-8")
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert knowledge.offline_answer("voucher") == "Yes, from 20 EUR, by email."


def test_a_file_without_a_contact_section_still_gives_a_fallback(settings, tmp_path):
    path = tmp_path / "faq.md"
    path.write_text("## Do you sell gift cards?\n\nYes.\n", encoding="utf-8")
    settings.CHAT_KNOWLEDGE_FILE = path

    assert knowledge.contact_details() == ""
    assert knowledge.offline_answer("the weather?").endswith("to ask for a person here.")


@hypothesis_settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_any_text_gets_an_answer(text):
    assert knowledge.offline_answer(text)
    assert knowledge.wants_person(text) in (True, False)


# --- Other languages (languages.py) -------------------------------------------------

# Measured with make faq-eval when set: GERMAN 21/22 (95%).
MIN_SHARE_GERMAN = 0.85


def test_german_questions_are_answered_from_the_german_file():
    share, misses = faq.evaluate_german()
    assert share >= MIN_SHARE_GERMAN, misses
    german = knowledge.offline_answer("Wie lange dauert die Lieferung?", "de")
    assert german.startswith("Innerhalb Deutschlands dauert der Standardversand")
    assert "FAQ" not in german.split("\n")[0]  # no note: it is in German


def test_a_language_without_its_own_file_gets_the_english_answer_under_a_note_in_its_language():
    french = knowledge.offline_answer("Quelle est votre politique de retour ?", "fr")
    note, answer = french.split("\n\n", 1)
    assert note == "*Cette réponse vient de notre FAQ, qui n'existe qu'en anglais.*"
    assert answer.startswith("You can return any unused item")
    spanish = knowledge.offline_answer("¿Cuánto tarda el envío?", "es")
    assert spanish.startswith("*Esta respuesta viene de nuestras preguntas frecuentes")
    assert "Within Germany, standard shipping takes" in spanish


@pytest.mark.parametrize("question, answer", [
    ("ما هي سياسة الإرجاع؟", "You can return any unused item"),
    ("كم يستغرق الشحن؟", "Within Germany, standard shipping takes"),
    ("أريد إلغاء طلبي", "You can change or cancel an order"),
])
def test_an_arabic_question_gets_the_english_answer_with_the_note_not_couldnt_find(question, answer):
    reply = knowledge.offline_answer(question, "ar")
    assert reply.startswith("*هذه الإجابة من الأسئلة الشائعة لدينا")
    assert answer in reply


def test_small_talk_and_couldnt_find_are_in_the_customers_language():
    assert knowledge.offline_answer("Danke!", "de").startswith("Gern geschehen!")
    assert knowledge.offline_answer("Hallo", "de").startswith("Hallo! Wie kann ich helfen?")
    assert knowledge.offline_answer("merci beaucoup", "fr").startswith("Avec plaisir")
    missing = knowledge.offline_answer("Wie wird das Wetter morgen?", "de")
    assert missing.startswith("Dazu habe ich in unseren FAQ leider keine Antwort gefunden.")
    assert "support@example.com" in missing
    assert knowledge.offline_answer("¿Venden bicicletas?", "es").startswith("Lo siento, no he encontrado")


def test_the_llm_is_told_the_customers_language_and_gets_the_file_in_it_where_there_is_one():
    french = knowledge.system_prompt("fr")
    assert "answer in French" in french and "The FAQ is in English: translate" in french
    assert "Q: What is your return policy?" in french
    german = knowledge.system_prompt("de")
    assert "answer in German" in german and "translate" not in german
    assert "Q: Wie sind Ihre Rückgaberegeln?" in german
    assert "answer in English" in knowledge.system_prompt()


def test_a_shops_own_file_per_language_is_read_beside_the_main_one(settings, tmp_path):
    main = tmp_path / "shop.md"
    main.write_text("## Do you sell gift cards?\nYes, from 10 EUR.\n", encoding="utf-8")
    (tmp_path / "shop.fr.md").write_text(
        "## Vendez-vous des cartes cadeaux ?\nKeywords: bon d'achat\nOui, à partir de 10 EUR.\n", encoding="utf-8")
    settings.CHAT_KNOWLEDGE_FILE = main
    assert knowledge.offline_answer("Avez-vous des cartes cadeaux ?", "fr") == "Oui, à partir de 10 EUR."
    assert knowledge.offline_answer("gift cards?", "en") == "Yes, from 10 EUR."
    assert knowledge.entries("es")[0].question == "Do you sell gift cards?"  # no shop.es.md: the main one


@pytest.mark.parametrize("text", [
    "Ich möchte mit einem Mitarbeiter sprechen", "Kann ich mit einem Menschen reden?",
    "Je voudrais parler à un conseiller", "Puis-je parler à quelqu'un ?", "¿Puedo hablar con una persona?",
    "Quiero hablar con alguien", "أريد التحدث مع موظف", "اريد اتكلم مع شخص",
])
def test_a_request_for_a_person_in_another_language_is_recognised(text):
    assert knowledge.wants_person(text)


@pytest.mark.parametrize("text", [
    "Der Mitarbeiter am Telefon war sehr nett", "Wie lange dauert der Versand?",
    "Ich möchte nicht mit einem Menschen sprechen", "Je ne veux pas parler à une personne",
    "Quelle est votre politique de retour ?", "¿Cuánto tarda el envío?", "كم يستغرق الشحن؟",
])
def test_other_words_in_another_language_are_not_a_request_for_a_person(text):
    assert not knowledge.wants_person(text)


def test_the_german_file_is_faithful_in_shape_and_its_keywords_are_never_shown():
    english, german = knowledge.entries(), knowledge.entries("de")
    assert len(german) == len(english) and knowledge.contact_details("de").startswith("Öffnungszeiten:")
    for entry in german:
        assert knowledge.match(entry.question, "de") is entry  # every heading finds its own entry
    prompt = knowledge.system_prompt("de")
    assert "Keywords" not in prompt and "Rückerstattung, Umtausch" not in prompt
