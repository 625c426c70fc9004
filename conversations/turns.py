"""A chat turn: store the question, have it answered exactly once, store the reply.

A question is a user Message at position `seq`; its reply lives in the
assistant Message at `seq + 1`, the question's *answer slot*. Positions are
unique per conversation, so of all the requests that try to create a slot (a
double click, two tabs, a retry loop, a new question racing a retry) exactly
one succeeds: the database decides, and no lock is held across the LLM call.

The states of a question, as the rows show them:

    answering  its slot is ANSWERING, with `lease_owner` (a token of the one
               request answering it) and `lease_until`. The owner's worker
               renews the lease every 0.6 x CHAT_TURN_LEASE_SECONDS while it
               works (runtime.LeaseKeeper), so the lease of a killed worker runs
               out within CHAT_TURN_LEASE_SECONDS.
    complete   its slot is COMPLETE: the reply.
    stopped    its slot is STOPPED: the customer pressed Stop or left, and what
               had been written is kept.
    failed     the question is FAILED and has no slot: the LLM failed, or the
               customer left before the first word. A retry may complete it.
    for staff  a person is on the conversation, or the question asked for one:
               it is stored without a slot and the assistant stays quiet
               (handoff.py).

The transitions, and who may make each:

    (none) -> answering    a new question, when no slot of the conversation is
                           under a live lease: ONE INSERT of the question and its
                           slot. A conflict on `seq` means another request was
                           first: read again and decide.
    failed -> answering    a retry (same clientMessageId) while the question is
                           still the newest: INSERT of its slot.
    answering -> answering a retry when the lease has run out (its worker died):
                           a compare-and-set UPDATE ... WHERE lease_until < now.
                           One request wins; the rest get 409.
    answering -> failed    a new question finding a slot whose lease ran out
                           (the same compare-and-set, as a DELETE of the slot).
    answering -> complete, stopped or failed
                           the lease owner only (every write is conditional on
                           lease_owner), when the LLM answers, the client goes
                           away, or the LLM fails.

Every write is safe to run twice, so the store retries each once on a fresh
connection when the database fails (store/base.py).

What a client sees: the reply; or 409 turn_in_progress with Retry-After while
another request answers; the stored reply, without an LLM call, for a question
sent again once answered, however old; 409 retry_superseded, without
Retry-After, for a retry of a question that newer messages followed.

A conversation holds at most CHAT_CONVERSATION_MAX_MESSAGES positions of the
customer's making (`full`): once a question and its reply no longer fit, the
customer's next message, or a person asked for with the button, starts a new
conversation under a new session id, as an expired one does, and the answer
says why (`previousConversationFull`). The old conversation stays as it is, for
staff. Staff replies and notices are not refused: they come from staff, who see
the conversation's length, not from an anonymous client.

A first question sent again with no sessionId (its answer, and so its id, was
lost on the way) finds the conversation it started only if its clientMessageId
is a UUID, it comes from the same client address, and within
OPENING_RECOVERY_MINUTES: the conversation keeps a keyed hash of the address and
the id (`opening_key`), so an id seen or guessed by anyone else finds nothing.
The message (or the button) that started a conversation because the session's
was full, sent again under that session's id, finds the conversation it started
the same way, by a keyed hash of the session's id and its clientMessageId,
whatever the id is and however old: ten sent at once start one.
"""

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import cast

from django.conf import settings
from django.utils import timezone
from django.utils.crypto import salted_hmac
from django.utils.translation import gettext

from . import handoff, knowledge, languages, limits, llm, metrics, runtime, sessions, updates
from .errors import ApiError, ConversationDeleted, DatabaseUnavailable, RetrySuperseded, TurnInProgress
from .models import Conversation, Handoff, Message, idle_cutoff, lease_end
from .store.base import Conflict

logger = logging.getLogger(__name__)

# A conversation's last_activity_at is moved forward only when it is older than
# this: precise enough for a 30-day idle timeout and for staff, and it spares
# the conversation's row a write on most turns of a lively chat.
ACTIVITY_RESOLUTION = timedelta(minutes=1)

# How long after it started a conversation can be found again by its first question
# (a client retrying a first message whose answer it never received).
OPENING_RECOVERY_MINUTES = 10

# The longest Retry-After of a 409 turn_in_progress, in seconds.
RETRY_AFTER_IN_PROGRESS = 2

# How often a turn reads again after another request took what it wanted to write.
ATTEMPTS = 5


@dataclass
class Turn:
    session_id: uuid.UUID
    conversation_id: int
    # None for a person asked for with the page's button, which stores no question.
    question: Message | None
    # The token of this request: it owns `answer` while the lease holds.
    owner: uuid.UUID
    # The answer slot this request owns; None when the reply was stored before, or for staff.
    answer: Message | None = None
    # What the assistant is shown: the latest messages, oldest first.
    history: list[dict[str, str]] = field(default_factory=list)
    new_session: bool = False
    # A new conversation started because the session's conversation was full (`full`).
    follows_full: bool = False
    # Set once the reply is stored (or found, for a question answered before).
    reply: Message | None = None
    # Budgets and LLM health (limits.admit): who spends, and whether to answer offline.
    address: str = ""
    offline: bool = False
    # A person is on the conversation, or this question asked for one: stored for staff,
    # not answered by the assistant (handoff.py). `notice`: what the customer is told
    # when this question asked for a person.
    for_staff: bool = False
    handoff: str = Handoff.ASSISTANT
    notice: str | None = None
    # The notice tells the customer the shop is closed: the page offers a field for their email.
    offer_email: bool = False
    # The session's cache entry to write with the turn's last round trip (a cache miss).
    cache_entry: tuple | None = None
    runtime: "runtime.Runtime" = field(default_factory=runtime.current)
    # The customer's language (languages.current() when the turn started): the reply's.
    language: str = "en"
    started: float = field(default_factory=time.monotonic)  # for the metrics' turn latency


async def start(ip: str, session_id: uuid.UUID | None, text: str, client_message_id: str) -> Turn:
    """Count the turn against the limits, store the question and take its answer slot.

    Returns the turn to answer, or one whose `reply` is already stored (a question
    sent again), or one stored for staff. An unknown or expired `session_id` starts a
    new conversation under a new id: an id chosen by a client is never adopted.
    Raises an ApiError (Limited, TurnInProgress, RetrySuperseded, DatabaseUnavailable)
    that names the session. If the client goes away while the question is stored, the
    question is kept, marked failed, and its slot freed at once.
    """
    owner = uuid.uuid4()
    language = languages.current()  # read once here, passed down
    storing = asyncio.ensure_future(_store(runtime.current(), ip, session_id, text, client_message_id, owner,
                                           language))
    try:
        return await asyncio.shield(storing)
    except asyncio.CancelledError:
        storing.add_done_callback(_abandon)
        raise
    except ApiError as error:
        error.session_id = error.session_id or session_id
        raise


async def request_person(ip: str, session_id: uuid.UUID | None) -> Turn:
    """The customer asks for a person with the page's button (handoff.py): the turn stored for
    staff, with the notice to show (None when a person was asked for already)."""
    rt = runtime.current()
    try:
        admission = await limits.admit(rt.gateway, ip, session_id)
        turn = await _read_again_on_conflict(session_id, _person_for, rt, ip, session_id, admission.conversation_id)
    except ApiError as error:
        error.session_id = error.session_id or session_id
        raise
    turn.address, turn.runtime = ip, rt
    await _settle(turn, tokens=0)
    return turn


async def _person_for(rt: runtime.Runtime, ip: str, session_id: uuid.UUID | None, cached: int | None) -> Turn:
    recent = await rt.store.recent(session_id, cached, idle_cutoff(), 1) if session_id is not None else []
    if recent and not full(recent, ""):
        return await _ask_for_person(rt, recent[0].conversation, ip)
    follows = recent[0].conversation if recent else None
    turn = await _start_conversation(rt, ip, None, "", uuid.uuid4(), languages.current(), follows)
    turn.follows_full = follows is not None
    return turn


async def _ask_for_person(rt: runtime.Runtime, conversation: Conversation, ip: str) -> Turn:
    state, notice, told = await handoff.ask_for_person(rt.store, conversation, None, ip)
    return Turn(session_id=conversation.session_id, conversation_id=conversation.pk, question=None,
                owner=uuid.uuid4(), for_staff=True, handoff=state, notice=notice.content if notice else None,
                offer_email=bool(told and told.offer_email))


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
    assert turn.answer is not None
    stream = llm.ReplyStream(turn.history, streamed=streamed, offline=turn.offline, client=turn.runtime.llm,
                             language=turn.language)
    pieces = cast(AsyncGenerator[str, None], aiter(stream))
    lease = asyncio.ensure_future(turn.runtime.leases.hold(turn.answer, turn.owner))
    try:
        try:
            async for piece in pieces:
                yield piece
        except llm.AssistantUnavailable as error:
            await _release_quietly(turn, count=True)
            error.message += " " + gettext("Your message is saved; try again in a moment.")
            raise
        except (asyncio.CancelledError, GeneratorExit):
            await pieces.aclose()  # closes the upstream call now, not when garbage collected
            await _keep_stopped(turn, stream)
            raise
        # Finished even if the client leaves meanwhile: the reply is written.
        turn.reply = await asyncio.shield(_in_background(_store_reply(turn, stream, Message.Status.COMPLETE)))
    except ApiError as error:
        error.session_id = error.session_id or turn.session_id
        raise
    finally:
        lease.cancel()


# --- Storing the question ---------------------------------------------------------


async def _store(rt: runtime.Runtime, ip: str, session_id: uuid.UUID | None, text: str, client_message_id: str,
                 owner: uuid.UUID, language: str = "en") -> Turn:
    admission = await limits.admit(rt.gateway, ip, session_id)
    turn = await _read_again_on_conflict(session_id, _store_question, rt, ip, session_id, admission.conversation_id,
                                         text, client_message_id, owner, language)
    turn.address, turn.offline, turn.runtime, turn.language = ip, not admission.use_llm, rt, language
    if turn.for_staff:  # stored for staff: nothing more to come, so the turn ends here
        metrics.TURNS.labels("for_staff").inc()
        await _settle(turn, tokens=0)
    return turn


async def _read_again_on_conflict(session_id: uuid.UUID | None, attempt, *args) -> Turn:
    """`attempt(*args)`, again while another request takes what it wanted (Conflict: the same
    question or button a moment ago, a position taken): each attempt reads afresh and decides.
    Past ATTEMPTS, 409 turn_in_progress."""
    for _ in range(ATTEMPTS):
        try:
            return await attempt(*args)
        except Conflict:
            continue
    raise TurnInProgress(session_id=session_id, retry_after=1)


async def _store_question(rt: runtime.Runtime, ip: str, session_id: uuid.UUID | None, cached: int | None,
                          text: str, client_message_id: str, owner: uuid.UUID, language: str) -> Turn:
    """The question stored (or found, sent again) and its slot taken. Conflict: read again."""
    if session_id is not None:
        recent = await rt.store.recent(session_id, cached, idle_cutoff(), settings.CHAT_HISTORY_MESSAGES)
        if recent and full(recent, client_message_id):
            turn = await _start_conversation(rt, ip, text, client_message_id, owner, language,
                                             follows=recent[0].conversation)
            turn.follows_full = True
            return turn
        if recent:
            turn = await _continue(rt, recent, text, client_message_id, owner, ip, language)
            if cached != turn.conversation_id:
                turn.cache_entry = sessions.cache_entry(session_id, turn.conversation_id,
                                                        recent[0].conversation.last_activity_at)
            return turn
        if cached is not None:  # deleted or expired: the cached entry is stale
            await rt.gateway.round_trip(deletes=[sessions.cache_key(session_id)])
    return await _start_conversation(rt, ip, text, client_message_id, owner, language)


def full(recent: list[Message], client_message_id: str) -> bool:
    """Whether a conversation, given its latest messages (newest first), has no room for the
    customer's next message: a question and its reply take two positions, and none may lie at or
    beyond CHAT_CONVERSATION_MAX_MESSAGES. A question sent again (its clientMessageId among the
    latest) is not a next message: it gets its stored reply as always."""
    if recent[0].seq + 2 < settings.CHAT_CONVERSATION_MAX_MESSAGES:
        return False
    return not (client_message_id and any(
        m.client_message_id == client_message_id and m.role == Message.Role.USER for m in recent))


def opening_key(ip: str, client_message_id: str, follows: Conversation | None = None) -> str | None:
    """What the conversation a question (or the button, `client_message_id` "") starts is found
    again by, when it comes again because its answer, and the new id in it, was lost:
    - started because the session's conversation `follows` was full: a keyed hash of that session's
      id and the clientMessageId, whatever it is; only that session can send it;
    - a first question: a keyed hash of the client's address and its clientMessageId, if that is a
      UUID (module docstring); else None, and nothing finds it again."""
    if follows is not None:
        return salted_hmac("chatsite.follows", f"{follows.session_id}|{client_message_id}").hexdigest()
    try:
        if str(uuid.UUID(client_message_id)) != client_message_id.lower():
            return None
    except ValueError:
        return None
    return salted_hmac("chatsite.opening", f"{limits.address_group(ip)}|{client_message_id.lower()}").hexdigest()


async def _start_conversation(rt: runtime.Runtime, ip: str, text: str | None, client_message_id: str,
                              owner: uuid.UUID, language: str, follows: Conversation | None = None) -> Turn:
    """The one place a conversation starts: with its first question and, for the assistant,
    its answer slot; or waiting for a person, when the question asks for one or the customer
    pressed the button (`text` None). `follows`: the session's conversation, which was full.
    The same question or button sent again finds the conversation it started (opening_key)."""
    key = opening_key(ip, client_message_id, follows) if text is not None or follows is not None else None
    # A first question is found again for OPENING_RECOVERY_MINUTES; one that followed a full
    # conversation as long as a question sent again in a conversation is (however old).
    since = _recovery_since() if follows is None else follows.created_at
    if key is not None:
        recent = await rt.store.opening(key, since, settings.CHAT_HISTORY_MESSAGES)
        if recent:  # the same question, or the button, sent again
            conversation = recent[0].conversation
            if text is None:
                turn = await _ask_for_person(rt, conversation, ip)
            else:
                turn = await _continue(rt, recent, text, client_message_id, owner, ip, language)
            turn.new_session = True
            turn.cache_entry = sessions.cache_entry(conversation.session_id, conversation.pk,
                                                    conversation.last_activity_at)
            return turn
    await limits.admit_new_session(rt.gateway, ip)
    conversation = Conversation(session_id=sessions.new_session_id(), opening_client_message_id=key,
                                language=language)
    if text is None or knowledge.wants_person(text):
        question = None if text is None else _message(conversation, 0, Message.Role.USER, text, client_message_id)
        told = await handoff.outlook(timezone.now())
        notice = handoff.notice_message(conversation, 0 if question is None else 1, told)
        conversation.handoff = Handoff.WAITING
        conversation.waiting_since = conversation.notified_at = notice.created_at
        if not await _started(rt, conversation, [question, notice] if question else [notice], since):
            raise Conflict
        await handoff.email_staff(conversation, text, ip)
        turn = Turn(session_id=conversation.session_id, conversation_id=conversation.pk, question=question,
                    owner=owner, for_staff=True, handoff=Handoff.WAITING, notice=notice.content,
                    offer_email=told.offer_email)
    else:
        question, slot = _question_and_slot(conversation, 0, text, client_message_id, owner)
        if not await _started(rt, conversation, [question, slot], since):
            raise Conflict
        turn = _turn(conversation, [question], owner, slot=slot)
    turn.new_session = True
    turn.cache_entry = sessions.cache_entry(conversation.session_id, conversation.pk, conversation.last_activity_at)
    return turn


async def _started(rt: runtime.Runtime, conversation: Conversation, messages: list[Message], since) -> bool:
    """Start the conversation; False if its opening key was taken a moment ago by the same question
    (read again). A key taken by a conversation that can no longer be found by it (started before
    `since`, or its first session ended) is let go."""
    if await rt.store.start(conversation, messages):
        return True
    key = conversation.opening_client_message_id
    if key is None or await rt.store.opening(key, since, 1):
        return False
    conversation.opening_client_message_id = None
    return await rt.store.start(conversation, messages)


def _recovery_since():
    return timezone.now() - timedelta(minutes=OPENING_RECOVERY_MINUTES)


async def _continue(rt: runtime.Runtime, recent: list[Message], text: str, client_message_id: str,
                    owner: uuid.UUID, ip: str, language: str) -> Turn:
    """The next question of a conversation, given its latest messages (newest first)."""
    conversation = recent[0].conversation
    if conversation.handoff != Handoff.ASSISTANT or knowledge.wants_person(text):
        turn = await _for_staff(rt, conversation, recent, text, client_message_id, owner, ip)
        if turn is not None:
            return turn
        raise Conflict  # handed back to the assistant meanwhile: read again
    if client_message_id:
        sent_before = {m.role: m for m in recent if m.client_message_id == client_message_id
                       and m.role in (Message.Role.USER, Message.Role.ASSISTANT)}
        if sent_before:
            return await _retry(rt, conversation, recent, sent_before, owner)

    # A slot anywhere in the window, not only the newest message: staff replies and
    # notices may have been appended after a reply still being written.
    slot = next((m for m in recent if m.status == Message.Status.ANSWERING), None)
    if slot is not None:
        if slot.lease_owner == owner:  # stored by our own attempt, whose acknowledgement was lost
            return _turn(conversation, [m for m in recent if m.seq < slot.seq], owner, slot=slot)
        if slot.being_answered():
            raise TurnInProgress(session_id=conversation.session_id, retry_after=_retry_after(slot))
        if not await rt.store.abandon(slot):
            raise TurnInProgress(session_id=conversation.session_id, retry_after=1)
        logger.warning("turn abandoned by its worker", extra={"conversation": conversation.pk})
        recent = [m for m in recent if m.pk != slot.pk]

    next_seq = max((m.seq for m in recent), default=-1) + 1
    question, slot = _question_and_slot(conversation, next_seq, text, client_message_id, owner)
    due = conversation.last_activity_at < question.created_at - ACTIVITY_RESOLUTION
    changed = language if language != conversation.language else None  # the language the customer last wrote in
    if not await rt.store.insert([question, slot], question.created_at if due else None, changed):
        # Sent before, beyond the history window? Else another request took the position.
        sent_before = await _sent_before(rt, conversation, client_message_id) if client_message_id else {}
        if sent_before:
            return await _retry(rt, conversation, recent, sent_before, owner)
        if not await rt.store.exists(conversation.pk):
            raise ConversationDeleted(session_id=conversation.session_id)
        raise Conflict
    return _turn(conversation, [question, *recent], owner, slot=slot)


async def _retry(rt: runtime.Runtime, conversation: Conversation, recent: list[Message],
                 sent_before: dict[str, Message], owner: uuid.UUID) -> Turn:
    """A question sent again with its clientMessageId: its stored reply, or its answer slot."""
    question = sent_before.get(Message.Role.USER)
    slot = sent_before.get(Message.Role.ASSISTANT)
    if question is None:  # it lies just beyond the history window: read the pair
        assert slot is not None
        return await _retry(rt, conversation, recent, await _sent_before(rt, conversation, slot.client_message_id),
                            owner)
    question.conversation = conversation
    from_question = [m for m in recent if m.seq <= question.seq] or [question]
    if slot is not None and slot.status != Message.Status.ANSWERING:
        return _turn(conversation, from_question, owner, reply=slot)
    if slot is not None:
        if slot.lease_owner == owner:
            return _turn(conversation, from_question, owner, slot=slot)
        if slot.being_answered():
            raise TurnInProgress(session_id=conversation.session_id, retry_after=_retry_after(slot))
        if not await rt.store.take_over(slot, owner, lease_end()):
            raise Conflict
        slot.lease_owner = owner
        return _turn(conversation, from_question, owner, slot=slot)
    if question.seq != max(m.seq for m in recent):
        raise RetrySuperseded(session_id=conversation.session_id)
    _, slot = _question_and_slot(conversation, question.seq, question.content, question.client_message_id, owner)
    if not await rt.store.insert([slot], None):
        raise Conflict
    return _turn(conversation, from_question, owner, slot=slot)


async def _sent_before(rt: runtime.Runtime, conversation: Conversation, client_message_id: str
                       ) -> dict[str, Message]:
    return {message.role: message for message in await rt.store.sent_before(conversation.pk, client_message_id)}


async def _for_staff(rt: runtime.Runtime, conversation: Conversation, recent: list[Message], text: str,
                     client_message_id: str, owner: uuid.UUID, ip: str) -> Turn | None:
    """The question stored for staff (handoff.py); None if the assistant has the conversation
    again and the customer did not ask for a person (answered by the assistant, then)."""
    sent = next((m for m in recent if m.role == Message.Role.USER and client_message_id
                 and m.client_message_id == client_message_id), None)
    if sent is not None:  # sent again: as it was
        return Turn(session_id=conversation.session_id, conversation_id=conversation.pk, question=sent,
                    owner=owner, for_staff=True, handoff=conversation.handoff)
    question = _message(conversation, 0, Message.Role.USER, text, client_message_id)
    notice = told = None
    state: str | None
    if knowledge.wants_person(text):
        state, notice, told = await handoff.ask_for_person(rt.store, conversation, question, ip)
    else:
        state = await handoff.store_for_staff(rt.store, conversation, question)
    if state is None:
        return None
    return Turn(session_id=conversation.session_id, conversation_id=conversation.pk, question=question, owner=owner,
                for_staff=True, handoff=state, notice=notice.content if notice else None,
                offer_email=bool(told and told.offer_email))


def _message(conversation: Conversation, seq: int, role: str, text: str, client_message_id: str = "") -> Message:
    return Message(conversation=conversation, seq=seq, role=role, content=text,
                   client_message_id=client_message_id, created_at=timezone.now())


def _question_and_slot(
    conversation: Conversation, seq: int, text: str, client_message_id: str, owner: uuid.UUID
) -> tuple[Message, Message]:
    question = _message(conversation, seq, Message.Role.USER, text, client_message_id)
    slot = Message(conversation=conversation, seq=seq + 1, role=Message.Role.ASSISTANT, content="",
                   status=Message.Status.ANSWERING, client_message_id=client_message_id,
                   created_at=question.created_at, lease_owner=owner, lease_until=lease_end())
    return question, slot


def _turn(conversation: Conversation, newest_first: list[Message], owner: uuid.UUID, *,
          slot: Message | None = None, reply: Message | None = None) -> Turn:
    return Turn(
        session_id=conversation.session_id,
        conversation_id=conversation.pk,
        question=newest_first[0],
        owner=owner,
        answer=slot,
        reply=reply,
        history=_history(newest_first) if reply is None else [],
    )


def _history(newest_first: list[Message]) -> list[dict[str, str]]:
    """The messages the assistant sees, oldest first, within the character budget.

    The newest message (the question) is always kept, cut to the budget if it alone
    exceeds it. Slots still being answered and notices are not shown.
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


def _retry_after(slot: Message) -> int:
    # The owner renews its lease while it works, so the lease says when a dead
    # owner's question frees up, not when a live one finishes: ask again soon.
    left = (slot.lease_until - timezone.now()).total_seconds() if slot.lease_until else 0.0
    return max(1, min(int(left) + 1, RETRY_AFTER_IN_PROGRESS))


# --- Storing the outcome --------------------------------------------------------


async def _store_reply(turn: Turn, stream: llm.ReplyStream, status: str) -> Message:
    """The owner's last write: the reply into its slot (and a failed question completed)."""
    assert turn.answer is not None
    slot = turn.answer
    slot.content, slot.status, slot.created_at = stream.text, status, timezone.now()
    slot.model, slot.latency_ms = stream.model, stream.latency_ms
    slot.prompt_tokens, slot.completion_tokens = stream.prompt_tokens, stream.completion_tokens
    assert turn.question is not None
    revive = turn.question if turn.question.status == Message.Status.FAILED else None  # a retry that worked
    if not await turn.runtime.store.store_reply(slot, turn.owner, revive):
        if not await turn.runtime.store.exists(turn.conversation_id):
            raise ConversationDeleted(session_id=turn.session_id)
        # Our lease ran out unrenewed (a stalled worker) and another request took
        # the question over: it will store its own reply.
        logger.warning("turn lost its lease before the reply was stored")
        raise TurnInProgress(session_id=turn.session_id)
    await _settle(turn, tokens=stream.tokens_used if stream.responder != "offline" else 0)
    metrics.turn_ended(status, turn.started)
    logger.info("turn", extra={
        "session": sessions.short_hash(turn.session_id), "status": status, "model": stream.model,
        "llm_ms": stream.latency_ms, "prompt_tokens": stream.prompt_tokens,
        "completion_tokens": stream.completion_tokens,
    })
    return slot


async def _settle(turn: Turn, tokens: int) -> None:
    """The turn's last round trip: tokens spent, the waiting pages told, the session cached."""
    values = [updates.version_entry(turn.conversation_id)]
    if turn.cache_entry is not None:
        values.append(turn.cache_entry)
    await limits.settle(turn.runtime.gateway, turn.session_id, turn.address, tokens, values)


async def _release(turn: Turn, count: bool) -> None:
    """The owner gives the question up unanswered: its slot is freed and it is marked
    failed, so that it can be retried and no longer blocks the conversation.

    `count` adds it to the conversation's failed turns; a turn the customer
    stopped before the first word is not a failure of ours.
    """
    assert turn.answer is not None and turn.question is not None
    logger.info("turn", extra={"session": sessions.short_hash(turn.session_id), "status": "failed"})
    metrics.TURNS.labels("failed" if count else "stopped").inc()
    await turn.runtime.store.release(turn.answer, turn.question, turn.owner, count)
    await _settle(turn, tokens=0)


async def _release_quietly(turn: Turn, count: bool) -> None:
    try:
        await _release(turn, count)
    except DatabaseUnavailable:
        pass  # logged; the slot's lease runs out by itself within CHAT_TURN_LEASE_SECONDS


async def _keep_stopped(turn: Turn, stream: llm.ReplyStream) -> None:
    try:
        if stream.text:
            turn.reply = await _store_reply(turn, stream, Message.Status.STOPPED)
        else:
            await _release_quietly(turn, count=False)
    except (ConversationDeleted, TurnInProgress, DatabaseUnavailable):
        pass  # the client has gone; nothing left to keep it in, or someone else answers


# References to the work under way that no request waits for, so that it is not garbage collected midway.
_background: set[asyncio.Future] = set()


def _in_background(work) -> asyncio.Future:
    """`work` as a task that runs to its end whoever waits for it (referenced until then)."""
    task = asyncio.ensure_future(work)
    _background.add(task)
    task.add_done_callback(_done_in_background)
    return task


def _done_in_background(task: asyncio.Future) -> None:
    _background.discard(task)
    if not task.cancelled() and task.exception() is not None:  # retrieved: whoever waited has it, if anyone
        logger.info("background work of a turn ended: %r", task.exception())


def _abandon(storing: asyncio.Future) -> None:
    """The client left while its question was stored: free the slot at once."""
    if storing.cancelled() or storing.exception() is not None:
        return
    turn = storing.result()
    if turn.answer is None or turn.reply is not None:
        return
    _in_background(_release_quietly(turn, count=False))
