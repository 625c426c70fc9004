"""Existing sessions for the load to continue, written straight into the bench database."""

import uuid
from datetime import timedelta
from pathlib import Path

import redis
from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.utils import timezone

from conversations import sessions
from conversations.models import Conversation, Message, Session


def conversations(count: int, history: int, path: Path, cached: bool = True) -> list[str]:
    """`count` conversations of `history` messages each (question, answer, ...), last active an hour ago.

    Writes their session ids to `path`, one per line, and returns them. Their
    last message is old, so none counts as a turn still in flight. With
    `cached`, Redis knows them already, as it knows a returning session
    (the site's entry and the minimal turn's), so every run measures the
    steady state rather than a mix of first and later turns.
    """
    started = timezone.now() - timedelta(hours=1)
    created = Conversation.objects.bulk_create(
        [Conversation(session_id=uuid.uuid4(), created_at=started, last_activity_at=started)
         for _ in range(count)],
        batch_size=2000,
    )
    # Each with its first session, as Conversation.save makes it (bulk_create does not call save).
    Session.objects.bulk_create(
        [Session(session_id=c.session_id, conversation=c, created_at=started, last_seen_at=started) for c in created],
        batch_size=2000,
    )
    roles = [Message.Role.USER, Message.Role.ASSISTANT]
    Message.objects.bulk_create(
        (
            Message(
                conversation=conversation,
                seq=seq,
                role=roles[seq % 2],
                content=f"Seeded message {seq}: what is your return policy for sale items?",
                created_at=started + timedelta(microseconds=seq),
            )
            for conversation in created
            for seq in range(history)
        ),
        batch_size=5000,
    )
    if cached:
        cache.set_many({sessions.cache_key(c.session_id): c.pk for c in created}, timeout=24 * 3600)
        with redis.Redis.from_url(settings.REDIS_URL) as client:
            # bench/minimal.py's key: its own, with no expiry to keep a GET a GET.
            client.mset({f"minimal:session:{c.session_id}": c.pk for c in created})
    ids = [str(conversation.session_id) for conversation in created]
    path.write_text("\n".join(ids) + "\n")
    # The harness keeps no connection of its own open: figure 5 counts every connection to the
    # bench database as the site's.
    connection.close()
    if hasattr(connection, "close_pool"):
        connection.close_pool()
    return ids
