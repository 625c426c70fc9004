"""GET /api/history and GET /api/updates answer bounded pages (conversations/paging.py), against the
site served the Procfile's way on PostgreSQL; the junk parameters through Django's test client."""

import json

import pytest

from conversations import paging

from . import data
from .client import SiteClient, get_updates

# A page's messages are at most PAGE_MAX_BYTES past its first; the rest of the answer is small.
ANSWER_ROOM = 2048


def walk_history(api: SiteClient, session_id: str, **query) -> list[dict]:
    """Every page of the history, newest page first, each checked against the bounds."""
    pages = []
    before = None
    while True:
        response = api.history(session_id, **query, **({"before": before} if before is not None else {}))
        page = response.ok()
        pages.append(page)
        seqs = [message["seq"] for message in page["messages"]]
        assert seqs and seqs == sorted(seqs)
        assert len(seqs) <= query.get("limit", paging.DEFAULT_LIMIT)
        assert len(response.text) <= max(paging.PAGE_MAX_BYTES, single(page)) + ANSWER_ROOM
        if not page["hasMore"]:
            assert page["before"] is None
            return pages
        assert page["before"] == seqs[0]
        before = page["before"]


def single(page: dict) -> int:
    return max(len(json.dumps(message)) for message in page["messages"])


def test_history_pages_cover_the_conversation_once_while_messages_arrive(live_site):
    conversation = data.long_conversation(300, question_chars=200, reply_chars=600)
    session_id = str(conversation.session_id)
    api = SiteClient(live_site)

    newest = api.history(session_id).ok()
    assert [m["seq"] for m in newest["messages"]] == list(range(250, 300))
    assert newest["hasMore"] is True and newest["before"] == 250
    assert newest["turnInProgress"] is False and newest["handoff"] == "assistant"

    # Older pages, while the customer goes on writing: what arrives is newer than every cursor,
    # so it is in no older page, and the long poll after the newest page brings it.
    seen = [m["seq"] for m in newest["messages"]]
    before = newest["before"]
    sent = 0
    while before is not None:
        api.chat(f"Still there? {before}", session_id).ok()
        sent += 1
        page = api.history(session_id, before=before).ok()
        seen = [m["seq"] for m in page["messages"]] + seen
        before = page["before"]
    assert seen == list(range(300))
    assert [m["content"].split(":")[0] for m in api.history(session_id, before=3).ok()["messages"]] == ["0", "1", "2"]

    arrived = api.updates(session_id, after=299).ok()
    assert [m["seq"] for m in arrived["messages"]] == list(range(300, 300 + 2 * sent))
    assert arrived["hasMore"] is False


def test_history_pages_stop_at_the_byte_bound_and_take_a_limit(live_site):
    # Replies at the longest stored, in letters JSON escapes (six bytes each): a page of 100 would be 7 MB.
    conversation = data.long_conversation(60, question_chars=4000, reply_chars=20000, filler="é")
    session_id = str(conversation.session_id)
    api = SiteClient(live_site)

    pages = walk_history(api, session_id, limit=100)

    assert len(pages) > 1
    assert [m["seq"] for page in reversed(pages) for m in page["messages"]] == list(range(60))
    assert [len(page["messages"]) for page in walk_history(api, session_id, limit=1)] == [1] * 60
    short = data.long_conversation(30, question_chars=10, reply_chars=10)
    assert [len(page["messages"]) for page in walk_history(api, str(short.session_id), limit=7)] == [7, 7, 7, 7, 2]


def test_updates_far_behind_get_one_bounded_page_at_a_time(live_site):
    conversation = data.long_conversation(250, question_chars=4000, reply_chars=20000)
    session_id = str(conversation.session_id)
    api = SiteClient(live_site)

    seen: list[int] = []
    after = -1
    while True:
        response = api.updates(session_id, after=after, state="assistant")
        page = response.ok()
        seqs = [m["seq"] for m in page["messages"]]
        assert seqs and seqs == sorted(seqs) and len(seqs) <= paging.MAX_LIMIT
        assert len(response.text) <= paging.PAGE_MAX_BYTES + ANSWER_ROOM
        seen += seqs
        after = seqs[-1]
        if not page["hasMore"]:
            break
    assert seen == list(range(250))


@pytest.mark.django_db
@pytest.mark.parametrize(("query", "code"), [
    ("limit=0", "invalid_limit"), ("limit=101", "invalid_limit"), ("limit=abc", "invalid_limit"),
    ("limit=-1", "invalid_limit"), ("limit=1.5", "invalid_limit"), ("limit=", "invalid_limit"),
    ("limit=%00", "invalid_limit"), ("limit=99999999999999999999", "invalid_limit"),
    ("before=-1", "invalid_before"), ("before=abc", "invalid_before"), ("before=1e3", "invalid_before"),
    ("before=", "invalid_before"), ("before=99999999999", "invalid_before"), ("before=%20", "invalid_before"),
])
def test_junk_paging_parameters_are_a_json_400(client, query, code):
    conversation = data.long_conversation(3, question_chars=10, reply_chars=10)
    response = client.get(f"/api/history?{query}", headers={"X-Session-Id": str(conversation.session_id)})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == code


@pytest.mark.django_db(transaction=True)
def test_a_history_page_and_an_updates_page_read_only_their_rows(client, queries):
    """Two short queries for a page and one for the conversation (with its EXISTS), however long
    the conversation: no statement reads it whole."""
    conversation = data.long_conversation(400, question_chars=10, reply_chars=10)
    session_id = str(conversation.session_id)

    queries.clear()
    page = client.get("/api/history?limit=5", headers={"X-Session-Id": session_id}).json()
    assert [m["seq"] for m in page["messages"]] == [395, 396, 397, 398, 399]
    reads = [sql for sql in queries.statements if "conversations_message" in sql]
    assert len(queries) == 3 and all("LIMIT" in sql or "IN (" in sql for sql in reads), queries.statements

    status, updates = get_updates(client, session_id, after=-1, state="assistant")
    assert status == 200 and len(updates["messages"]) == paging.MAX_LIMIT and updates["hasMore"] is True
