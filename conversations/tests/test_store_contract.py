"""The rules of a turn and a handoff (turns.py, handoff.py, forget.py) against every turn store
backend (store/): `orm` everywhere, `postgres` where PostgreSQL is (it skips in the bare run,
and must run in CI's run with the services).

Each test runs its scenario on an event loop of its own with the backend's runtime, as a
served worker does, and the offline responder answering (no LLM), so that what is checked is
the store and the rules above it. The races are run for real: requests started together with
asyncio.gather on the PostgreSQL backend's pool, threads for the staff side."""

import asyncio
import uuid
from datetime import timedelta

import pytest
from django.conf import settings as django_settings
from django.db import connection, connections
from django.utils import timezone, translation

from conversations import forget, handoff, runtime, sessions, turns, updates
from conversations.errors import ApiError, DatabaseUnavailable, TurnInProgress
from conversations.models import Conversation, Handoff, Message, Session

from .helpers import need

pytestmark = pytest.mark.django_db(transaction=True)

ADDRESS = "203.0.113.7"


@pytest.fixture(params=["orm", "postgres"])
def backend(request, settings):
    settings.OPENAI_API_KEY = ""  # the offline responder: no LLM in these tests
    if request.param == "postgres":
        need(connection.vendor == "postgresql", "PostgreSQL (set DATABASE_URL)")
    return request.param


def run(backend: str, scenario):
    """Run `scenario(rt)` on a new event loop with the backend's runtime, opened and closed."""

    async def main():
        rt = await runtime.start() if backend == "postgres" else runtime.current()
        try:
            return await scenario(rt)
        finally:
            if backend == "postgres":
                await runtime.stop()

    return asyncio.run(main())


async def turn(text: str, session_id=None, client_message_id: str = "", ip: str = ADDRESS) -> turns.Turn:
    """A whole turn, as views.chat makes it: started, and answered unless it is for staff."""
    started = await turns.start(ip, session_id, text, client_message_id)
    if not started.for_staff:
        await turns.complete(started)
    return started


def in_thread(func, *args, **kwargs):
    """Synchronous database work from a scenario, as the admin or a test does it, its
    connection handed back to the pool afterwards."""

    def work():
        try:
            return func(*args, **kwargs)
        finally:
            connections.close_all()

    return asyncio.to_thread(work)


def expire_lease(slot: Message):
    return in_thread(lambda: Message.objects.filter(pk=slot.pk).update(
        lease_until=timezone.now() - timedelta(seconds=1)))


async def outcome(coroutine):
    try:
        return await coroutine
    except ApiError as error:
        return error


def test_a_turn_stores_its_question_and_reply_and_a_resend_gets_the_stored_reply(backend):
    async def scenario(rt):
        first = await turn("What is your return policy?", client_message_id="q-1")
        again = await turn("What is your return policy?", first.session_id, "q-1")
        return first, again

    first, again = run(backend, scenario)
    assert first.new_session and first.reply is not None and first.reply.status == Message.Status.COMPLETE
    assert again.reply.pk == first.reply.pk and not again.new_session
    stored = list(Message.objects.order_by("seq").values_list("role", "status", "client_message_id"))
    assert stored == [("user", "complete", "q-1"), ("assistant", "complete", "q-1")]


def test_the_conversation_records_the_language_the_customer_last_wrote_in_and_is_answered_in_it(backend, settings):
    settings.CHAT_KNOWLEDGE_FILE = django_settings.BASE_DIR / "knowledge" / "faq.md"
    language = lambda pk: in_thread(lambda: Conversation.objects.get(pk=pk).language)  # noqa: E731

    async def scenario(rt):
        with translation.override("de"):  # the page in German (the request's active language)
            first = await turn("Wie lange dauert die Lieferung?", client_message_id="q-1")
        started_in = await language(first.conversation_id)
        with translation.override("fr"):
            second = await turn("Et pour un retour ?", first.session_id, "q-2")
        return first, started_in, second, await language(first.conversation_id)

    first, started_in, second, now_in = run(backend, scenario)
    assert (started_in, now_in) == ("de", "fr")
    assert first.reply.content.startswith("Innerhalb Deutschlands dauert der Standardversand")
    assert second.reply.content.startswith("*Cette réponse vient de notre FAQ")
    assert "You can return any unused item" in second.reply.content


def test_the_same_question_sent_twice_at_once_is_answered_once(backend):
    async def scenario(rt):
        first = await turn("Hi")
        both = await asyncio.gather(
            outcome(turn("Do you ship to Austria?", first.session_id, "twice")),
            outcome(turn("Do you ship to Austria?", first.session_id, "twice")),
        )
        return first, both

    first, both = run(backend, scenario)
    replies = [result for result in both if isinstance(result, turns.Turn)]
    assert replies, both
    assert all(isinstance(r, turns.Turn) or r.code == "turn_in_progress" for r in both)
    assert Message.objects.filter(client_message_id="twice").count() == 2  # one question, one reply


def test_a_new_question_after_a_run_out_lease_marks_the_abandoned_question_failed(backend):
    async def scenario(rt):
        first = await turns.start(ADDRESS, None, "Hi", "abandoned")  # its worker "dies": never answered
        await expire_lease(first.answer)
        second = await turn("What about shipping?", first.session_id, "next")
        return first, second

    first, second = run(backend, scenario)
    assert Message.objects.get(pk=first.question.pk).status == Message.Status.FAILED
    assert not Message.objects.filter(pk=first.answer.pk).exists()
    assert second.reply is not None and second.question.seq == first.answer.seq  # the freed position


def test_a_retry_takes_over_a_run_out_lease_and_a_live_lease_is_refused(backend):
    async def scenario(rt):
        first = await turns.start(ADDRESS, None, "Hi", "lease")
        live = await outcome(turns.start(ADDRESS, first.session_id, "Hi", "lease"))
        await expire_lease(first.answer)
        retried = await turn("Hi", first.session_id, "lease")
        return live, retried

    live, retried = run(backend, scenario)
    assert isinstance(live, TurnInProgress)
    assert retried.reply is not None and Message.objects.filter(role="assistant").count() == 1


def test_a_turn_in_progress_is_found_whatever_was_appended_after_its_slot(backend):
    async def scenario(rt):
        first = await turn("Hi")
        answering = await turns.start(ADDRESS, first.session_id, "Tell me about returns", "slow")
        # A notice lands after the slot still being written (the page's "talk to a person").
        await in_thread(handoff.request_person, first.conversation_id)
        await handoff.return_to_assistant(first.conversation_id, None, "Mia")
        return await outcome(turns.start(ADDRESS, first.session_id, "And shipping?", "second")), answering

    second, answering = run(backend, scenario)
    assert isinstance(second, TurnInProgress)
    assert Message.objects.filter(status=Message.Status.ANSWERING).count() == 1


def test_a_first_question_sent_again_finds_its_conversation_only_from_the_same_address(backend):
    opening = str(uuid.uuid4())

    async def scenario(rt):
        first = await turn("Hi", client_message_id=opening)
        again = await turn("Hi", client_message_id=opening)  # its answer was lost: no sessionId
        other = await turn("Hi", client_message_id=opening, ip="198.51.100.9")
        guessable = await turn("Hi", client_message_id="m-1712345678-000001")
        guessed = await turn("Hi", client_message_id="m-1712345678-000001", ip="198.51.100.9")
        return first, again, other, guessable, guessed

    first, again, other, guessable, guessed = run(backend, scenario)
    assert again.session_id == first.session_id and again.reply.pk == first.reply.pk
    assert other.session_id != first.session_id
    assert guessed.session_id != guessable.session_id
    assert Conversation.objects.count() == 4


def test_a_first_question_sent_again_after_the_window_starts_a_new_conversation(backend):
    opening = str(uuid.uuid4())

    async def scenario(rt):
        first = await turn("Hi", client_message_id=opening)
        await in_thread(lambda: Conversation.objects.update(
            created_at=timezone.now() - timedelta(minutes=turns.OPENING_RECOVERY_MINUTES + 1)))
        return first, await turn("Hi", client_message_id=opening)

    first, late = run(backend, scenario)
    assert late.session_id != first.session_id and late.reply is not None
    assert Conversation.objects.get(session_id=late.session_id).opening_client_message_id is None


def test_a_message_for_staff_after_a_close_is_answered_by_the_assistant(backend):
    async def scenario(rt):
        first = await turn("Can I talk to a human please?")
        await handoff.reply_as_staff(first.conversation_id, None, "Mia", "Hello, Mia here.", "token-1")
        # The customer's page still shows "with a person" when staff close.
        await handoff.return_to_assistant(first.conversation_id, None, "Mia", close=True)
        return first, await turn("ok thanks, bye", first.session_id, "bye")

    first, bye = run(backend, scenario)
    conversation = Conversation.objects.get()
    assert conversation.handoff == Handoff.ASSISTANT and conversation.waiting_since is None
    assert not bye.for_staff and bye.reply is not None
    assert Message.objects.filter(role=Message.Role.EVENT, content__startswith="You asked").count() == 1


def test_close_racing_a_customer_message_never_reopens_the_conversation(backend):
    rounds = 10

    async def scenario(rt):
        first = await turn("Can I talk to a human please?")
        results = []
        for n in range(rounds):
            await handoff.reply_as_staff(first.conversation_id, None, "Mia", f"Reply {n}", f"token-{n}")
            _, said = await asyncio.gather(
                handoff.return_to_assistant(first.conversation_id, None, "Mia", close=True),
                outcome(turn(f"ok thanks {n}", first.session_id, f"bye-{n}")),
            )
            results.append(said)
        return results

    results = run(backend, scenario)
    assert not [r for r in results if isinstance(r, ApiError) and r.status >= 500]
    assert Conversation.objects.get().handoff == Handoff.ASSISTANT
    assert Message.objects.filter(role=Message.Role.EVENT, content__startswith="You asked").count() == 1


def test_a_client_message_id_equal_to_a_staff_token_is_an_ordinary_question(backend):
    async def scenario(rt):
        first = await turn("Can I talk to a human please?")
        await handoff.reply_as_staff(first.conversation_id, None, "Mia", "Hello", "shared-token")
        await handoff.return_to_assistant(first.conversation_id, None, "Mia")
        return await turn("Thanks", first.session_id, "shared-token")

    thanks = run(backend, scenario)
    assert thanks.reply is not None and thanks.question.role == Message.Role.USER


def test_forget_while_messages_arrive_deletes_everything_and_answers_no_500(backend):
    async def scenario(rt):
        first = await turn("Hi")
        arriving = [outcome(turn(f"Message {n}", first.session_id, f"m-{n}")) for n in range(6)]
        forgetting = forget.forget(session_ids=[first.session_id])
        return await asyncio.gather(*arriving, forgetting, return_exceptions=True)

    *arrived, forgotten = run(backend, scenario)
    assert not [r for r in arrived if isinstance(r, BaseException) and not isinstance(r, ApiError)], arrived
    assert not [r for r in arrived if isinstance(r, ApiError) and r.status >= 500]
    assert forgotten[0] == 1
    # A message arriving after the delete starts a conversation of its own, under a new id, or none.
    assert not Conversation.objects.filter(messages__content="Hi").exists()
    assert Message.objects.filter(conversation__isnull=True).count() == 0


def test_staff_reply_sent_twice_is_stored_once_and_moves_the_state(backend):
    async def scenario(rt):
        first = await turn("Can I talk to a human please?")
        stored = [(await handoff.reply_as_staff(first.conversation_id, None, "Mia", "Hello", "token"))[1]
                  for _ in range(2)]
        return first, stored

    first, stored = run(backend, scenario)
    assert stored == [True, False]
    assert Conversation.objects.get().handoff == Handoff.STAFF
    assert Message.objects.filter(role=Message.Role.STAFF).count() == 1


def test_a_full_conversation_gives_way_to_a_new_one_and_keeps_its_stored_replies(backend, settings):
    settings.CHAT_CONVERSATION_MAX_MESSAGES = 6  # three questions and their replies

    async def scenario(rt):
        first = await turn("Where is my order?", client_message_id="q1")
        await turn("And the invoice?", first.session_id, "q2")
        last = await turn("Thanks", first.session_id, "q3")  # positions 4 and 5: the last that fit
        again = await turn("Thanks", first.session_id, "q3")  # sent again: its stored reply
        moved = await turn("One more thing", first.session_id, "q4")
        person = await turns.request_person(ADDRESS, first.session_id)
        return first, last, again, moved, person

    first, last, again, moved, person = run(backend, scenario)

    assert (last.session_id, last.follows_full) == (first.session_id, False)
    assert (again.session_id, again.reply.content) == (first.session_id, last.reply.content)
    assert moved.new_session and moved.follows_full and moved.session_id != first.session_id
    assert person.new_session and person.follows_full and person.handoff == Handoff.WAITING
    old = Conversation.objects.get(session_id=first.session_id)
    assert list(old.messages.values_list("seq", flat=True)) == [0, 1, 2, 3, 4, 5]
    assert [m.content for m in Conversation.objects.get(session_id=moved.session_id).messages.all()] == [
        "One more thing", moved.reply.content]


def test_what_started_a_new_conversation_after_a_full_one_sent_again_finds_it(backend, settings):
    """Its answer (and the new session's id in it) lost, the same question or button comes again
    under the full conversation's session, at once or later: the conversation it started, never a
    second one. Found by that session only (turns.opening_key), whatever the clientMessageId."""
    settings.CHAT_CONVERSATION_MAX_MESSAGES = 2

    async def scenario(rt):
        first = await turn("Hi", client_message_id="q1")
        at_once = await asyncio.gather(*(outcome(turn("Lost?", first.session_id, "q2")) for _ in range(3)))
        later = await turn("Lost?", first.session_id, "q2")
        other = await in_thread(join, first.conversation_id)  # another browser of the full conversation: its own
        elsewhere = await turn("Lost?", other, "q2")
        buttons = [await turns.request_person(ADDRESS, first.session_id) for _ in range(2)]
        return first, at_once, later, elsewhere, buttons

    first, at_once, later, elsewhere, buttons = run(backend, scenario)

    moved = [t for t in at_once if isinstance(t, turns.Turn)]
    assert moved and all(isinstance(t, turns.Turn) or t.code == "turn_in_progress" for t in at_once)
    assert {t.session_id for t in [*moved, later]} == {later.session_id} != {first.session_id}
    assert later.new_session and later.follows_full and later.reply.content == moved[0].reply.content
    assert elsewhere.session_id not in (first.session_id, later.session_id)
    assert Message.objects.filter(content="Lost?").count() == 2  # the first session's and the other's
    assert buttons[0].session_id == buttons[1].session_id != later.session_id
    assert buttons[1].notice is None  # asked already
    assert Conversation.objects.count() == 4


# --- Several sessions of one conversation (one per browser: models.Session, devices.py) ---


def join(conversation_id: int) -> uuid.UUID:
    """A second browser's session in the conversation, as devices.join makes it."""
    session = Session.objects.create(session_id=uuid.uuid4(), conversation_id=conversation_id)
    return session.session_id


def test_a_second_session_continues_the_same_conversation_under_its_own_id(backend):
    async def scenario(rt):
        first = await turn("Hi", client_message_id="q-1")
        second = await in_thread(join, first.conversation_id)
        theirs = await turn("Where is my order?", second, "q-2")
        mine = await turn("And returns?", first.session_id, "q-3")
        # A turn another answers meanwhile: the error names the asking session, never the other's.
        started = await turns.start(ADDRESS, second, "Still there?", "q-4")
        refused = await outcome(turns.start(ADDRESS, first.session_id, "Hello?", "q-5"))
        await turns.complete(started)
        return first, second, theirs, mine, refused

    first, second, theirs, mine, refused = run(backend, scenario)
    assert theirs.conversation_id == mine.conversation_id == first.conversation_id
    assert theirs.session_id == second and not theirs.new_session
    assert mine.session_id == first.session_id
    assert isinstance(refused, TurnInProgress) and refused.session_id == first.session_id
    assert [m.content for m in Message.objects.filter(role="user").order_by("seq")] == [
        "Hi", "Where is my order?", "And returns?", "Still there?"]


def test_an_ended_session_is_unknown_and_its_next_message_starts_a_new_conversation(backend):
    async def scenario(rt):
        first = await turn("Hi")
        second = await in_thread(join, first.conversation_id)
        await in_thread(lambda: Session.objects.filter(session_id=second).delete())
        after = await turn("Hello again", second)
        kept = await turn("Still mine", first.session_id)
        return first, second, after, kept

    first, second, after, kept = run(backend, scenario)
    assert after.new_session and after.session_id != second and after.conversation_id != first.conversation_id
    assert kept.conversation_id == first.conversation_id and not kept.new_session


def test_forget_by_one_session_deletes_the_conversation_for_every_session_and_their_cache(backend):
    async def scenario(rt):
        first = await turn("Hi")
        second = await in_thread(join, first.conversation_id)
        await turn("From the laptop", second)  # caches the second session's mapping
        cached = [await in_thread(sessions.cached_conversation_id, s) for s in (first.session_id, second)]
        forgotten = await forget.forget(session_ids=[second])
        left = [await in_thread(sessions.cached_conversation_id, s) for s in (first.session_id, second)]
        again = await turn("Anyone?", first.session_id)
        return first, cached, forgotten, left, again

    first, cached, forgotten, left, again = run(backend, scenario)
    assert cached == [first.conversation_id, first.conversation_id]
    assert forgotten == (1, 4) and left == [None, None]
    assert not Session.objects.exclude(conversation_id=again.conversation_id).exists()
    assert again.new_session and again.conversation_id != first.conversation_id


def test_a_waiting_page_reads_its_conversation_as_it_changes(backend):
    """What the page's long poll reads each time it asks (updates.wait, through TurnStore.state),
    answered at once (a wait of 0): the same from both backends."""
    async def scenario(rt):
        seen = []

        async def look(session_id, after, state="assistant"):
            found = await updates.wait(rt, session_id, after, state, 0)
            seen.append(None if found is None else (
                found.handoff, found.turn_in_progress, [(m["seq"], m["role"]) for m in found.messages],
                found.has_more, found.seen_at is not None))
            return found

        await look(uuid.uuid4(), -1)  # unknown
        first = await turn("Hi")
        await look(first.session_id, -1)  # everything
        await look(first.session_id, 1)  # nothing new
        answered = await turns.start(ADDRESS, first.session_id, "Tell me about returns", "slow")
        await look(first.session_id, 1)  # the question, not the slot being written
        await turns.complete(answered)
        second = await in_thread(join, first.conversation_id)
        await look(second, 2)  # the reply, to the other browser
        await in_thread(handoff.request_person, first.conversation_id)
        found = await look(first.session_id, 3, "assistant")  # the notice, and the state moved
        await look(first.session_id, found.messages[-1]["seq"], "waiting")  # nothing new
        await in_thread(lambda: Conversation.objects.filter(pk=first.conversation_id).update(
            last_activity_at=timezone.now() - timedelta(days=django_settings.CHAT_SESSION_IDLE_DAYS + 1)))
        await look(first.session_id, -1)  # idle past the timeout: as unknown
        return seen

    seen = run(backend, scenario)
    assert seen == [
        None,
        ("assistant", False, [(0, "user"), (1, "assistant")], False, True),
        ("assistant", False, [], False, True),
        ("assistant", True, [(2, "user")], False, True),
        ("assistant", False, [(3, "assistant")], False, True),
        ("waiting", False, [(4, "event")], False, True),
        ("waiting", False, [], False, True),
        None,
    ]


def test_a_session_is_marked_seen_only_when_it_is_due(backend):
    """What an open page's poll writes (TurnStore.seen): at most once every Session.SEEN_RESOLUTION."""
    long_ago = timezone.now() - timedelta(days=2)

    async def scenario(rt):
        first = await turn("Hi")
        await in_thread(lambda: Session.objects.filter(session_id=first.session_id).update(last_seen_at=long_ago))
        await rt.store.seen([first.session_id])
        marked = await in_thread(lambda: Session.objects.get(session_id=first.session_id).last_seen_at)
        await rt.store.seen([first.session_id])  # again at once: not due
        again = await in_thread(lambda: Session.objects.get(session_id=first.session_id).last_seen_at)
        return marked, again

    marked, again = run(backend, scenario)
    assert timezone.now() - marked < timedelta(minutes=1)
    assert again == marked


def test_pages_seen_together_are_marked_in_one_statement_and_a_failed_one_does_not_stop_the_next(
        backend, monkeypatch):
    """runtime.Sightings: the sessions of a worker's pages that asked while their "seen" was due, one
    UPDATE for all of them a second (at 10,000 pages, a third of their polls each made one)."""
    monkeypatch.setattr(runtime, "SIGHTINGS_EVERY", 0.05)
    long_ago = timezone.now() - timedelta(days=2)

    async def scenario(rt):
        sessions = [(await turn(f"Hi {n}")).session_id for n in range(3)]
        await in_thread(lambda: Session.objects.update(last_seen_at=long_ago))
        writes, written = [], asyncio.Event()

        class Store:  # the backend's store, its statements counted, the first one failing
            async def seen(self, session_ids):
                writes.append(set(session_ids))
                if len(writes) == 1:
                    raise DatabaseUnavailable
                await rt.store.seen(session_ids)
                written.set()

        sightings = runtime.Sightings(Store())
        sightings.add(sessions[0])
        sightings.add(sessions[1])
        while not writes:
            await asyncio.sleep(0.01)
        for session_id in [*sessions, sessions[2]]:  # one twice: once in the statement
            sightings.add(session_id)
        await asyncio.wait_for(written.wait(), 5)
        await sightings.close()
        return sessions, writes, await in_thread(lambda: list(Session.objects.values_list("last_seen_at", flat=True)))

    sessions, writes, seen = run(backend, scenario)
    assert writes == [set(sessions[:2]), set(sessions)]
    assert len(seen) == 3 and all(timezone.now() - moment < timedelta(minutes=1) for moment in seen)
