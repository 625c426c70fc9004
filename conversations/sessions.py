"""Session ids: validating them, and finding a session's conversation through the cache.

This is the only module that knows the session cache keys. The database is the
source of truth; the cache only saves the lookup, and is never trusted for who
owns a conversation: every lookup is checked against the session id in the
database. A cache that fails (Redis stopped, paused or unreachable) is logged
and treated as a miss, and is then left alone for a few seconds (cache_guard).

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
from django.core.cache import cache
from django.utils import timezone

from . import cache_guard
from .models import Message, idle_cutoff

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


def recent_messages(session_id: uuid.UUID, limit: int) -> list[Message]:
    """The latest `limit` messages of the session's active conversation, newest first, each
    with its conversation loaded; [] if the session has none (unknown, deleted or expired).

    One query either way: a cached conversation id narrows it to that conversation's
    rows, and the session id is checked in the same query, so a stale or wrong
    entry finds nothing rather than another conversation.
    """
    messages = Message.objects.select_related("conversation").filter(
        conversation__session_id=session_id, conversation__last_activity_at__gte=idle_cutoff()
    )
    conversation_id = cached_conversation_id(session_id)
    if conversation_id is not None:
        messages = messages.filter(conversation_id=conversation_id)
    recent = list(messages.order_by("-seq")[:limit])
    if not recent and conversation_id is not None:
        forget(session_id)  # deleted or expired: the cached entry is stale
    elif recent and conversation_id is None:
        conversation = recent[0].conversation
        remember(session_id, conversation.pk, conversation.last_activity_at)
    return recent


def cached_conversation_id(session_id: uuid.UUID) -> int | None:
    """The conversation id cached for this session, or None on a miss or a cache failure."""
    if not cache_guard.available():
        return None
    try:
        value = cache.get(cache_key(session_id))
    except Exception as error:  # noqa: BLE001 - any cache failure is a miss
        cache_guard.failed("get", error)
        return None
    if value is not None and type(value) is not int:
        # Not what remember() writes: someone else wrote the key. A miss, and gone.
        logger.warning("session cache entry of the wrong type, dropped: %s", type(value).__name__)
        forget(session_id)
        return None
    return value


def conversation_id_from(value: bytes | None) -> int | None:
    """A conversation id as redis.asyncio reads remember()'s entry (django-redis stores an int as
    its digits); None for a miss, or for anything remember() does not write."""
    if value is None or not value.isdigit() or len(value) > 18:
        return None
    return int(value)


def remember(session_id: uuid.UUID, conversation_id: int, last_activity_at: datetime) -> None:
    """Cache the mapping for no longer than the session has left to live."""
    if not cache_guard.available():
        return
    idle_left = (
        last_activity_at
        + timedelta(days=settings.CHAT_SESSION_IDLE_DAYS)
        - timezone.now()
    ).total_seconds()
    timeout = int(min(settings.CHAT_SESSION_CACHE_SECONDS, idle_left))
    if timeout <= 0:
        return
    try:
        cache.set(cache_key(session_id), conversation_id, timeout)
    except Exception as error:  # noqa: BLE001
        cache_guard.failed("set", error)


def forget(session_id: uuid.UUID) -> None:
    """Drop the cached mapping. A failure here is logged: the entry then dies by its TTL,
    and a stale entry is harmless because every lookup is checked against the database."""
    forget_many([session_id])


def forget_many(session_ids: list[uuid.UUID]) -> None:
    """Drop the cached mappings of many sessions in one round trip (chat_purge, admin).

    While the cache is being skipped after a failure, this skips it too rather
    than pay a timeout per batch: the entries die by their TTL, and are never
    trusted without the database meanwhile.
    """
    if not session_ids or not cache_guard.available():
        return
    try:
        cache.delete_many([cache_key(session_id) for session_id in session_ids])
    except Exception as error:  # noqa: BLE001
        cache_guard.failed("delete", error)
