"""The pages of a conversation's messages that GET /api/history and GET /api/updates answer.

A conversation may hold CHAT_CONVERSATION_MAX_MESSAGES messages of up to
CHAT_REPLY_MAX_CHARS characters each, so neither endpoint answers it whole: a
page holds at most `limit` messages and, past its first message, at most
PAGE_MAX_BYTES of them as JSON. History pages go back from the newest message
(`before` a seq); updates pages go forward from `after`. Positions only grow,
so walking either way by seq never skips nor repeats a message.

A page is read in two short queries that never load more than about a page:
the positions and lengths of the candidate rows first, then the content of
those that fit. The exact size is measured as the JSON is built.
"""

import json
from dataclasses import dataclass

from django.db.models import QuerySet
from django.db.models.functions import Length

from . import payloads

DEFAULT_LIMIT = 50
MAX_LIMIT = 100
# Past the first message of a page; one message is bounded by CHAT_REPLY_MAX_CHARS.
PAGE_MAX_BYTES = 256 * 1024
# What a message's JSON holds besides its content (seq, role, dates, ids), at most.
ENVELOPE_BYTES = 400


@dataclass
class Page:
    messages: list[dict]  # oldest first
    has_more: bool  # older messages (a history page) or newer ones (an updates page) exist


def before(messages: QuerySet, before_seq: int | None, limit: int) -> Page:
    """The newest `limit` of `messages` (a conversation's, none being answered) below `before_seq`."""
    if before_seq is not None:
        messages = messages.filter(seq__lt=before_seq)
    page = _page(messages, "-seq", limit)
    page.messages.reverse()
    return page


def after(messages: QuerySet, after_seq: int, limit: int = MAX_LIMIT) -> Page:
    """The oldest `limit` of `messages` above `after_seq`."""
    return _page(messages.filter(seq__gt=after_seq), "seq", limit)


def _page(messages: QuerySet, order: str, limit: int) -> Page:
    # The lengths of the candidates only: measured outside the LIMIT, so that no plan (a sort
    # under stale statistics) measures, and so unpacks, every message of the conversation.
    candidates = messages.order_by(order).values("pk")[: limit + 1]
    sizes = list(messages.model.objects.filter(pk__in=candidates).order_by(order)
                 .annotate(chars=Length("content")).values_list("seq", "chars"))
    wanted: list[int] = []
    budget = PAGE_MAX_BYTES
    for seq, chars in sizes[:limit]:
        cost = chars + ENVELOPE_BYTES  # as ASCII: the exact size is measured below
        if wanted and cost > budget:
            break
        wanted.append(seq)
        budget -= cost
    found: list[dict] = []
    size = 0
    for message in messages.filter(seq__in=wanted).order_by(order):
        shown = payloads.message(message)
        size += len(json.dumps(shown))
        if found and size > PAGE_MAX_BYTES:
            break
        found.append(shown)
    return Page(messages=found, has_more=len(found) < len(sizes))
