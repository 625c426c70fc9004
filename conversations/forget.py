"""Forgetting conversations: the customer's "forget me", staff's Delete, and chat_purge.

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
    rows, messages = await rt.store.forget(session_ids=session_ids, conversation_ids=conversation_ids,
                                           idle_before=idle_before)
    if rows:
        await rt.gateway.round_trip(values=[updates.version_entry(pk) for pk, _ in rows],
                                    deletes=[sessions.cache_key(session_id) for _, session_id in rows])
    return len(rows), messages


def conversations(queryset, idle_before: datetime | None = None) -> tuple[int, int]:
    """forget(), for the conversations of a queryset, from synchronous code (the admin, commands)."""
    ids = list(queryset.values_list("pk", flat=True))
    if not ids:
        return 0, 0
    return blocking(forget)(conversation_ids=ids, idle_before=idle_before)
