"""Migration 0004: every conversation there was gets its first session, so that every session id
issued before sessions had a table of their own still finds its conversation."""

import uuid

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE = [("conversations", "0003_handoff")]
AFTER = [("conversations", "0004_sessions")]


def migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


def migrate_to_latest():
    """The latest schema again, whatever migrations come after the one a test went back to."""
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())


def test_every_existing_conversation_gets_its_first_session():
    old = migrate(BEFORE)
    ids = [uuid.uuid4() for _ in range(3)]
    for session_id in ids:
        old.get_model("conversations", "Conversation").objects.create(session_id=session_id)

    try:
        new = migrate(AFTER)

        sessions = new.get_model("conversations", "Session").objects
        assert sorted(sessions.values_list("session_id", flat=True)) == sorted(ids)
        for session in sessions.all():
            assert session.conversation.session_id == session.session_id
    finally:
        migrate_to_latest()
