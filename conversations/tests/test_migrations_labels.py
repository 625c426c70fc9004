"""Migration 0010: the labels of sessions written in English ("Firefox on Android", "A browser") keep
only the browser and its system, which Session.name says in the reader's language."""

import uuid

import pytest

from .test_migrations_sessions import migrate, migrate_to_latest

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE = [("conversations", "0009_verbose_names")]
AFTER = [("conversations", "0010_session_labels_in_no_language")]


def test_labels_written_in_english_keep_the_browser_and_its_system():
    old = migrate(BEFORE)
    conversation = old.get_model("conversations", "Conversation").objects.create(session_id=uuid.uuid4())
    written = {"Firefox on Android": "Firefox · Android", "Samsung Internet on Android": "Samsung Internet · Android",
               "Safari": "Safari", "A browser": "", "A browser on Linux": "", "": ""}
    for label in written:
        old.get_model("conversations", "Session").objects.create(
            conversation=conversation, session_id=uuid.uuid4(), label=label)

    try:
        new = migrate(AFTER)

        sessions = new.get_model("conversations", "Session").objects.order_by("pk")
        assert list(sessions.values_list("label", flat=True)) == list(written.values())
    finally:
        migrate_to_latest()
