"""The turn's state machine (turns.py): one test per transition, the concurrent ones with
real concurrency against the deployed site on PostgreSQL, and the faults it must survive:
parallel retries, a worker killed mid-turn, database connections killed, locks held."""

import http.client
import json
import os
import signal
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from conversations.models import Conversation, Message
from devtools.processes import Site

from .client import SiteClient, post_chat
from .helpers import site_env, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def slot_of(client_message_id: str) -> Message | None:
    return Message.objects.filter(client_message_id=client_message_id, role="assistant").first()


def last_event(stream: str) -> str:
    return [line for line in stream.splitlines() if line.startswith("event: ")][-1].removeprefix("event: ")


def worker_pids(site: Site) -> list[int]:
    """The gunicorn workers of a site (the children of its master process)."""
    assert site.process is not None
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    parent = int(stat.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if parent == site.pid:
                children.append(int(entry))
    return children


# --- (none) -> answering -> complete ----------------------------------------------


def test_a_question_holds_its_answer_slot_under_a_lease_while_it_is_answered(live_site, llm):
    api = SiteClient(live_site)
    _, first, _ = api.send({"message": "Hi"})
    session_id = first["sessionId"]
    llm.control("ok", delay=1.0)

    with ThreadPoolExecutor(1) as pool:
        turn = pool.submit(api.send, {"message": "Slow", "sessionId": session_id, "clientMessageId": "s-1"})
        slot = wait_for(lambda: slot_of("s-1"))
        assert slot.status == "answering" and slot.content == ""
        assert slot.lease_owner is not None and slot.lease_until > timezone.now()
        during = api.history(session_id).ok()
        assert during["turnInProgress"] is True
        assert [m["content"] for m in during["messages"]] == ["Hi", "Echo: Hi", "Slow"]  # no empty reply
        status, body, _ = turn.result()

    assert status == 200 and body["reply"] == "Echo: Slow"
    slot.refresh_from_db()
    assert (slot.status, slot.content, slot.seq) == ("complete", "Echo: Slow", 3)
    after = api.history(session_id).ok()
    assert after["turnInProgress"] is False and after["messages"][-1]["content"] == "Echo: Slow"


# --- failed -> answering, one owner among parallel retries -------------------------


@pytest.mark.parametrize("accept", ["application/json", "text/event-stream"])
def test_ten_parallel_retries_of_a_failed_question_are_answered_once(live_site, llm, accept):
    api = SiteClient(live_site)
    _, first, _ = api.send({"message": "Hi"})
    body = {"message": "Where is my parcel?", "sessionId": first["sessionId"], "clientMessageId": "r-1"}
    llm.control("status", status=500)
    assert api.send(body)[0] == 502
    llm.reset()
    llm.control("ok", delay=0.5)

    with ThreadPoolExecutor(10) as pool:
        results = list(pool.map(lambda _: api.send(body, headers={"Accept": accept}), range(10)))

    statuses = [status for status, _, _ in results]
    assert set(statuses) <= {200, 409} and 200 in statuses, statuses
    for status, answer, headers in results:
        if status == 409:
            assert answer["error"]["code"] == "turn_in_progress"
            assert int(headers["Retry-After"]) in {1, 2}
        elif accept == "text/event-stream":
            assert last_event(answer) == "done", answer  # never cut off without done or error
            assert "Echo: Where is my parcel?" in answer
        else:
            assert answer["reply"] == "Echo: Where is my parcel?"
    assert llm.stats()["received"] == 1  # exactly one LLM call for the question
    question = Message.objects.get(client_message_id="r-1", role="user")
    assert question.status == "complete"
    assert Message.objects.filter(client_message_id="r-1", role="assistant", status="complete").count() == 1
    # And once answered, the next retries get the stored reply without an LLM call.
    assert api.send(body).body["reply"] == "Echo: Where is my parcel?"
    assert llm.stats()["received"] == 1


def test_a_new_question_while_a_retry_is_answered_is_refused_and_the_retry_kept(live_site, llm):
    api = SiteClient(live_site)
    _, first, _ = api.send({"message": "Hi"})
    session_id = first["sessionId"]
    retry = {"message": "First question", "sessionId": session_id, "clientMessageId": "r-2"}
    llm.control("status", status=500)
    assert api.send(retry)[0] == 502
    llm.control("ok", delay=1.0)

    with ThreadPoolExecutor(1) as pool:
        retried = pool.submit(api.send, retry)
        wait_for(lambda: slot_of("r-2"))
        status, body, headers = api.send({"message": "Second", "sessionId": session_id,
                                                 "clientMessageId": "n-2"})
        assert (status, body["error"]["code"]) == (409, "turn_in_progress") and headers["Retry-After"]
        assert retried.result()[0] == 200

    messages = list(Conversation.objects.get(session_id=session_id).messages.values_list("content", "status"))
    assert messages == [("Hi", "complete"), ("Echo: Hi", "complete"), ("First question", "complete"),
                        ("Echo: First question", "complete")]


# --- answering -> failed ---------------------------------------------------------------


def test_an_llm_failure_frees_the_slot_and_marks_the_question_failed(client, llm):
    _, first = post_chat(client, message="Hi")
    llm.control("status", status=500)
    status, body = post_chat(client, message="Fail", sessionId=first["sessionId"], clientMessageId="f-1")

    assert (status, body["error"]["code"]) == (502, "llm_unavailable")
    assert "saved" in body["error"]["message"]
    assert Message.objects.get(client_message_id="f-1").status == "failed"  # the question only
    assert Conversation.objects.get(session_id=first["sessionId"]).failed_turns == 1
    llm.control("ok")  # the conversation is not blocked
    assert post_chat(client, message="Next", sessionId=first["sessionId"])[0] == 200


# --- answering (lease run out) -> answering / failed: a worker killed mid-turn -------


@pytest.fixture
def own_site(live_site, fake_llm_server):
    sites = []

    def start(**env):
        # Named, so that a test can kill this site's database connections and no one else's.
        sites.append(Site(site_env(fake_llm_server, PGAPPNAME="chatsite-under-test", **env)))
        return sites[-1]

    yield start
    for site in sites:
        site.stop()


# The lease in the test of a killed worker: longer than a request to a running worker takes on a
# loaded machine, so that the retry sent at once meets the dead worker's lease.
KILLED_WORKER_LEASE = 5


@pytest.mark.parametrize("first_message", [False, True], ids=["returning", "first-message"])
def test_a_worker_killed_mid_turn_frees_the_question_within_the_lease(own_site, llm, first_message):
    site = own_site(CHAT_TURN_LEASE_SECONDS=str(KILLED_WORKER_LEASE))
    api = SiteClient(site)
    # A second instance beside it, as behind a load balancer, for the retry sent at once: the
    # killed worker's replacement imports the site first, which on a loaded machine (a load of
    # 10 on two cores) takes longer than any lease worth testing.
    other = SiteClient(own_site(CHAT_TURN_LEASE_SECONDS=str(KILLED_WORKER_LEASE)))
    cmid = str(uuid.uuid4())  # as the page makes them: strong enough to find a first turn by
    body = {"message": "Are you there?", "clientMessageId": cmid}
    if not first_message:
        body["sessionId"] = api.send({"message": "Hi"})[1]["sessionId"]
    llm.control("ok", delay=60)

    with ThreadPoolExecutor(1) as pool:
        cut_off = pool.submit(api.send, body)
        wait_for(lambda: slot_of(cmid), timeout=30)
        [worker] = worker_pids(site)
        os.kill(worker, signal.SIGKILL)
        killed_at = timezone.now()
        try:
            cut_off_status = cut_off.result()[0]
        except (ConnectionError, http.client.HTTPException):
            cut_off_status = None
        assert cut_off_status != 200
    llm.control("ok")
    # The dead worker's lease, renewed for the last time before it died: no one renews it now.
    lease_until = slot_of(cmid).lease_until
    assert killed_at < lease_until <= killed_at + timedelta(seconds=KILLED_WORKER_LEASE)

    status, refused, headers = other.send(body)  # at once: still under the dead worker's lease
    assert timezone.now() < lease_until, "the machine is too slow for this lease"
    assert (status, refused["error"]["code"]) == (409, "turn_in_progress")
    assert int(headers["Retry-After"]) in {1, 2}
    conversation = Conversation.objects.get(messages__client_message_id=cmid, messages__role="user")
    assert refused["sessionId"] == str(conversation.session_id)  # even with no sessionId sent

    # Then retry on the killed worker's site, as the page does, until the lease has run out and
    # a retry is answered (by the worker gunicorn started in the killed one's place).
    retries = []

    def answered():
        sent_at = timezone.now()
        status, answer, headers = api.send(body)
        retries.append((sent_at, status))
        return answer if status == 200 else None

    answer = wait_for(answered, timeout=KILLED_WORKER_LEASE + 30, every=0.25)
    # Freed when the lease ran out, not later: every retry sent after it was answered (the
    # first one, as polling stops there); the ones before it were refused or answered.
    assert all(status == 200 for sent_at, status in retries if sent_at > lease_until), retries
    assert {status for _, status in retries} <= {200, 409}, retries
    assert answer["reply"] == "Echo: Are you there?"
    assert answer["sessionId"] == str(conversation.session_id)
    assert Conversation.objects.count() == 1  # not a second one for the first message's retry
    assert Message.objects.filter(client_message_id=cmid, role="user").count() == 1
    assert Message.objects.filter(client_message_id=cmid, role="assistant", status="complete").count() == 1


def abandoned_turn(session_id: str, client_message_id: str, seconds_ago: float = 30) -> Message:
    """The rows a worker killed mid-turn leaves behind: a question and its slot, the lease run out."""
    conversation = Conversation.objects.get(session_id=session_id)
    seq = conversation.messages.count()
    Message.objects.create(conversation=conversation, seq=seq, role="user", content="Lost?",
                           client_message_id=client_message_id)
    return Message.objects.create(
        conversation=conversation, seq=seq + 1, role="assistant", content="", status="answering",
        client_message_id=client_message_id, lease_owner=uuid.uuid4(),
        lease_until=timezone.now() - timedelta(seconds=seconds_ago),
    )


def test_a_new_question_after_an_abandoned_turn_marks_it_failed_and_goes_on(client):
    _, first = post_chat(client, message="Hi")
    abandoned_turn(first["sessionId"], "lost-1")

    status, body = post_chat(client, message="Hello?", sessionId=first["sessionId"], clientMessageId="new-1")

    assert status == 200 and body["sessionId"] == first["sessionId"]
    rows = list(Conversation.objects.get(session_id=first["sessionId"]).messages.values_list("seq", "content", "status"))
    assert rows[2:] == [(2, "Lost?", "failed"), (3, "Hello?", "complete"), (4, body["reply"], "complete")]
    # The lost question, no longer the newest, can only be sent again as a new one.
    status, body = post_chat(client, message="Lost?", sessionId=first["sessionId"], clientMessageId="lost-1")
    assert (status, body["error"]["code"]) == (409, "retry_superseded")


def test_a_live_lease_refuses_other_questions_with_a_short_retry_after(client):
    _, first = post_chat(client, message="Hi")
    abandoned_turn(first["sessionId"], "busy-1", seconds_ago=-4)  # a lease with 4 s to go

    response = client.post("/api/chat", data=json.dumps({"message": "Me too", "sessionId": first["sessionId"]}),
                           content_type="application/json")

    assert response.status_code == 409 and response.json()["error"]["code"] == "turn_in_progress"
    assert response["Retry-After"] == "2"  # the owner renews its lease: ask again soon, not in 4 s


# --- clientMessageIds older than the history window ------------------------------------


def test_an_old_answered_question_sent_again_gets_its_stored_reply(client, settings):
    settings.CHAT_HISTORY_MESSAGES = 4
    _, first = post_chat(client, message="Old question", clientMessageId="old-1")
    for n in range(4):
        post_chat(client, message=f"Later {n}", sessionId=first["sessionId"])
    count = Message.objects.count()

    status, body = post_chat(client, message="Old question", sessionId=first["sessionId"], clientMessageId="old-1")

    assert status == 200 and body["reply"] == first["reply"]
    assert Message.objects.count() == count


def test_an_old_unanswered_question_sent_again_is_superseded_without_retry_after(client, llm, settings):
    settings.CHAT_HISTORY_MESSAGES = 4
    _, first = post_chat(client, message="Hi")
    llm.control("status", status=500)
    post_chat(client, message="Old failed", sessionId=first["sessionId"], clientMessageId="old-2")
    llm.control("ok")
    for n in range(4):
        post_chat(client, message=f"Later {n}", sessionId=first["sessionId"])

    response = client.post("/api/chat", content_type="application/json", data=json.dumps(
        {"message": "Old failed", "sessionId": first["sessionId"], "clientMessageId": "old-2"}))

    assert response.status_code == 409 and response.json()["error"]["code"] == "retry_superseded"
    assert "Retry-After" not in response  # retrying it will never work: no client may loop on it


# --- the database failing mid-turn -------------------------------------------------------


def hold_row_lock(message: Message, seconds: float) -> threading.Thread:
    """Lock a message row from another connection for `seconds` (a long transaction elsewhere)."""
    def hold():
        with transaction.atomic():
            list(Message.objects.select_for_update().filter(pk=message.pk))
            time.sleep(seconds)
        connection.close()

    thread = threading.Thread(target=hold)
    thread.start()
    return thread


def test_a_reply_save_that_fails_is_retried_once_on_a_fresh_connection(own_site, llm):
    site = own_site(DATABASE_LOCK_TIMEOUT_MS="1000")
    api = SiteClient(site)
    _, first, _ = api.send({"message": "Hi"})
    llm.control("ok", delay=0.5)

    with ThreadPoolExecutor(1) as pool:
        turn = pool.submit(api.send, {"message": "Save me", "sessionId": first["sessionId"], "clientMessageId": "db-1"})
        slot = wait_for(lambda: slot_of("db-1"))
        # The save comes at ~0.5 s, times out at ~1.5 s; its retry gets the row at ~2 s.
        holder = hold_row_lock(slot, 2.0 - 0.1)
        status, body, _ = turn.result()
        holder.join()

    assert status == 200 and body["reply"] == "Echo: Save me"
    assert slot_of("db-1").status == "complete"
    assert "retrying once on a fresh connection" in site.log()


def test_a_database_that_stays_away_gives_503_and_the_conversation_is_free_soon_after(own_site, llm):
    site = own_site(DATABASE_LOCK_TIMEOUT_MS="500", CHAT_TURN_LEASE_SECONDS="2")
    api = SiteClient(site)
    _, first, _ = api.send({"message": "Hi"})
    llm.control("ok", delay=0.3)

    with ThreadPoolExecutor(1) as pool:
        turn = pool.submit(api.send, {"message": "Lost save", "sessionId": first["sessionId"], "clientMessageId": "db-2"})
        slot = wait_for(lambda: slot_of("db-2"))
        holder = hold_row_lock(slot, 2.0)
        status, body, headers = turn.result()
        holder.join()
        released_at = time.monotonic()

    assert (status, body["error"]["code"]) == (503, "database_unavailable")
    assert body["sessionId"] == first["sessionId"] and int(headers["Retry-After"]) >= 1

    def accepted():
        return api.send({"message": "Again", "sessionId": first["sessionId"]})[0] == 200

    wait_for(accepted, timeout=5, every=0.2)
    assert time.monotonic() - released_at < 2.5  # what is left of the lease, not 30 s
    assert "Traceback" not in site.log()


def test_a_table_lock_is_answered_503_at_once_and_healthz_still_answers(own_site, llm):
    site = own_site(DATABASE_LOCK_TIMEOUT_MS="300")
    api = SiteClient(site)
    _, first, _ = api.send({"message": "Hi"})
    locked = threading.Event()

    def lock_table():
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("LOCK TABLE conversations_message IN ACCESS EXCLUSIVE MODE")
            locked.set()
            time.sleep(3)
        connection.close()

    holder = threading.Thread(target=lock_table)
    holder.start()
    locked.wait(5)
    started = time.monotonic()
    status, body, headers = api.send({"message": "Blocked?", "sessionId": first["sessionId"]})
    elapsed = time.monotonic() - started
    health_status = api.health(timeout=5).status
    holder.join()

    assert (status, body["error"]["code"]) == (503, "database_unavailable") and headers["Retry-After"]
    assert elapsed < 2.5  # two lock timeouts, not the three seconds the lock is held
    assert health_status == 200
    assert api.send({"message": "Free again", "sessionId": first["sessionId"]})[0] == 200


def test_killing_database_connections_under_load_never_gives_a_500(own_site, llm):
    """What a failover or a database restart does, several times over, while customers chat."""
    site = own_site()
    api = SiteClient(site)
    sessions = [api.send({"message": f"start {n}"})[1]["sessionId"] for n in range(8)]
    llm.control("ok", delay=0.05)
    kills = 0

    def killer():
        nonlocal kills
        with connection.cursor() as cursor:
            for _ in range(6):
                time.sleep(0.4)
                cursor.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND application_name = 'chatsite-under-test'"
                )
                kills += cursor.fetchone()[0]
        connection.close()

    def chat(n):
        outcomes = []
        for turn in range(12):
            status, body, headers = api.send({"message": f"q {n}.{turn}", "sessionId": sessions[n],
                                                "clientMessageId": f"k-{n}-{turn}"})
            outcomes.append((status, body.get("error", {}).get("code"), headers.get("Retry-After")))
        return outcomes

    thread = threading.Thread(target=killer)
    thread.start()
    with ThreadPoolExecutor(8) as pool:
        outcomes = [o for result in pool.map(chat, range(8)) for o in result]
    thread.join()
    last_kill = time.monotonic()

    assert kills > 0
    for status, code, retry_after in outcomes:
        assert (status, code) in {(200, None), (503, "database_unavailable"), (409, "turn_in_progress")}, outcomes
        assert status == 200 or retry_after
    # Every conversation takes a new turn again within a second or two, and nothing is left half done.
    for session_id in sessions:
        wait_for(lambda sid=session_id: api.send({"message": "after", "sessionId": sid})[0] == 200, timeout=5)
    assert time.monotonic() - last_kill < 2 + 8 * 0.5
    assert not Message.objects.filter(status="answering").exists()
    for question in Message.objects.filter(role="user", status="complete").exclude(content="after"):
        assert Message.objects.filter(conversation=question.conversation, seq=question.seq + 1,
                                      status="complete").exists()


def test_a_first_message_sent_ten_times_at_once_starts_one_conversation(live_site, llm):
    """A double click on the very first message: no sessionId yet, one clientMessageId."""
    llm.control("ok", delay=0.5)
    body = {"message": "Hello, what is your return policy?", "clientMessageId": str(uuid.uuid4())}

    with ThreadPoolExecutor(10) as pool:
        results = list(pool.map(lambda _: SiteClient(live_site).send(body), range(10)))

    assert {status for status, _, _ in results} <= {200, 409}
    assert Conversation.objects.count() == 1
    session_id = str(Conversation.objects.get().session_id)
    assert all(answer["sessionId"] == session_id for _, answer, _ in results)  # every one learns the id
    assert llm.stats()["received"] == 1
    assert list(Message.objects.values_list("role", "status")) == [("user", "complete"), ("assistant", "complete")]
