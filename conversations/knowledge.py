"""The shop's knowledge file: the system prompt built from it, and the offline answer.

The file (settings.CHAT_KNOWLEDGE_FILE) is Markdown: each `## ` heading is a
question, the text under it the answer. It is read once per change of the file.
"""

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from django.conf import settings

WORD = re.compile(r"[a-z0-9]+")
# Words that say nothing about what a customer wants to know.
STOPWORDS = frozenset(
    """a an and are at be can do does for from have how i if in is it me my of on or our
    the to what when where which who why will with you your we us this that there any
    hi hello please thanks thank""".split()
)


@dataclass(frozen=True)
class Entry:
    question: str
    answer: str


def _words(text: str) -> set[str]:
    # Crude stemming is enough to match "returns"/"returning" with "return".
    words = set()
    for word in WORD.findall(text.lower()):
        if word in STOPWORDS:
            continue
        for suffix in ("ing", "ed", "es", "s"):
            if len(word) > len(suffix) + 3 and word.endswith(suffix):
                word = word[: -len(suffix)]
                break
        words.add(word)
    return words


@lru_cache(maxsize=4)
def _parse(path: Path, mtime: float) -> tuple[Entry, ...]:
    entries, question, lines = [], None, []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            if question:
                entries.append(Entry(question, "\n".join(lines).strip()))
            question, lines = line[3:].strip(), []
        elif question:
            lines.append(line)
    if question:
        entries.append(Entry(question, "\n".join(lines).strip()))
    return tuple(entries)


def entries() -> tuple[Entry, ...]:
    path = Path(settings.CHAT_KNOWLEDGE_FILE)
    return _parse(path, path.stat().st_mtime)


def system_prompt() -> str:
    faq = "\n\n".join(f"Q: {entry.question}\nA: {entry.answer}" for entry in entries())
    return (
        f"You are the customer support assistant of {settings.CHAT_SHOP_NAME}. "
        "Answer questions about orders, shipping, returns, payment and contact, "
        "using only the facts in the FAQ below. Be brief, friendly and concrete. "
        "If the FAQ does not answer a question, say so and give the contact details "
        "from the FAQ; never invent policies, prices or order details.\n\n"
        f"FAQ:\n\n{faq}"
    )


def offline_answer(question: str) -> str:
    """The FAQ answer that best matches `question`, else a list of what we can help with."""
    asked = _words(question)
    best, best_score = None, 0.0
    for entry in entries():
        # A word shared with the question counts three times as much as one in the answer.
        score = 3 * len(asked & _words(entry.question)) + len(asked & _words(entry.answer))
        if score > best_score:
            best, best_score = entry, score
    if best is not None and best_score >= 2:
        return best.answer
    topics = "\n".join(f"- {entry.question}" for entry in entries())
    return f"I can help with questions like these:\n\n{topics}\n\nWhat would you like to know?"
