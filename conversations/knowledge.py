"""The shop's knowledge file: the system prompt built from it, and the offline answer.

The file (settings.CHAT_KNOWLEDGE_FILE, knowledge/faq.md) is Markdown written by
the shop owner; its top says how to write it:

    ## What is your return policy?          <- a question customers ask
    Keywords: refund, money back, send it back   <- optional: their other words for it
    You can return any unused item ...      <- the answer

    # Contact                                <- opening hours, email, phone
    Keywords: phone, email, opening hours
    Opening hours: Monday to Friday, 9 am to 6 pm CET
    Email: support@example.com

Other text (before the first heading, under other `# ` headings) is a note to
the editor and is not used. The file is read and indexed once per change of its
modification time, so editing it needs no restart.

The file is English. A shop may write it in other languages of settings.LANGUAGES
beside it, named by the language's code (`knowledge/faq.de.md`): a customer in that
language is answered from it (the LLM and the offline responder alike), with that
language's stemmer and stopwords; a customer in a language without its own file is
answered from the English file, the LLM told to translate, the offline responder
finding the entry through a small glossary of the language's words for the topics
(languages.py) and saying in one line, in the customer's language, that the answer
is in English.

The offline responder (no OPENAI_API_KEY) answers with the entry that best
matches the question. Matching works on Snowball stems, so word forms match
("returned" finds "return"); a word not in the file is corrected to the
closest word that is (rapidfuzz's OSA distance, "refnud" finds "refund"; the
first MAX_CORRECTIONS such words of a question only); each
question word counts by how few entries use it (rarer says more), double in the
heading or in a keyword phrase found whole in the question ("send it back").
Below MIN_SCORE, unless the entry names every word asked ("shipping"), it
answers with the contact details and points to the "Talk to a person" button.
The index is built when the file is read; a question costs tens of
microseconds, so it runs in the event loop. conversations/tests/faq_questions.py
measures the matching (make faq-eval).
"""

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from datetime import time as dt_time
from functools import lru_cache
from pathlib import Path

import snowballstemmer
from django.conf import settings
from rapidfuzz import process
from rapidfuzz.distance import OSA

from . import languages

# Words that say nothing about what a customer wants to know (each language's: languages.py). They
# still take part in keyword phrases ("where is my order"), so they are kept in order there.
STOPWORDS = languages.ENGLISH.stopwords
# A message of only these (and stopwords) is small talk, answered as such.
GREETINGS = languages.ENGLISH.greetings
THANKS = languages.ENGLISH.thanks
THANKS_TOO = THANKS | languages.ENGLISH.thanks_too

WORD = re.compile(r"[a-z0-9]+")
# The words of the other languages: letters of any script ("Rücksendung", "إرجاع"), no digits.
LETTERS = re.compile(r"[^\W\d_]+")
# Contractions, with and without the apostrophe, so "where's" and "wheres" read as "where is".
APOSTROPHE = re.compile(r"[’'`´]")
CONTRACTIONS = [
    (re.compile(r"n't\b"), " not"),
    (re.compile(r"'s\b"), " is"),
    (re.compile(r"'re\b"), " are"),
    (re.compile(r"'m\b"), " am"),
    (re.compile(r"'ve\b"), " have"),
    (re.compile(r"'ll\b"), " will"),
    (re.compile(r"'d\b"), " would"),
]
UNAPOSTROPHED = {
    "dont": "do not", "doesnt": "does not", "didnt": "did not", "cant": "can not", "wont": "will not",
    "isnt": "is not", "hasnt": "has not", "havent": "have not", "wasnt": "was not", "arent": "are not",
    "wheres": "where is", "whats": "what is", "hows": "how is", "whens": "when is", "im": "i am",
    "ive": "i have", "youre": "you are", "thats": "that is", "theres": "there is",
}

# Weights of a question word found in an entry: in its heading or a keyword phrase
# found whole (strong), elsewhere in its keywords or answer (weak).
STRONG, WEAK = 2.0, 1.0
# Each word beyond the first of a keyword phrase found whole ("where is my order").
PHRASE_BONUS = 0.25
# Words after which an unknown word names something the customer asks about (Knowledge.unlisted).
NAME_BEFORE = frozenset("with by via to in from using".split())
# Below it, no entry is a good answer. A word of one entry only scores 2 in its heading
# or keywords, about 1.3 in its answer alone. The middle of the range (1.1 to 1.5) that
# answers conversations/tests/faq_questions.py best (make faq-eval).
MIN_SCORE = 1.25
# Words no shorter than this and unknown to the file are corrected to the closest word that is
# (shorter ones are too often a real word one letter from another: last, fast).
TYPO_MIN_LENGTH = 5
# Correcting a word compares it with every word of the file (about 0.1 ms): only the first
# this many unknown words of a question are corrected, so that a message of 4000 characters
# of unknown words costs no more than a short one. The others are taken as they are, and
# not remembered as such, so that a later question still corrects them.
MAX_CORRECTIONS = 8

_stemmers = {code: snowballstemmer.stemmer(said.stemmer) for code, said in languages.OFFLINE.items()}


@dataclass(frozen=True)
class Entry:
    question: str
    answer: str
    keywords: tuple[str, ...] = ()


@lru_cache(maxsize=8192)
def _stem(word: str, language: str = "en") -> str:
    stemmer = _stemmers.get(language) or _stemmers["en"]  # a language the responder has no words for
    return word if word in languages.offline(language).stopwords else stemmer.stemWord(word)


def _tokens(text: str, language: str = "en") -> list[str]:
    if language != "en":
        return LETTERS.findall(text.lower())
    text = APOSTROPHE.sub("'", text.lower())
    for pattern, replacement in CONTRACTIONS:
        text = pattern.sub(replacement, text)
    words = []
    for word in WORD.findall(text):
        # Numbers (order numbers, "2 weeks", "2 pm") say nothing about the topic.
        if not word.isdigit():
            words.extend(UNAPOSTROPHED.get(word, word).split())
    return words


def _phrase_in(phrase: tuple[str, ...], words: list[str]) -> bool:
    """Whether the phrase's words occur in order in `words`, at most two other words apart."""
    for start, word in enumerate(words):
        if word != phrase[0]:
            continue
        position = start
        for wanted in phrase[1:]:
            window = words[position + 1 : position + 4]
            if wanted not in window:
                break
            position += 1 + window.index(wanted)
        else:
            return True
    return False


@dataclass(frozen=True)
class _Topic:
    entry: Entry
    strong: frozenset[str]  # terms (stems) of the heading
    weak: frozenset[str]  # terms of the answer and of every keyword
    phrases: tuple[tuple[str, ...], ...]  # each keyword as a sequence of terms


class _Knowledge:
    """The parsed file and its search index, built once per version of the file."""

    def __init__(self, entries: tuple[Entry, ...], contact: Entry, language: str = "en"):
        self.entries = entries
        self.contact = contact
        self.language = language  # the file's
        self.stopwords = languages.offline(language).stopwords
        every = (*entries, contact)
        # Snowball keeps some forms apart ("deliver" -> deliv, "delivery" -> deliveri):
        # a stem that starts with another of five letters or more is taken as that one.
        stems = {self._stem(w) for e in every for w in self._tokens(f"{e.question} {e.answer} {' '.join(e.keywords)}")}
        self.roots: dict[str, str] = {}
        # The roots of five letters or more by their first five, shortest first: what a
        # stem may start with is looked up, not searched for among all of them.
        self.by_prefix: dict[str, list[str]] = {}
        for stem in sorted(stems - self.stopwords, key=len):
            self.roots[stem] = self._root_of(stem) or stem
            if len(stem) >= 5 and self.roots[stem] == stem:
                self.by_prefix.setdefault(stem[:5], []).append(stem)
        self.topics = [self._topic(entry) for entry in every]
        # A word in an answer only says less about the topic than one in its heading or
        # keywords ("delivery" in the returns answer): it counts half towards the rarity.
        document_frequency: dict[str, float] = {}
        for topic in self.topics:
            named = topic.strong | {t for p in topic.phrases for t in p}
            for term in topic.strong | topic.weak:
                document_frequency[term] = document_frequency.get(term, 0) + (1 if term in named else 0.5)
        count = len(self.topics)
        # Scaled to 1 for a word of one entry only, so that MIN_SCORE means the same in a
        # file of three entries as in one of thirty.
        self.idf = {
            term: math.log(1 + count / df) / math.log(1 + count) for term, df in document_frequency.items()
        }
        # Every word of the file, for typo correction: a misspelt stopword becomes the stopword.
        text = " ".join(f"{e.question} {e.answer} {' '.join(e.keywords)}" for e in every)
        self.words = sorted({w for w in self._tokens(text) if len(w) >= TYPO_MIN_LENGTH} | self.stopwords)
        # A word longer than this is more than two edits from every word of the file.
        self.typo_max_length = max(map(len, self.words)) + 2
        self.unknown: dict[str, str] = {}  # what words not in the file were taken as; cleared when large

    def _stem(self, word: str) -> str:
        return _stem(word, self.language)

    def _tokens(self, text: str) -> list[str]:
        return _tokens(text, self.language)

    def _terms(self, text: str) -> list[str]:
        return [self.roots.get(stem, stem) for stem in map(self._stem, self._tokens(text))]

    def _topic(self, entry: Entry) -> _Topic:
        # The heading is a phrase too: asked as written, it finds its entry even when
        # its words are mostly stopwords ("How long does shipping take?").
        phrases = tuple(p for p in map(self._terms, (entry.question, *entry.keywords)) if p)
        weak = {*self._terms(entry.answer), *(t for p in phrases for t in p)}
        return _Topic(
            entry,
            strong=frozenset(self._terms(entry.question)) - self.stopwords,
            weak=frozenset(weak - self.stopwords),
            phrases=phrases,
        )

    def _root_of(self, stem: str) -> str | None:
        """The root (of five letters or more) that `stem` starts with, if any."""
        return next((r for r in self.by_prefix.get(stem[:5], ()) if stem.startswith(r)), None)

    def _unknown(self, word: str, stem: str, correct: bool) -> tuple[str, bool]:
        """What a word not in the file stands for: another form of one, a misspelling of one
        (only if `correct`), or itself; and whether it was compared with the file's words."""
        if word in self.unknown:
            return self.unknown[word], False
        term = self._root_of(stem)
        compared = term is None and TYPO_MIN_LENGTH <= len(word) <= self.typo_max_length
        if compared and not correct:
            return stem, False  # not remembered: a question with fewer unknown words corrects it
        if compared:
            closest = self.closest(word)
            term = self._terms(closest)[0] if closest else None
        if len(self.unknown) >= 4096:
            self.unknown.clear()
        self.unknown[word] = term or stem
        return self.unknown[word], compared

    def closest(self, word: str) -> str | None:
        """The file's word that `word` is a misspelling of: one edit away, two in a long word.

        OSA distance counts a swap of two letters as one edit ("retrun").
        """
        edits = 1 if len(word) < 8 else 2
        found = process.extractOne(word, self.words, scorer=OSA.distance, score_cutoff=edits)
        return found[0] if found else None

    def terms(self, text: str) -> list[str]:
        """The question's words as the index's terms, in order, stopwords included."""
        terms, corrections = [], MAX_CORRECTIONS
        for word in self._tokens(text):
            stem = self._stem(word)
            if stem in self.stopwords:
                terms.append(stem)
            elif stem in self.roots:
                terms.append(self.roots[stem])
            else:
                term, compared = self._unknown(word, stem, correct=corrections > 0)
                corrections -= compared
                terms.append(term)
        return terms

    def score(self, topic: _Topic, terms: list[str], present: set[str]) -> tuple[float, bool]:
        """How well the topic answers the question, and whether it names every word asked."""
        strong = set(topic.strong)
        bonus = 0.0
        for phrase in topic.phrases:
            if phrase[0] in present and _phrase_in(phrase, terms):
                strong.update(phrase)
                bonus += PHRASE_BONUS * (len(phrase) - 1)
        score = bonus
        asked = present - self.stopwords
        for term in asked:
            weight = STRONG if term in strong else WEAK if term in topic.weak else 0.0
            score += weight * self.idf.get(term, 0.0)
        return score, bool(asked) and asked <= strong

    def best(self, question: str) -> Entry | None:
        """The best scoring topic's entry, if it scores MIN_SCORE or names every word asked
        ("shipping": a common word, but all the customer wrote); the first in the file on a tie."""
        terms = self.terms(question)
        present = set(terms)
        score, named, entry = max(
            ((*self.score(topic, terms, present), topic.entry) for topic in self.topics), key=lambda s: s[0]
        )
        return entry if score >= MIN_SCORE or named else None

    def unlisted(self, question: str) -> list[str]:
        """The names in the question that the file knows nothing of, not even as a typo: "Klarna"
        in "Can I pay with Klarna?". A name is a word written with a capital after the first word,
        or one after "with", "by", "via", "to", "in", "from" or "using" ("pay with klarna"; not
        "shoes" in "Can I return shoes?")."""
        found: list[str] = []
        words = re.findall(r"[A-Za-z][A-Za-z'-]*", question)
        named = [w for i, w in enumerate(words) if i > 0 and len(w) >= 3
                 and (w[0].isupper() or words[i - 1].lower() in NAME_BEFORE)]
        for word in named[:MAX_CORRECTIONS]:  # each may be compared with every word of the file
            [term, *_] = self.terms(word) or [""]
            if term not in self.stopwords and term not in self.idf and word not in found:
                found.append(word)
        return found


def _parse_text(text: str, language: str = "en") -> _Knowledge:
    sections: list[tuple[str, str, list[str]]] = []  # (level, heading, lines)
    for line in text.splitlines():
        if line.startswith("## "):
            sections.append(("question", line[3:].strip(), []))
        elif line.startswith("# "):
            sections.append(("section", line[2:].strip(), []))
        elif sections:
            sections[-1][2].append(line)
    entries, contact = [], Entry("Contact", "")
    for kind, heading, lines in sections:
        keywords = [line for line in lines if line.lower().startswith("keywords:")]
        body = "\n".join(line for line in lines if line not in keywords).strip()
        words = tuple(k.strip() for line in keywords for k in line.split(":", 1)[1].split(",") if k.strip())
        if kind == "question":
            entries.append(Entry(heading, body, words))
        elif heading.lower() == "contact":
            contact = Entry("Contact", body, words)
    return _Knowledge(tuple(entries), contact, language)


@lru_cache(maxsize=16)
def _parse(path: Path, mtime: float, language: str = "en") -> _Knowledge:
    return _parse_text(path.read_text(encoding="utf-8"), language)


def _knowledge(language: str = "en") -> _Knowledge:
    """The file in `language` (`faq.de.md` beside `faq.md`) where the shop wrote one, else the main
    (English) file."""
    path = Path(settings.CHAT_KNOWLEDGE_FILE)
    if language != languages.KNOWLEDGE_LANGUAGE:
        own = path.with_name(f"{path.stem}.{language}{path.suffix}")
        try:
            return _parse(own, own.stat().st_mtime, language)
        except FileNotFoundError:
            pass
    return _parse(path, path.stat().st_mtime, languages.KNOWLEDGE_LANGUAGE)


def entries(language: str = "en") -> tuple[Entry, ...]:
    """The questions and answers (without the contact section), of the file in `language` if any."""
    return _knowledge(language).entries


def contact_details(language: str = "en") -> str:
    """The `# Contact` section as written: opening hours, email, phone and any note."""
    return _knowledge(language).contact.answer


def system_prompt(language: str = "en") -> str:
    """The LLM's instructions: the FAQ in the customer's language where the shop wrote one, else the
    English one, and to answer in the customer's language either way."""
    book = _knowledge(language)
    faq = "\n\n".join(f"Q: {entry.question}\nA: {entry.answer}" for entry in book.entries)
    name = languages.english_name(language)
    translate = "" if book.language == language else (
        f" The FAQ is in {languages.english_name(book.language)}: translate what you use from it.")
    return (
        f"You are the customer support assistant of {settings.CHAT_SHOP_NAME}. "
        "Answer questions about orders, shipping, returns, payment and contact, "
        "using only the facts in the FAQ below. Be brief, friendly and concrete. "
        "If the FAQ does not answer a question, say so and give the contact details "
        "below; never invent policies, prices or order details. A customer who wants "
        'a person can press the "Talk to a person" button. If the customer is upset or in a hurry, '
        "apologise first and mention that button before anything else. If asked about something the FAQ "
        "does not list (a payment method, a country), say plainly that it is not listed, then what is.\n\n"
        f"The customer's page is in {name}: answer in {name}.{translate} If the customer writes in "
        "another language, answer in the language they write in.\n\n"
        f"FAQ:\n\n{faq}\n\nContact details:\n\n{book.contact.answer}"
    )


def match(question: str, language: str = "en") -> Entry | None:
    """The entry (or the contact section) that answers `question`, asked in `language`, None if none
    does well: from the file in that language, else from the English one (through the glossary)."""
    book = _knowledge(language)
    return book.best(question if book.language == language else _in_english(question, language, book))


@lru_cache(maxsize=8)
def _glossary(language: str) -> dict[str, str]:
    """The language's glossary (languages.py) by the stems of its words, so that word forms match."""
    return {_stem(word, language): english for word, english in languages.offline(language).glossary.items()}


def _in_english(question: str, language: str, book: _Knowledge) -> str:
    """The question's words in English where the glossary knows them ("retour" -> return), and those
    the English file uses as they are ("PayPal", "Express"); the others say nothing to it."""
    said, glossary = languages.offline(language), _glossary(language)
    words = []
    for word in _tokens(question, language):
        english = said.glossary.get(word) or glossary.get(_stem(word, language))
        if english or (word not in said.stopwords and word.isascii() and book._stem(word) in book.roots):
            words.append(english or word)
    return " ".join(words)


def offline_answer(question: str, language: str = "en") -> str:
    """The offline responder's answer, in `language`: small talk as such; "anyone there?" with the
    offer of a person; an upset customer first an apology and that offer; then the best matching
    entry (each entry, for a message asking two things), with "we don't list X" before it when a
    yes/no question names what the file does not; else the contact details and the way to a person.
    Without a file in `language`, the answer is the English file's, under the one-line note that
    it is in English."""
    reads, says, book = languages.offline(language), languages.said(language), _knowledge(language)
    note = f"{says.in_english}\n\n" if book.language != language else ""
    details = book.contact.answer
    if wants_person(question):  # the site hands over before asking; this is for when it does not
        return says.person + (f" {says.also_reach}\n\n{details}" if details else "")
    if asks_if_anyone_there(question):
        return says.anyone_there
    words = set(_tokens(question, language))
    if words & reads.thanks and words <= reads.thanks | reads.thanks_too | reads.stopwords:
        return says.welcome
    if words & reads.greetings and words <= reads.greetings | reads.stopwords:
        topics = ", ".join(entry.question.rstrip("?").lower() for entry in book.entries[:4])
        return note + says.hello % {"topics": topics}
    apology = says.apology if upset(question) else ""
    answers: list[str] = []
    for part in _questions(question, language):
        entry = match(part, language)
        if entry is None or any(entry.answer in answer for answer in answers):
            continue
        if entry is book.contact:
            answers.append(f"{says.reach_us}\n\n{entry.answer}")
        else:
            english = book.language == language == "en"
            unlisted = book.unlisted(part) if english and YES_NO.match(part.strip()) else []
            listed = f"We don't list {' or '.join(unlisted)}. " if unlisted else ""
            answers.append(listed + entry.answer)
    if answers:
        return note + apology + "\n\n".join(answers)
    return apology + (f"{says.not_found_contact}\n\n{details}" if details else says.not_found)


# A yes/no question: "Can I pay with Klarna?", "Do you ship to Brazil?".
YES_NO = re.compile(r"(?:can|could|do|does|is|are|will|would|may|did|have|has)\b", re.IGNORECASE)
# Where a message asking two things is cut: after a sentence, and before "and/also" that starts a
# second question ("How long does shipping take and can I pay with PayPal?").
QUESTION_BREAK = re.compile(
    r"(?<=[?.!])\s+|\s*,?\s+(?:and|also|plus)\s+(?=(?:can|could|do|does|how|what|when|where|which|is|are|will)\b)",
    re.IGNORECASE,
)


# A message cut into more parts than this is answered as a whole: each part costs a search.
MAX_QUESTIONS = 3


def _questions(text: str, language: str = "en") -> list[str]:
    """The questions the message asks: its parts when it reads as more than one and a part finds
    an entry, else the whole message."""
    parts = [part for part in QUESTION_BREAK.split(text) if part and part.strip()]
    if 1 < len(parts) <= MAX_QUESTIONS and any(match(part, language) is not None for part in parts):
        return parts
    return [text]


# A request for a person. Nouns that name one (one typo allowed in the longer ones:
# "humna", "operater"); pronouns that do only after a verb of talking ("speak to
# someone", not "I need someone to sign for it"); nouns that do only after a
# request verb ("talk to support", not "how do I contact support").
PERSON_NOUNS = frozenset(
    "human humans person people agent agents operator operators representative rep staff employee".split()
)
PERSON_PRONOUNS = frozenset("someone somebody anyone anybody".split())
PERSON_AFTER_VERB = frozenset("support service team manager supervisor".split())
TALK_VERBS = frozenset("talk speak chat connect transfer put pass escalate".split())
REQUEST_VERBS = TALK_VERBS | frozenset("get want need give".split())
# Words that may stand between the verb and the person, or alone around a person noun
# ("can I talk to a real human please").
REQUEST_FILLER = frozenset(
    """a an the to with me i can could may please pls plz now real actual live proper human being
    your one of some customer want need would like id i'd get give let talk speak chat connect
    transfer just thanks hi hello hey you is there available i'm am talking speaking""".split()
)
# Words that may follow the person asked for ("a person about my refund", "a human not a bot");
# any other ("the agent fee") makes the noun an attribute of something else.
FOLLOWERS = REQUEST_FILLER | frozenset(
    """about who that which regarding re for on asap here instead because as and or but not so if rather
    than at in from today immediately right away directly""".split()
) | {""}
NEGATIONS = frozenset("not never don't dont doesn't doesnt".split())
CALL_VERBS = frozenset("call ring phone telephone".split())
PERSON_WORD = re.compile(r"[a-z']+(?:-[a-z]+)*")  # "human-safe" stays one word
# Long enough that one typo still names one of them, and no common word is one typo away.
TYPO_NOUNS = tuple(sorted(n for n in PERSON_NOUNS if len(n) >= 5 and n != "people"))


@lru_cache(maxsize=1024)
def _person_noun(word: str) -> bool:
    if word in PERSON_NOUNS:
        return True
    if len(word) < 5 or "-" in word:
        return False
    # OSA distance: a swap ("humna") counts as one edit.
    return any(OSA.distance(word, noun, score_cutoff=1) <= 1 for noun in TYPO_NOUNS)


# A request for a person in another language is a short message (_asks_person_in: 16 words at most).
PERSON_REQUEST_CHARS = 300
# Arabic joins "with", "to" and "the" to the word ("بموظف", "للموظف"): a person noun is looked for after them.
ARABIC_PREFIXES = ("", "ب", "ل", "ال", "بال", "لل", "و")


def _asks_person_in(said: languages.Offline, words: list[str]) -> bool:
    """A request for a person in another language than English: a verb of talking and a person
    in a short message, with no negation (when unsure, no: the fallback offers the button)."""
    if len(words) > 16 or said.talk_verbs.isdisjoint(words) or not said.negations.isdisjoint(words):
        return False
    return any(w[len(p):] in said.person_nouns for w in words for p in ARABIC_PREFIXES if w.startswith(p))


def wants_person(text: str) -> bool:
    """Whether the customer asks for a person, in English (below) or another language of the site
    (_asks_person_in: "Ich möchte mit einem Mitarbeiter sprechen")."""
    if _wants_person_in_english(text):
        return True
    if len(text) > PERSON_REQUEST_CHARS:
        return False  # no short request, and not worth reading
    words = LETTERS.findall(text.lower())
    return any(_asks_person_in(said, words) for code, said in languages.OFFLINE.items() if code != "en")


def _wants_person_in_english(text: str) -> bool:
    """Whether the customer asks for a person: "agent please", "can I talk to a human?", "call me back".

    A person noun counts when the message holds nothing but it and request words
    ("real person", "operator!!"; not "anyone there?", see asks_if_anyone_there), or when a request verb comes
    shortly before it ("I want to speak to someone about my refund"), and not
    after a negation. A compound ("human-safe") or a noun used as an attribute
    ("the agent fee") is not a request. Asking for a person stops the assistant
    until staff hand back, so when unsure this says no: the fallback answer
    offers the "Talk to a person" button anyway. Pure string work on a fixed
    vocabulary, no file read: the LLM path calls it on every message.
    """
    words = PERSON_WORD.findall(APOSTROPHE.sub("'", text.lower()))

    def negated(i: int) -> bool:
        return not NEGATIONS.isdisjoint(words[max(0, i - 3) : i])  # "don't want to talk to"

    persons = {i for i, word in enumerate(words) if _person_noun(word) or word in PERSON_PRONOUNS}
    # Pronouns alone ("anyone there?", "hello, is somebody there") ask whether anyone is
    # there, not for a person: the assistant answers them and offers one (asks_if_anyone_there).
    if (persons and len(words) <= 12 and any(words[i] not in PERSON_PRONOUNS for i in persons)
            and all(w in REQUEST_FILLER or i in persons for i, w in enumerate(words))):
        return True
    for i, word in enumerate(words):
        following = words[i + 1] if i + 1 < len(words) else ""
        if word == "callback" or (word in CALL_VERBS and following in ("me", "back")):
            if not negated(i):
                return True
        if word not in REQUEST_VERBS or negated(i):
            continue
        for j in range(i + 1, min(i + 5, len(words))):
            person = _person_noun(words[j]) or words[j] in PERSON_AFTER_VERB or (
                word in TALK_VERBS and words[j] in PERSON_PRONOUNS
            )
            if person and all(w in REQUEST_FILLER for w in words[i + 1 : j]):
                return (words[j + 1] if j + 1 < len(words) else "") in FOLLOWERS
    return False


# --- Moments when the assistant offers a person ---------------------------------

# A message of only these asks whether anyone is there ("hello?", "anyone there?", "are you a bot?").
PRESENCE_WORDS = REQUEST_FILLER | PERSON_PRONOUNS | frozenset(
    "there here anybody you are is a bot robot real this still awake online alive what".split()
)
# Words of an upset or urgent customer; NOW and the like count when shouted (ANGRY_CAPS).
UPSET_WORDS = frozenset(
    """unacceptable ridiculous terrible awful worst angry furious annoyed disgusting disgraceful
    scam fraud useless pathetic outrageous appalling horrible shocking joke complaint complain
    lawyer sue urgent urgently asap immediately fed""".split()
)
# A word in capitals of this length or more is shouting, unless it is one of these.
ANGRY_CAPS = 3
CAPITAL_WORDS = frozenset("EUR USD GBP CET CEST UTC DHL UPS DPD GLS USA EU UK PDF ASAP OK".split())


def asks_if_anyone_there(text: str) -> bool:
    """Whether the message only asks whether anyone is there: "hello?", "anyone there?",
    "Hello, is somebody there". The assistant answers it and offers a person; it is not a
    request for one (wants_person)."""
    words = PERSON_WORD.findall(APOSTROPHE.sub("'", text.lower()))
    if not words or len(words) > 8 or not all(w in PRESENCE_WORDS for w in words):
        return False
    return "?" in text or not PERSON_PRONOUNS.isdisjoint(words)  # "hi there" is a greeting


def upset(text: str) -> bool:
    """Whether the customer sounds angry or in a hurry: a word of UPSET_WORDS, a shouted word
    ("NOW"), or "!!"."""
    if "!!" in text:
        return True
    shouted = [w for w in re.findall(r"[A-Za-z]+", text) if len(w) >= ANGRY_CAPS and w.isupper()]
    if any(w not in CAPITAL_WORDS for w in shouted):
        return True
    return not UPSET_WORDS.isdisjoint(_tokens(text))


def suggests_person(text: str) -> bool:
    """Whether the answer to `text` comes with the "Talk to a person" offer (a button under it)."""
    return asks_if_anyone_there(text) or upset(text)


# --- Opening hours ---------------------------------------------------------------
#
# The `Opening hours:` line of the `# Contact` section, as the shop writes it for
# customers, and as the handoff reads it: parts separated by ";", each a day or a
# range of days, then the hours of that day:
#
#     Opening hours: Monday to Friday, 9 am to 6 pm; Saturday, 10 am to 2 pm CET
#
# Days are English names or their first three letters ("Mon to Fri", "Mon-Fri");
# times are "9 am", "9:30 am", "18:00" or "6 pm", joined by "to" or "-". A word after
# the hours (CET) is for the reader: the time zone is CHAT_SHOP_TIMEZONE. Days not
# named are closed. A line that does not read this way is shown as written and the
# handoff does not promise times (opening_hours() is None).

DAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_TIME = r"\d{1,2}(?:[:.]\d{2})?\s*(?:am|pm|a\.m\.|p\.m\.)?"
_HOURS_PART = re.compile(
    rf"(?P<first>[a-z]+)(?:\s*(?:to|-|–)\s*(?P<last>[a-z]+))?\s*,?\s*(?P<open>{_TIME})\s*(?:to|-|–)\s*"
    rf"(?P<close>{_TIME})(?:\s+[a-z]+)?"
)


@dataclass(frozen=True)
class OpeningHours:
    # For each weekday (Monday 0), the (opening, closing) minutes after midnight.
    days: tuple[tuple[tuple[int, int], ...], ...]

    def is_open(self, local: datetime) -> bool:
        """Whether `local` (in the shop's time zone) is within the hours."""
        minute = local.hour * 60 + local.minute
        return any(start <= minute < end for start, end in self.days[local.weekday()])

    def next_opening(self, local: datetime) -> datetime | None:
        """When the shop next opens after `local` (in the shop's time zone); None if never."""
        for ahead in range(8):
            day = local.date() + timedelta(days=ahead)
            for start, _ in sorted(self.days[day.weekday()]):
                opening = datetime.combine(day, dt_time(start // 60, start % 60), tzinfo=local.tzinfo)
                # Through UTC, so that a change of summer time in between gives the right hour.
                opening = opening.astimezone(UTC).astimezone(local.tzinfo)
                if opening > local:
                    return opening
        return None


def _day(name: str) -> int | None:
    return next((i for i, day in enumerate(DAY_NAMES) if len(name) >= 3 and day.startswith(name)), None)


def _minutes(text: str) -> int | None:
    found = re.fullmatch(r"(\d{1,2})(?:[:.](\d{2}))?\s*(am|pm|a\.m\.|p\.m\.)?", text.strip())
    if found is None:
        return None
    hour, minute, half = int(found[1]), int(found[2] or 0), (found[3] or "").replace(".", "")
    if half and not 1 <= hour <= 12 or hour > 24 or minute > 59:
        return None
    if half:
        hour = hour % 12 + (12 if half == "pm" else 0)
    return hour * 60 + minute


def parse_opening_hours(line: str) -> OpeningHours | None:
    """The hours `line` (the value of `Opening hours:`) gives, None if it does not read as such."""
    days: list[list[tuple[int, int]]] = [[] for _ in DAY_NAMES]
    parts = [part.strip() for part in line.lower().split(";") if part.strip()]
    for part in parts:
        found = _HOURS_PART.fullmatch(part)
        if found is None:
            return None
        first, last = _day(found["first"]), _day(found["last"] or found["first"])
        start, end = _minutes(found["open"]), _minutes(found["close"])
        if first is None or last is None or start is None or end is None or end <= start:
            return None
        day = first
        while True:
            days[day].append((start, end))
            if day == last:
                break
            day = (day + 1) % 7
    return OpeningHours(tuple(tuple(d) for d in days)) if parts else None


def opening_hours() -> OpeningHours | None:
    """The contact section's opening hours, None when it gives none that read (see above)."""
    for line in contact_details().splitlines():
        label, _, value = line.partition(":")
        if label.strip().lower() == "opening hours":
            return parse_opening_hours(value)
    return None
