"""Session ids: validating them, and finding a session's conversation through the cache.

This is the only module that knows the session cache keys. The database is the
source of truth; the cache only saves the lookup, and is never trusted for who
owns a conversation: every lookup is checked against the session id in the
database. A cache that fails (Redis stopped, paused or unreachable) is logged
and treated as a miss, and is then left alone for a few seconds (shared_state).

The keys hold a hash of the session id, never the id itself: a session id
works like a password, and whoever can list Redis keys (monitoring, a backup,
SCAN) must not be able to open conversations with them. The version in the
key lets its format change without reading old entries.
"""

import hashlib
import logging
import uuid
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from . import shared_state

logger = logging.getLogger(__name__)


class InvalidSessionId(ValueError):
    pass


def parse_session_id(value: object) -> uuid.UUID:
    """The UUID in `value`, which must be a canonical (lowercase, hyphenated) UUID string."""
    if not isinstance(value, str) or len(value) != 36:
        raise InvalidSessionId("sessionId must be a UUID string")
    try:
        parsed = uuid.UUID(value)
    except ValueError:
        raise InvalidSessionId("sessionId must be a UUID string") from None
    if str(parsed) != value:
        raise InvalidSessionId("sessionId must be a UUID string")
    return parsed


def new_session_id() -> uuid.UUID:
    return uuid.uuid4()


def short_hash(session_id: uuid.UUID) -> str:
    """What logs say instead of the session id, which works like a password."""
    return hashlib.sha256(session_id.bytes).hexdigest()[:12]


def cache_key(session_id: uuid.UUID) -> str:
    return f"session:v2:{hashlib.sha256(session_id.bytes).hexdigest()}"


def cached_conversation_id(session_id: uuid.UUID) -> int | None:
    """The conversation id cached for this session, or None on a miss (a failed cache is one)."""
    value = shared_state.get(cache_key(session_id))
    if value is not None and type(value) is not int:
        # Not what remember() writes: someone else wrote the key. A miss, and gone.
        logger.warning("session cache entry of the wrong type, dropped: %s", type(value).__name__)
        forget_many([session_id])
        return None
    return value


def cache_entry(session_id: uuid.UUID, conversation_id: int, last_activity_at: datetime
                ) -> tuple[str, int, int] | None:
    """The mapping as a value for shared_state, cached for no longer than the session has left
    to live; None when it has none left."""
    idle_left = (
        last_activity_at + timedelta(days=settings.CHAT_SESSION_IDLE_DAYS) - timezone.now()
    ).total_seconds()
    timeout = int(min(settings.CHAT_SESSION_CACHE_SECONDS, idle_left))
    if timeout <= 0:
        return None
    return cache_key(session_id), conversation_id, timeout


def remember(session_id: uuid.UUID, conversation_id: int, last_activity_at: datetime) -> None:
    """Cache the mapping (from a thread; a turn sends cache_entry() in its own round trip)."""
    entry = cache_entry(session_id, conversation_id, last_activity_at)
    if entry is not None:
        name, value, ttl = entry
        shared_state.set_many({name: value}, ttl)


def forget_many(session_ids: list[uuid.UUID]) -> None:
    """Drop the cached mappings of these sessions in one round trip. A failure is logged: the
    entries then die by their TTL, and a stale entry is harmless because every lookup is
    checked against the database."""
    shared_state.delete_many([cache_key(session_id) for session_id in session_ids])
