"""A chat turn: store the question, have it answered exactly once, store the reply.

A question is a user Message at position `seq`; its reply lives in the
assistant Message at `seq + 1`, the question's *answer slot*. Positions are
unique per conversation, so of all the requests that try to create a slot (a
double click, two tabs, a retry loop, a new question racing a retry) exactly
one succeeds: the database decides, and no lock is held across the LLM call.

The states of a question, as the rows show them:

    answering  its slot is ANSWERING, with `lease_owner` (a token of the one
               request answering it) and `lease_until`. The owner renews the
               lease every 0.6 x CHAT_TURN_LEASE_SECONDS while it works, so the
               lease of a killed worker runs out within CHAT_TURN_LEASE_SECONDS.
    complete   its slot is COMPLETE: the reply.
    stopped    its slot is STOPPED: the customer pressed Stop or left, and what
               had been written is kept.
    failed     the question is FAILED and has no slot: the LLM failed, or the
               customer left before the first word. A retry may complete it.

The transitions, and who may make each:

    (none) -> answering    a new question, when the newest message is not a slot
                           under a live lease: ONE INSERT of the question and its
                           slot. A conflict on `seq` means another request was
                           first: 409 turn_in_progress.
    failed -> answering    a retry (same clientMessageId) while the question is
                           still the newest: INSERT of its slot. A conflict means a
                           new question or another retry was first.
    answering -> answering a retry when the lease has run out (its worker died):
                           a compare-and-set UPDATE ... WHERE lease_until < now.
                           One request wins; the rest get 409.
    answering -> failed    a new question finding its predecessor's lease run out
                           (the same compare-and-set, as a DELETE of the slot).
    answering -> complete, stopped or failed
                           the lease owner only (every write is conditional on
                           lease_owner), when the LLM answers, the client goes
                           away, or the LLM fails.

Every write is safe to run twice, so each is retried once on a fresh
connection when the database fails (db.py): a retried INSERT finds its own
slot by the owner token, a retried UPDATE is conditional on it.

What a client sees: the reply; or 409 turn_in_progress with Retry-After (2 s,
or what the current owner's lease has left if less) while another request answers;
the stored reply, without an LLM call, for a question sent again once
answered, however old; 409 retry_superseded, without Retry-After, for a retry
of a question that newer messages followed.
"""

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import cast

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from . import db, handoff, knowledge, limits, llm, loop_io, sessions, updates
from .errors import ApiError, ConversationDeleted, DatabaseUnavailable, RetrySuperseded, TurnInProgress
from .models import Conversation, Handoff, Message, idle_cutoff

logger = logging.getLogger(__name__)

# A conversation's last_activity_at is moved forward only when it is older than
# this: precise enough for a 30-day idle timeout and for staff, and it spares
# the conversation's row a write on most turns of a lively chat.
ACTIVITY_RESOLUTION = timedelta(minutes=1)

# A first question's clientMessageId at least this long (a UUID is 36) is taken
# as random enough to find its conversation again by (see _start_conversation).
STRONG_CLIENT_MESSAGE_ID = 22

# The longest Retry-After of a 409 turn_in_progress, in seconds.
RETRY_AFTER_IN_PROGRESS = 2


@dataclass
class Turn:
    session_id: uuid.UUID
    conversation_id: int
    question: Message
    # The token of this request: it owns `answer` while the lease holds.
    owner: uuid.UUID
    # The answer slot this request owns; None when the reply was stored before.
    answer: Message | None = None
    # What the assistant is shown: the latest messages, oldest first.
    history: list[dict[str, str]] = field(default_factory=list)
    new_session: bool = False
    # Set once the reply is stored (or found, for a question answered before).
    reply: Message | None = None
    # Budgets and LLM health (limits.check_budget): who spends, and whether to answer offline.
    address: str = ""
    offline: bool = False
    # A person is on the conversation, or this question asked for one: stored for
    # staff, not answered by the assistant (handoff.py). `notice`: what the customer
    # is told when this question asked for a person.
    for_staff: bool = False
    handoff: str = Handoff.ASSISTANT
    notice: str | None = None
    # Taken on the quick path (below): its reply is stored on the event loop too.
    quick: bool = False


async def start(ip: str, session_id: uuid.UUID | None, text: str, client_message_id: str) -> Turn:
    """Count the turn against the limits, store the question and take its answer slot.

    Returns the turn to answer, or one whose `reply` is already stored (a question
    sent again). An unknown or expired `session_id` starts a new conversation under
    a new id: an id chosen by a client is never adopted. Raises an ApiError
    (Limited, TurnInProgress, RetrySuperseded, DatabaseUnavailable) that names the
    session. If the client goes away while the question is stored, the question is
    kept, marked failed, and its slot freed at once.
    """
    owner = uuid.uuid4()
    storing = asyncio.ensure_future(_store(ip, session_id, text, client_message_id, owner))
    try:
        return await asyncio.shield(storing)
    except asyncio.CancelledError:
        storing.add_done_callback(_abandon)
        raise
    except ApiError as error:
        error.session_id = error.session_id or session_id
        raise


async def complete(turn: Turn) -> Message:
    """Have the turn answered in one piece (for clients that do not stream); the stored reply."""
    if turn.reply is None:
        async for _ in answer(turn, streamed=False):
            pass
    assert turn.reply is not None
    return turn.reply


async def answer(turn: Turn, streamed: bool = True) -> AsyncIterator[str]:
    """Yield the assistant's reply to `turn` as it is written, and store the outcome.

    On success the reply is stored and set on `turn.reply`. If the assistant
    fails, the question is marked failed and AssistantUnavailable propagates. If
    the caller goes away (Stop, a closed tab), the upstream call is closed and
    what was written so far is kept as a stopped reply.
    """
    stream = llm.ReplyStream(turn.history, streamed=streamed, offline=turn.offline)
    pieces = cast(AsyncGenerator[str, None], aiter(stream))
    lease = asyncio.ensure_future(_hold_lease(turn))
    try:
        try:
            async for piece in pieces:
                yield piece
        except llm.AssistantUnavailable as error:
            await _release_quietly(turn, count=True)
            error.message += " Your message is saved; try again in a moment."
            raise
        except (asyncio.CancelledError, GeneratorExit):
            await pieces.aclose()  # closes the upstream call now, not when garbage collected
            await _keep_stopped(turn, stream)
            raise
        if turn.quick:
            # Finished even if the client leaves meanwhile, as the ORM path's thread would.
            turn.reply = await asyncio.shield(_in_background(_store_reply_quickly(turn, stream)))
        else:
            turn.reply = await db.in_db_thread(_store_reply, turn, stream, Message.Status.COMPLETE, retry=True)
    except ApiError as error:
        error.session_id = error.session_id or turn.session_id
        raise
    finally:
        lease.cancel()


# --- Storing the question ---------------------------------------------------------


async def _store(ip: str, session_id: uuid.UUID | None, text: str, client_message_id: str,
                 owner: uuid.UUID) -> Turn:
    counted = False
    if session_id is not None and loop_io.ready():
        turn, counted = await _quick_start(ip, session_id, text, client_message_id, owner)
        if turn is not None:
            return turn
    return await db.in_db_thread(_start, ip, session_id, text, client_message_id, owner, counted)


def _start(ip: str, session_id: uuid.UUID | None, text: str, client_message_id: str, owner: uuid.UUID,
           counted: bool = False) -> Turn:
    if not counted:  # else counted by _quick_start already
        limits.check_turn(ip, session_id)
    use_llm = limits.check_budget(ip, session_id)
    turn = db.retry_once(_store_question, ip, session_id, text, client_message_id, owner)
    # A spent budget or an LLM that is down: the offline responder answers, marked as such.
    turn.address, turn.offline = ip, not use_llm
    # No version bump for waiting pages here: a question for staff was announced when
    # it was stored (handoff._append), and an assistant's turn is announced with its
    # outcome (_store_reply, _release), one Redis write a turn instead of two.
    return turn


def _store_question(
    ip: str, session_id: uuid.UUID | None, text: str, client_message_id: str, owner: uuid.UUID
) -> Turn:
    if session_id is not None:
        recent = sessions.recent_messages(session_id, settings.CHAT_HISTORY_MESSAGES)
        if recent:
            return _continue(recent, text, client_message_id, owner)
    limits.check_new_session(ip)
    if knowledge.wants_person(text):
        return _for_staff(None, [], text, client_message_id, owner)
    return _start_conversation(text, client_message_id, owner)


def _start_conversation(text: str, client_message_id: str, owner: uuid.UUID, recover: bool = True) -> Turn:
    """A new conversation with its first question, or, for a first question sent again
    (the same strong clientMessageId and no sessionId: the client never received the
    id), the conversation that the first attempt started."""
    opening = client_message_id if recover and len(client_message_id) >= STRONG_CLIENT_MESSAGE_ID else None
    try:
        with transaction.atomic():
            conversation = Conversation.objects.create(
                session_id=sessions.new_session_id(), opening_client_message_id=opening
            )
            question, slot = Message.objects.bulk_create(
                _question_and_slot(conversation, 0, text, client_message_id, owner)
            )
    except IntegrityError:
        if opening is None:
            raise
        recent = list(
            Message.objects.select_related("conversation")
            .filter(conversation__opening_client_message_id=opening,
                    conversation__last_activity_at__gte=idle_cutoff())
            .order_by("-seq")[: settings.CHAT_HISTORY_MESSAGES]
        )
        if not recent:  # that conversation has expired: start afresh
            return _start_conversation(text, client_message_id, owner, recover=False)
        turn = _continue(recent, text, client_message_id, owner)
        turn.new_session = True
        return turn
    sessions.remember(conversation.session_id, conversation.pk, conversation.last_activity_at)
    turn = _turn([question], owner, slot=slot)
    turn.new_session = True
    return turn


def _continue(recent: list[Message], text: str, client_message_id: str, owner: uuid.UUID) -> Turn:
    """The next question of a conversation, given its latest messages (newest first)."""
    conversation = recent[0].conversation
    if conversation.handoff != Handoff.ASSISTANT or knowledge.wants_person(text):
        return _for_staff(conversation, recent, text, client_message_id, owner)
    if client_message_id:
        sent_before = {m.role: m for m in recent if m.client_message_id == client_message_id}
        if sent_before:
            return _retry(recent, sent_before, owner)

    newest = recent[0]
    next_seq = newest.seq + 1
    if newest.status == Message.Status.ANSWERING:
        if newest.lease_owner == owner:  # stored by our own attempt, whose acknowledgement was lost
            return _turn(recent[1:], owner, slot=newest)
        if newest.being_answered():
            raise TurnInProgress(session_id=conversation.session_id, retry_after=_retry_after(newest))
        if not _take_abandoned_slot(newest, owner, delete=True):
            raise TurnInProgress(session_id=conversation.session_id, retry_after=1)
        recent = recent[1:]
        next_seq = newest.seq  # the freed slot's position

    question, slot = _question_and_slot(conversation, next_seq, text, client_message_id, owner)
    move_activity = conversation.last_activity_at < question.created_at - ACTIVITY_RESOLUTION
    try:
        # A lone INSERT is atomic by itself: a transaction only when the UPDATE comes along.
        with transaction.atomic() if move_activity else contextlib.nullcontext():
            Message.objects.bulk_create([question, slot])
            if move_activity:
                Conversation.objects.filter(pk=conversation.pk).update(last_activity_at=question.created_at)
    except IntegrityError:
        return _after_conflict(conversation, client_message_id, owner)
    return _turn([question, *recent], owner, slot=slot)


def _retry(recent: list[Message], sent_before: dict[str, Message], owner: uuid.UUID) -> Turn:
    """A question sent again with its clientMessageId: its stored reply, or its answer slot."""
    conversation = recent[0].conversation
    question = sent_before.get(Message.Role.USER)
    slot = sent_before.get(Message.Role.ASSISTANT)
    if question is None:  # its question lies beyond the history window
        assert slot is not None
        return _after_conflict(conversation, slot.client_message_id, owner)
    from_question = recent[recent.index(question):]
    if slot is not None and slot.status != Message.Status.ANSWERING:
        return _turn(from_question, owner, reply=slot)
    if slot is not None:
        if slot.lease_owner == owner:
            return _turn(from_question, owner, slot=slot)
        if slot.being_answered():
            raise TurnInProgress(session_id=conversation.session_id, retry_after=_retry_after(slot))
        if not _take_abandoned_slot(slot, owner):
            return _after_conflict(conversation, slot.client_message_id, owner)
        return _turn(from_question, owner, slot=slot)
    if question is not recent[0]:
        raise RetrySuperseded(session_id=conversation.session_id)
    _, slot = _question_and_slot(conversation, question.seq, question.content, question.client_message_id, owner)
    try:
        slot.save(force_insert=True)
    except IntegrityError:
        return _after_conflict(conversation, question.client_message_id, owner)
    return _turn(from_question, owner, slot=slot)


def _after_conflict(conversation: Conversation, client_message_id: str, owner: uuid.UUID) -> Turn:
    """Another request took the position this one wanted: decide from what is stored now."""
    if client_message_id:
        sent_before = {
            m.role: m for m in Message.objects.filter(conversation=conversation, client_message_id=client_message_id)
        }
        slot = sent_before.get(Message.Role.ASSISTANT)
        question = sent_before.get(Message.Role.USER)
        if slot is not None and question is not None and slot.status != Message.Status.ANSWERING:
            question.conversation = conversation
            return _turn([question], owner, reply=slot)
        if slot is not None:
            raise TurnInProgress(session_id=conversation.session_id, retry_after=_retry_after(slot))
        newest = Message.objects.filter(conversation=conversation).order_by("-seq").first()
        if question is not None and newest is not None and newest.seq > question.seq:
            raise RetrySuperseded(session_id=conversation.session_id)
    raise TurnInProgress(session_id=conversation.session_id, retry_after=1)


# --- The quick path ---------------------------------------------------------------
#
# Most turns are the common case: a returning customer's next question, the
# conversation the assistant's, its newest message settled. _quick_start takes
# that case on the event loop (loop_io: one Redis round trip, one SELECT, one
# INSERT; the reply is one UPDATE and one Redis round trip), without the thread
# hand-offs, the ORM or django-redis that the path above pays for (they were most
# of a turn's CPU above its own I/O: docs/benchmarks.md). It decides nothing the
# path above does not: anything but the common case (no cached conversation, a
# clientMessageId seen before, a slot being answered, a person on the
# conversation or asked for, a conflict on the INSERT, the LLM flagged down)
# goes to the path above, which reads again and decides from what is stored.


async def _quick_start(ip: str, session_id: uuid.UUID, text: str, client_message_id: str,
                       owner: uuid.UUID) -> tuple[Turn | None, bool]:
    """The turn, or None for anything but the common case; and whether the turn's rates were counted."""
    windows = limits.turn_windows(ip, session_id)
    found = await loop_io.redis_round_trip(
        [(window.key, 1, window.rate.seconds) for window in windows], [],
        [sessions.cache_key(session_id), *limits.budget_keys(session_id, ip), "llm:down"],
    )
    if found is None:  # Redis failed: the path above counts, locally while Redis is skipped
        return None, False
    for window, count in zip(windows, found, strict=False):
        window.check(count)
    cached, *spent, down = found[len(windows):]
    conversation_id = sessions.conversation_id_from(cached)
    if conversation_id is None or (settings.OPENAI_API_KEY and limits.llm_down(limits.counter(down))):
        return None, True  # who probes a down LLM is decided by check_budget, above
    use_llm = not settings.OPENAI_API_KEY or limits.budgets_left(session_id, [limits.counter(v) for v in spent])

    async def take(conn) -> Turn | None:  # on one connection: it is held for two statements, not two waits
        recent = await loop_io.recent_messages(conn, session_id, conversation_id, idle_cutoff(),
                                               settings.CHAT_HISTORY_MESSAGES)
        if not recent:
            return None
        conversation, newest = recent[0].conversation, recent[0]
        if (conversation.handoff != Handoff.ASSISTANT or newest.status == Message.Status.ANSWERING
                or (client_message_id and any(m.client_message_id == client_message_id for m in recent))
                or knowledge.wants_person(text)):
            return None
        question, slot = _question_and_slot(conversation, newest.seq + 1, text, client_message_id, owner)
        due = conversation.last_activity_at < question.created_at - ACTIVITY_RESOLUTION
        if not await loop_io.insert_question(conn, question, slot, question.created_at if due else None):
            return None
        return _turn([question, *recent], owner, slot=slot)

    # Run twice after a failure: a question the first run stored is found as our own slot
    # (ANSWERING), which the path above recognises by its owner.
    turn = await loop_io.run(take)
    if turn is not None:
        turn.address, turn.offline, turn.quick = ip, not use_llm, True
    return turn, True


async def _store_reply_quickly(turn: Turn, stream: llm.ReplyStream) -> Message:
    """_store_reply on the event loop; when this request no longer owns the slot, _store_reply decides why."""
    assert turn.answer is not None
    slot = _filled(turn.answer, stream, Message.Status.COMPLETE)
    if not await loop_io.store_reply(slot, turn.owner):
        return await db.in_db_thread(_store_reply, turn, stream, Message.Status.COMPLETE, retry=True)
    spend = stream.responder != "offline" and stream.tokens_used > 0
    stored = await loop_io.redis_round_trip(
        [(key, stream.tokens_used, limits.BUDGET_SECONDS) for key in limits.budget_keys(turn.session_id, turn.address)]
        if spend else [],
        [(updates.version_key(turn.conversation_id), updates.new_version(), updates.VERSION_SECONDS)], [],
    )
    if stored is None and spend:  # Redis failed and is skipped now: counted in this process
        limits.spend(turn.session_id, stream.tokens_used, turn.address)
    _log_stored(turn, stream, slot.status)
    return slot


def _for_staff(conversation: Conversation | None, recent: list[Message], text: str, client_message_id: str,
               owner: uuid.UUID) -> Turn:
    opening = client_message_id if len(client_message_id) >= STRONG_CLIENT_MESSAGE_ID else None
    stored_in, question, state, notice = handoff.store_for_staff(conversation, recent, text, client_message_id,
                                                                 opening)
    return Turn(session_id=stored_in.session_id, conversation_id=stored_in.pk, question=question, owner=owner,
                new_session=conversation is None, for_staff=True, handoff=state, notice=notice)


def _question_and_slot(
    conversation: Conversation, seq: int, text: str, client_message_id: str, owner: uuid.UUID
) -> tuple[Message, Message]:
    now = timezone.now()
    question = Message(conversation=conversation, seq=seq, role=Message.Role.USER, content=text,
                       client_message_id=client_message_id, created_at=now)
    slot = Message(conversation=conversation, seq=seq + 1, role=Message.Role.ASSISTANT, content="",
                   status=Message.Status.ANSWERING, client_message_id=client_message_id, created_at=now,
                   lease_owner=owner, lease_until=_lease_end())
    return question, slot


def _take_abandoned_slot(slot: Message, owner: uuid.UUID, delete: bool = False) -> bool:
    """Compare-and-set on a slot whose lease ran out: take it over (or, with `delete`,
    free it and mark its question failed). False if another request was first."""
    abandoned = Message.objects.filter(pk=slot.pk, status=Message.Status.ANSWERING, lease_until__lt=timezone.now())
    if not delete:
        return abandoned.update(lease_owner=owner, lease_until=_lease_end()) == 1
    with transaction.atomic():
        if abandoned.delete()[0] != 1:
            return False
        Message.objects.filter(conversation_id=slot.conversation_id, seq=slot.seq - 1).update(
            status=Message.Status.FAILED
        )
    logger.warning("turn abandoned by its worker", extra={"conversation": slot.conversation_id})
    return True


def _turn(newest_first: list[Message], owner: uuid.UUID, *, slot: Message | None = None,
          reply: Message | None = None) -> Turn:
    question = newest_first[0]
    conversation = question.conversation
    return Turn(
        session_id=conversation.session_id,
        conversation_id=conversation.pk,
        question=question,
        owner=owner,
        answer=slot,
        reply=reply,
        history=_history(newest_first) if reply is None else [],
    )


def _history(newest_first: list[Message]) -> list[dict[str, str]]:
    """The messages the assistant sees, oldest first, within the character budget.

    The newest message (the question) is always kept, cut to the budget if it alone
    exceeds it. Slots still being answered are not shown.
    """
    budget = settings.CHAT_HISTORY_CHARS
    newest, *older = newest_first[: settings.CHAT_HISTORY_MESSAGES]
    kept = [{"role": newest.role, "content": newest.content[:budget]}]
    budget -= len(kept[0]["content"])
    for message in older:
        if message.status == Message.Status.ANSWERING or message.role == Message.Role.EVENT:
            continue  # notices are for the customer; a staff member's words count as ours
        if len(message.content) > budget:
            break
        kept.append({"role": "assistant" if message.role == Message.Role.STAFF else message.role,
                     "content": message.content})
        budget -= len(message.content)
    kept.reverse()
    return kept


def _lease_end() -> datetime:
    return timezone.now() + timedelta(seconds=settings.CHAT_TURN_LEASE_SECONDS)


def _lease_left(slot: Message) -> float:
    return (slot.lease_until - timezone.now()).total_seconds() if slot.lease_until else 0.0


def _retry_after(slot: Message) -> int:
    # The owner renews its lease while it works, so the lease says when a dead
    # owner's question frees up, not when a live one finishes: ask again soon.
    return max(1, min(int(_lease_left(slot)) + 1, RETRY_AFTER_IN_PROGRESS))


# --- Storing the outcome --------------------------------------------------------


def _store_reply(turn: Turn, stream: llm.ReplyStream, status: str) -> Message:
    """The owner's last write: the reply into its slot (and a failed question completed)."""
    assert turn.answer is not None
    slot = _filled(turn.answer, stream, status)
    revive = turn.question.status == Message.Status.FAILED  # a retry that worked
    with transaction.atomic() if revive else contextlib.nullcontext():
        stored = Message.objects.filter(pk=slot.pk, lease_owner=turn.owner).update(
            content=slot.content, status=status, created_at=slot.created_at, model=slot.model,
            latency_ms=slot.latency_ms, prompt_tokens=slot.prompt_tokens,
            completion_tokens=slot.completion_tokens,
        )
        if stored and revive:
            Message.objects.filter(pk=turn.question.pk).update(status=Message.Status.COMPLETE)
    if not stored:
        if not Conversation.objects.filter(pk=turn.conversation_id).exists():
            raise ConversationDeleted(session_id=turn.session_id)
        # Our lease ran out unrenewed (a stalled worker) and another request took
        # the question over: it will store its own reply.
        logger.warning("turn lost its lease before the reply was stored")
        raise TurnInProgress(session_id=turn.session_id)
    updates.changed(turn.conversation_id)
    if stream.responder != "offline":
        limits.spend(turn.session_id, stream.tokens_used, turn.address)
    _log_stored(turn, stream, status)
    return slot


def _filled(slot: Message, stream: llm.ReplyStream, status: str) -> Message:
    """The answer slot with the reply (so far) set on it, not yet stored."""
    slot.content, slot.status, slot.created_at = stream.text, status, timezone.now()
    slot.model, slot.latency_ms = stream.model, stream.latency_ms
    slot.prompt_tokens, slot.completion_tokens = stream.prompt_tokens, stream.completion_tokens
    return slot


def _log_stored(turn: Turn, stream: llm.ReplyStream, status: str) -> None:
    logger.info(
        "turn",
        extra={
            "session": sessions.short_hash(turn.session_id),
            "status": status,
            "model": stream.model,
            "llm_ms": stream.latency_ms,
            "prompt_tokens": stream.prompt_tokens,
            "completion_tokens": stream.completion_tokens,
        },
    )


def _release(turn: Turn, count: bool = True) -> None:
    """The owner gives the question up unanswered: its slot is freed and it is marked
    failed, so that it can be retried and no longer blocks the conversation.

    `count` adds it to the conversation's failed turns; a turn the customer
    stopped before the first word is not a failure of ours.
    """
    assert turn.answer is not None
    logger.info("turn", extra={"session": sessions.short_hash(turn.session_id), "status": "failed"})
    with transaction.atomic():
        freed, _ = Message.objects.filter(pk=turn.answer.pk, lease_owner=turn.owner,
                                          status=Message.Status.ANSWERING).delete()
        if freed:
            Message.objects.filter(pk=turn.question.pk).update(status=Message.Status.FAILED)
            if count:
                Conversation.objects.filter(pk=turn.conversation_id).update(failed_turns=F("failed_turns") + 1)
    updates.changed(turn.conversation_id)


async def _release_quietly(turn: Turn, count: bool) -> None:
    try:
        await db.in_db_thread(_release, turn, count, retry=True)
    except DatabaseUnavailable:
        pass  # logged; the slot's lease runs out by itself within CHAT_TURN_LEASE_SECONDS


async def _keep_stopped(turn: Turn, stream: llm.ReplyStream) -> None:
    try:
        if stream.text:
            turn.reply = await db.in_db_thread(_store_reply, turn, stream, Message.Status.STOPPED, retry=True)
        else:
            await _release_quietly(turn, count=False)
    except (ConversationDeleted, TurnInProgress, DatabaseUnavailable):
        pass  # the client has gone; nothing left to keep it in, or someone else answers


async def _hold_lease(turn: Turn) -> None:
    """Renew the lease while the turn is answered, so that only a dead worker loses it."""
    assert turn.answer is not None
    if loop_io.ready():  # renewed with every other lease of this worker (_keep_leases)
        _leases[turn.answer.pk] = turn.owner
        global _keeper
        if _keeper is None or _keeper.done():
            _keeper = asyncio.ensure_future(_keep_leases())
        try:
            await asyncio.get_running_loop().create_future()  # held until the turn ends (cancelled)
        finally:
            _leases.pop(turn.answer.pk, None)
    else:
        every = settings.CHAT_TURN_LEASE_SECONDS * 0.6
        while True:
            await asyncio.sleep(every)
            try:
                await db.in_db_thread(_renew_lease, turn)
            except DatabaseUnavailable:
                pass  # logged; try again at the next renewal


# The leases this worker holds on the event loop (answer slot id -> owner), renewed together:
# one UPDATE every 0.6 x CHAT_TURN_LEASE_SECONDS for all of them, however many turns wait on
# the LLM, instead of one per turn (a turn waiting 10 s would renew three times).
_leases: dict[int, uuid.UUID] = {}
_keeper: asyncio.Future | None = None


async def _keep_leases() -> None:
    every = settings.CHAT_TURN_LEASE_SECONDS * 0.6
    while _leases:
        await asyncio.sleep(every)
        if not _leases:  # every turn ended meanwhile
            return
        try:
            await loop_io.renew_leases(dict(_leases), _lease_end())
        except DatabaseUnavailable:
            pass  # logged; try again at the next renewal


def _renew_lease(turn: Turn) -> None:
    assert turn.answer is not None
    Message.objects.filter(pk=turn.answer.pk, lease_owner=turn.owner, status=Message.Status.ANSWERING).update(
        lease_until=_lease_end()
    )


# References to the work under way that no request waits for, so that it is not garbage collected midway.
_abandoned: set[asyncio.Future] = set()


def _in_background(work) -> asyncio.Future:
    """`work` as a task that runs to its end whoever waits for it (referenced until then)."""
    task = asyncio.ensure_future(work)
    _abandoned.add(task)
    task.add_done_callback(_done_in_background)
    return task


def _done_in_background(task: asyncio.Future) -> None:
    _abandoned.discard(task)
    if not task.cancelled() and task.exception() is not None:  # retrieved: whoever waited has it, if anyone
        logger.info("background work of a turn ended: %r", task.exception())


def _abandon(storing: asyncio.Future) -> None:
    """The client left while its question was stored: free the slot at once."""
    if storing.cancelled() or storing.exception() is not None:
        return
    turn = storing.result()
    if turn.answer is None:
        return
    _in_background(_release_quietly(turn, count=False))
