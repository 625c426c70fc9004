"""The offline responder's cost is bounded whatever the customer writes: typo correction
(the costly part, a fuzzy comparison with every word of the knowledge file) is tried
for a few words of a question only."""

import random
import string

import pytest
from django.conf import settings as django_settings

from conversations import knowledge

SHIPPED_FAQ = django_settings.BASE_DIR / "knowledge" / "faq.md"
RETURNS = "What is your return policy?"


@pytest.fixture(autouse=True)
def fresh_index(settings):
    """The shipped file, indexed afresh: no word corrected by an earlier test is remembered."""
    settings.CHAT_KNOWLEDGE_FILE = SHIPPED_FAQ
    knowledge._parse.cache_clear()
    yield
    knowledge._parse.cache_clear()


@pytest.fixture
def corrections(monkeypatch):
    """The words given to the typo correction, in order."""
    words: list[str] = []
    closest = knowledge._Knowledge.closest

    def counted(self: knowledge._Knowledge, word: str) -> str | None:
        words.append(word)
        return closest(self, word)

    monkeypatch.setattr(knowledge._Knowledge, "closest", counted)
    return words


def random_words(characters: int, seed: int = 1) -> str:
    rng = random.Random(seed)
    words: list[str] = []
    while sum(len(w) + 1 for w in words) < characters:
        words.append("".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 12))))
    return " ".join(words)[:characters]


def test_a_long_message_of_unknown_words_corrects_only_a_few(corrections):
    message = random_words(4000)

    knowledge.offline_answer(message)

    assert 0 < len(corrections) <= 8 == knowledge.MAX_CORRECTIONS
    assert corrections == [w for w in knowledge._tokens(message) if w in corrections][: len(corrections)]


def test_a_word_too_long_to_be_a_typo_of_any_is_not_compared(corrections):
    longest = max(map(len, knowledge._knowledge().words))

    knowledge.offline_answer("x" * (longest + 3) + " " + "abcdefghij" * 30)

    assert corrections == []


def test_typos_are_still_corrected_at_the_start_of_a_long_message(corrections):
    message = "refnud " + "please " * 500

    assert knowledge.match(message).question == RETURNS
    assert corrections == ["refnud"]


def test_a_word_left_uncorrected_is_corrected_in_a_later_question(corrections):
    knowledge.offline_answer(random_words(4000) + " refnud")

    assert "refnud" not in corrections
    assert knowledge.match("refnud").question == RETURNS
