"""Forgetting conversations: the customer's "forget me", staff's Delete, and chat_purge.

A conversation goes with every session of it (every browser that joined it), and
the cache entries of all of them.

The database goes first (store.forget: the conversations and every message in
them, even while messages arrive), then, in one round trip, their cache entries
go and their waiting pages are told, so an open page learns at once that its
conversation is gone. A cache entry left behind by a cache failure dies by its
TTL and is never trusted without the database anyway.
"""

import uuid
from datetime import datetime

from . import runtime, sessions, updates
from .db import blocking


async def forget(*, session_ids: list[uuid.UUID] | None = None, conversation_ids: list[int] | None = None,
                 idle_before: datetime | None = None) -> tuple[int, int]:
    """Delete these conversations (see store.forget); how many conversations and messages went."""
    rt = runtime.current()
    ids, ended, messages = await rt.store.forget(session_ids=session_ids, conversation_ids=conversation_ids,
                                                 idle_before=idle_before)
    if ids:
        await rt.gateway.round_trip(values=[updates.version_entry(pk) for pk in ids],
                                    deletes=[sessions.cache_key(session_id) for session_id in ended])
    return len(ids), messages


def conversations(queryset, idle_before: datetime | None = None) -> tuple[int, int]:
    """forget(), for the conversations of a queryset, from synchronous code (the admin, commands)."""
    ids = list(queryset.values_list("pk", flat=True))
    if not ids:
        return 0, 0
    return blocking(forget)(conversation_ids=ids, idle_before=idle_before)
