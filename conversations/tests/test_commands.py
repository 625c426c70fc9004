"""The management commands support staff and operators run, on generated data."""

import io
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta

import pytest
from django.conf import settings
from django.core.cache import cache
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from conversations import sessions
from conversations.management.commands import chat_export
from conversations.models import Conversation, Message

from . import data

pytestmark = pytest.mark.django_db


class Terminal(io.StringIO):
    def isatty(self):
        return True


def run(*args, stderr=None) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=stderr or io.StringIO())
    return out.getvalue()


def days_ago(days: float) -> datetime:
    return timezone.now() - timedelta(days=days)


# --- chat_show ---------------------------------------------------------------

def test_chat_show_prints_the_transcript_by_reference_or_id():
    conversation = data.conversation(turns=2, model="gpt-4o-mini", latency_ms=812)
    data.conversation()

    by_reference = run("chat_show", conversation.reference)

    assert by_reference == run("chat_show", str(conversation.session_id))
    assert by_reference.startswith(f"Conversation {conversation.reference}\n")
    assert str(conversation.session_id) not in by_reference  # it works like a password
    assert "Customer:\n    Question 1?" in by_reference
    assert "Assistant (gpt-4o-mini, 812 ms, 50+20 tokens):\n    Answer 2." in by_reference
    assert by_reference.index("Question 2?") < by_reference.index("Answer 2.")


@pytest.mark.parametrize(("argument", "error"), [
    ("0000abcd", "No conversation"),
    ("abc", "neither a session id nor"),
    ("not-an-id-at-all", "neither a session id nor"),
])
def test_chat_show_explains_what_it_cannot_find(argument, error):
    data.conversation()
    with pytest.raises(CommandError, match=error):
        run("chat_show", argument)


def test_chat_show_asks_for_more_when_a_reference_is_shared():
    first = data.conversation(session_id=uuid.UUID("a1c9a0a3-0000-4000-8000-000000000001"))
    data.conversation(session_id=uuid.UUID("a1c9a0a3-0000-4000-8000-000000000002"))

    with pytest.raises(CommandError, match="give more of the session id"):
        run("chat_show", "a1c9a0a3")
    assert "Question 1?" in run("chat_show", str(first.session_id))


# --- chat_export -------------------------------------------------------------

def test_chat_export_writes_one_json_line_per_conversation_oldest_first():
    first, second = data.conversations(2, turns=2)
    failed = data.conversation(failed_last=True)

    lines = run("chat_export").splitlines()

    records = [json.loads(line) for line in lines]
    assert [r["reference"] for r in records] == [c.reference for c in (first, second, failed)]
    assert [(m["seq"], m["role"], m["content"], m["status"]) for m in records[2]["messages"]] == [
        (0, "user", "Question 1?", "failed")
    ]
    assert records[0]["messages"][1] == {
        "seq": 1, "role": "assistant", "content": "Answer 1.", "status": "complete",
        "createdAt": records[0]["messages"][1]["createdAt"], "clientMessageId": "q0",
        "model": "offline-faq", "promptTokens": 50, "completionTokens": 20, "latencyMs": 100,
        "author": None,
    }
    assert records[2]["failedTurns"] == 1 and records[2]["reference"] == failed.reference


def test_chat_export_names_session_ids_only_when_asked():
    first, second = data.conversations(2)

    plain = run("chat_export")
    with_ids = [json.loads(line) for line in run("chat_export", "--with-session-ids").splitlines()]

    assert str(first.session_id) not in plain and str(second.session_id) not in plain
    assert [r["sessionId"] for r in with_ids] == [str(first.session_id), str(second.session_id)]


def test_chat_show_says_when_the_last_message_was_written_to_the_second():
    conversation = data.conversation(turns=1)
    # A turn moves last_activity_at on at most once a minute (turns.ACTIVITY_RESOLUTION).
    latest = conversation.last_activity_at + timedelta(seconds=47)
    conversation.messages.filter(seq=1).update(created_at=latest)

    header = run("chat_show", conversation.reference).splitlines()[1]

    assert f"last activity {timezone.localtime(latest):%Y-%m-%d %H:%M:%S}," in header


def test_chat_export_keeps_one_conversation_a_line_whatever_the_customer_typed():
    conversation = data.conversation()
    text = "Zwei Zeilen\u2028Ligne\u2029deux\x85три\nreal newline 🙂"
    conversation.messages.filter(seq=0).update(content=text)
    data.conversation()

    out = run("chat_export")

    assert len(out.splitlines()) == 2  # splitlines() breaks at U+2028, U+2029 and U+0085 too
    assert json.loads(out.splitlines()[0])["messages"][0]["content"] == text


def test_chat_export_selects_by_day_of_last_activity(tmp_path):
    old = data.conversation(started=days_ago(10))
    middle = data.conversation(started=days_ago(5))
    data.conversation(started=days_ago(1))
    since = days_ago(10).date().isoformat()
    until = days_ago(5).date().isoformat()

    exported = [json.loads(line)["reference"] for line in run("chat_export", "--since", since,
                                                              "--until", until).splitlines()]
    assert exported == [old.reference, middle.reference]
    only_since = run("chat_export", "--since", days_ago(5).date().isoformat()).splitlines()
    assert len(only_since) == 2

    output = tmp_path / "export.jsonl"
    assert run("chat_export", "--until", until, "--output", str(output)) == (
        f"Exported 2 conversations to {output}.\n"
    )
    assert len(output.read_text().splitlines()) == 2


@pytest.mark.parametrize("args", [["--since", "yesterday"], ["--until", "2026-02-30"],
                                  ["--since", "2026-02-02", "--until", "2026-02-01"]])
def test_chat_export_refuses_bad_dates(args):
    with pytest.raises(CommandError):
        run("chat_export", *args)


def test_chat_export_streams_in_chunks(monkeypatch):
    monkeypatch.setattr(chat_export, "CHUNK_SIZE", 2)
    data.conversations(5, turns=3)

    with CaptureQueriesContext(connection) as queries:
        lines = run("chat_export").splitlines()

    assert len(lines) == 5
    message_queries = [q for q in queries if 'FROM "conversations_message"' in q["sql"]]
    # The messages are read a chunk of conversations at a time, not all at once.
    assert len(message_queries) == 3


def test_chat_export_shows_progress_only_on_a_terminal():
    data.conversations(3)

    quiet = io.StringIO()
    run("chat_export", stderr=quiet)
    assert quiet.getvalue() == ""

    terminal = Terminal()
    out = run("chat_export", stderr=terminal)
    assert len(out.splitlines()) == 3  # the progress bar is not in the data
    assert terminal.getvalue().rstrip().endswith("100% 3/3 conversations")
    assert terminal.getvalue().startswith("\r[")


# --- chat_purge --------------------------------------------------------------

@pytest.fixture
def ages():
    """Conversations idle 100, 100, 40 and 1 days, with cache entries."""
    made = {
        "old": data.conversations(2, turns=2, started=days_ago(100)),
        "middle": [data.conversation(started=days_ago(40))],
        "recent": [data.conversation(started=days_ago(1))],
    }
    for group in made.values():
        for conversation in group:
            # Straight into the cache: remember() would (rightly) not cache expired ones.
            cache.set(sessions.cache_key(conversation.session_id), conversation.pk, 3600)
    return made


def cached(conversation) -> bool:
    return sessions.cached_conversation_id(conversation.session_id) is not None


def test_chat_purge_dry_run_deletes_nothing(ages):
    out = run("chat_purge", "--older-than", "30", "--dry-run")

    assert out == "Would delete 3 conversations (10 messages) idle for more than 30 days. " \
                  "Nothing was deleted (--dry-run).\n"
    assert Conversation.objects.count() == 4 and Message.objects.count() == 12
    assert all(cached(c) for group in ages.values() for c in group)


def test_chat_purge_deletes_old_conversations_messages_and_cache_entries(ages):
    out = run("chat_purge", "--older-than", "60")

    assert out == "Deleted 2 conversations (8 messages) idle for more than 60 days, and their cache entries.\n"
    assert set(Conversation.objects.all()) == {*ages["middle"], *ages["recent"]}
    assert Message.objects.count() == 4
    assert not any(cached(c) for c in ages["old"])
    assert all(cached(c) for c in ages["middle"] + ages["recent"])


def test_chat_purge_defaults_to_the_retention_setting(ages, settings):
    settings.CHAT_RETENTION_DAYS = 30
    assert run("chat_purge").startswith("Deleted 3 conversations (10 messages) idle for more than 30 days")
    assert list(Conversation.objects.all()) == ages["recent"]


def test_chat_purge_works_in_batches():
    data.conversations(5, started=days_ago(100))
    data.conversation()

    out = run("chat_purge", "--older-than", "30", "--batch-size", "2", "--verbosity", "2")

    assert out.splitlines() == [
        "  deleted 2 conversations (4 messages)",
        "  deleted 2 conversations (4 messages)",
        "  deleted 1 conversations (2 messages)",
        "Deleted 5 conversations (10 messages) idle for more than 30 days, and their cache entries.",
    ]
    assert Conversation.objects.count() == 1


def test_chat_purge_warns_before_deleting_conversations_that_are_not_expired(ages):
    err = io.StringIO()
    run("chat_purge", "--older-than", "7", "--dry-run", stderr=err)
    assert "customers could still continue" in err.getvalue()


@pytest.mark.parametrize("days", ["0", "-3", "ten"])
def test_chat_purge_refuses_a_bad_age(days):
    with pytest.raises(CommandError):
        run("chat_purge", "--older-than", days)


def test_chat_purge_deletes_the_keys_in_redis(shared_redis):
    old = data.conversation(started=days_ago(100))
    kept = data.conversation()
    for conversation in (old, kept):
        shared_redis.set(sessions.cache_key(conversation.session_id), conversation.pk, 3600)

    run("chat_purge", "--older-than", "30")

    assert shared_redis.get(sessions.cache_key(old.session_id)) is None
    assert shared_redis.get(sessions.cache_key(kept.session_id)) == kept.pk


def test_chat_purge_with_a_stalled_redis_pays_one_timeout_not_one_per_key(own_redis):
    data.conversations(30, started=days_ago(100))
    own_redis.process.send_signal(signal.SIGSTOP)  # accepts connections, never answers
    try:
        started = time.monotonic()
        out = run("chat_purge", "--older-than", "30", "--batch-size", "10")
        elapsed = time.monotonic() - started
    finally:
        own_redis.process.send_signal(signal.SIGCONT)

    assert out.startswith("Deleted 30 conversations")
    assert Conversation.objects.count() == 0
    assert elapsed < 2.0  # one socket timeout (0.25 s), then the cache is skipped


# --- chat_stats --------------------------------------------------------------

def stats_rows(out: str) -> dict[str, list[str]]:
    """The table by its first column: {"2026-01-31": [...], "total": [...]}."""
    rows = {}
    for line in out.splitlines()[2:]:
        first, *cells = line.split()
        rows[first] = cells
    return rows


def test_chat_stats_per_day():
    today = timezone.localdate()
    noon = timezone.make_aware(datetime.combine(today, datetime.min.time())) + timedelta(hours=12)
    yesterday = noon - timedelta(days=1)
    # Today: replies taking 1..100 ms, and one failed turn.
    for latency in range(1, 101):
        data.conversation(started=noon - timedelta(minutes=latency), latency_ms=latency)
    data.conversation(started=noon, failed_last=True)
    # Yesterday: two conversations of two turns, 10 and 30 ms.
    data.conversation(turns=2, started=yesterday, latency_ms=10)
    data.conversation(turns=2, started=yesterday, latency_ms=30)
    # A stopped reply counts tokens but not latency.
    stopped = data.conversation(started=noon, latency_ms=99999)
    stopped.messages.filter(role="assistant").update(status=Message.Status.STOPPED)

    out = run("chat_stats", "--days", "3")

    rows = stats_rows(out)
    columns = out.splitlines()[1].split("  ")
    assert [c.strip() for c in columns if c.strip()] == [
        "day", "conversations", "turns", "failed", "avg ms", "p95 ms", "prompt tokens", "completion tokens"
    ]
    # conversations, turns, failed, avg ms, p95 ms, prompt and completion tokens
    assert rows[today.isoformat()] == ["102", "102", "1", "50", "95", "5,050", "2,020"]
    assert rows[(today - timedelta(days=1)).isoformat()] == ["2", "4", "0", "20", "30", "200", "80"]
    assert rows[(today - timedelta(days=2)).isoformat()] == ["0", "0", "0", "-", "-", "0", "0"]
    assert rows["total"] == ["104", "106", "1", "49", "95", "5,250", "2,100"]


def test_chat_stats_with_no_data():
    rows = stats_rows(run("chat_stats", "--days", "1"))
    assert rows[timezone.localdate().isoformat()] == ["0", "0", "0", "-", "-", "0", "0"]


# --- a database that is not the site's ---------------------------------------------------


def manage(*args: str, database_url: str) -> subprocess.CompletedProcess:
    """A command in a new shell that reaches `database_url` (none of the site's settings)."""
    env = {**os.environ, "DATABASE_URL": database_url, "DJANGO_SECRET_KEY": "test-only-secret-key"}
    return subprocess.run([sys.executable, "manage.py", *args], cwd=settings.BASE_DIR, env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("command", [["chat_stats"], ["chat_queue"], ["chat_show", "a1c9a0a3"],
                                     ["chat_export"], ["chat_purge", "--dry-run"]])
def test_a_command_against_a_missing_sqlite_file_says_so_and_creates_nothing(tmp_path, command):
    database = tmp_path / "db.sqlite3"

    finished = manage(*command, database_url=f"sqlite:///{database}")

    assert finished.returncode != 0
    assert ("the database has no tables: run migrate, or point DATABASE_URL at the site's database"
            in finished.stderr)
    assert "Traceback" not in finished.stderr
    assert len(finished.stderr.strip().splitlines()) <= 2  # the message (and the settings' note), no more
    assert not database.exists() and list(tmp_path.iterdir()) == []


def test_a_command_against_an_empty_database_says_so(postgres):
    name = f"chatsite_empty_{os.getpid()}"
    with connection.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS {name}")
        cursor.execute(f"CREATE DATABASE {name}")
    try:
        db = connection.settings_dict
        url = f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{name}"
        finished = manage("chat_stats", database_url=url)
        assert finished.returncode != 0
        assert f"the database has no tables: run migrate, or point DATABASE_URL at the site's database ({name}" \
            in finished.stderr
        assert "Traceback" not in finished.stderr
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
