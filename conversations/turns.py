"""A chat turn: store the question, ask the assistant, store the reply.

The database work runs in worker threads (`in_db_thread`) that hand their
connection back as soon as they are done, so no connection is held while the
LLM is thinking.

Two turns on one conversation at once (two tabs, a double click) must not
interleave. The rule: one turn at a time per conversation, and a second one is
refused with TurnInProgress (HTTP 409 with Retry-After) while the first is in
flight. It is enforced by the database: every message has a position `seq`
that is unique per conversation, so of two questions posted at the same moment
only one can take the next position. A question is "in flight" while it is the
last message, has no reply, has not failed and is younger than the LLM
deadline plus a margin (so a crashed worker cannot block a conversation).
"""

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import IntegrityError, connections, transaction
from django.db.models import F
from django.utils import timezone

from . import limits, llm, sessions
from .models import Conversation, Message, idle_cutoff

logger = logging.getLogger(__name__)

# A conversation's last_activity_at is moved forward only when it is older than
# this: precise enough for a 30-day idle timeout and for staff, and it spares
# the conversation's row a write on most turns of a lively chat.
ACTIVITY_RESOLUTION = timedelta(minutes=1)


class TurnInProgress(Exception):
    """Another turn on this conversation has not finished yet."""


class RetrySuperseded(Exception):
    """A retry of a question that later questions have already followed."""


class ConversationDeleted(Exception):
    """The conversation was deleted (by its customer, or a purge) while its turn was answered."""


@dataclass
class Turn:
    session_id: uuid.UUID
    conversation_id: int
    question: Message
    # What the assistant is shown: the latest messages, oldest first.
    history: list[dict[str, str]] = field(default_factory=list)
    new_session: bool = False
    # Set once the reply is stored (or found, for a retry already answered).
    reply: Message | None = None
    # Budgets and LLM health (limits.check_budget): who spends, and whether to answer offline.
    address: str = ""
    offline: bool = False


async def in_db_thread(func, *args, **kwargs):
    """Run `func` in a worker thread, then hand that thread's database connection back."""

    def run():
        try:
            return func(*args, **kwargs)
        finally:
            connections.close_all()

    return await sync_to_async(run, thread_sensitive=False)()


def in_flight_cutoff():
    return timezone.now() - timedelta(seconds=settings.CHAT_LLM_DEADLINE + 10)


def start_turn(
    session_id: uuid.UUID | None, text: str, client_message_id: str, admit_new_session=lambda: None
) -> Turn:
    """Store the question and return the turn to answer.

    An unknown or expired `session_id` starts a new conversation under a new
    id: an id chosen by a client is never adopted. `admit_new_session` is
    called before a conversation is created, and may raise to refuse it.
    """
    if session_id is not None:
        recent = _recent_messages(session_id)
        if recent:
            return _continue_conversation(session_id, recent, text, client_message_id)
    admit_new_session()
    return _start_conversation(text, client_message_id)


def _recent_messages(session_id: uuid.UUID) -> list[Message]:
    """The latest messages of the session's active conversation, newest first; [] if none."""
    messages = Message.objects.select_related("conversation").filter(
        conversation__session_id=session_id, conversation__last_activity_at__gte=idle_cutoff()
    )
    conversation_id = sessions.cached_conversation_id(session_id)
    if conversation_id is not None:
        messages = messages.filter(conversation_id=conversation_id)
    recent = list(messages.order_by("-seq")[: settings.CHAT_HISTORY_MESSAGES])
    if not recent and conversation_id is not None:
        sessions.forget(session_id)  # deleted or expired: the cached entry is stale
    elif recent and conversation_id is None:
        conversation = recent[0].conversation
        sessions.remember(session_id, conversation.pk, conversation.last_activity_at)
    return recent


def _start_conversation(text: str, client_message_id: str) -> Turn:
    with transaction.atomic():
        conversation = Conversation.objects.create(session_id=sessions.new_session_id())
        question = Message.objects.create(
            conversation=conversation,
            seq=0,
            role=Message.Role.USER,
            content=text,
            client_message_id=client_message_id,
        )
    sessions.remember(conversation.session_id, conversation.pk, conversation.last_activity_at)
    return Turn(
        session_id=conversation.session_id,
        conversation_id=conversation.pk,
        question=question,
        history=_history([question]),
        new_session=True,
    )


def _continue_conversation(
    session_id: uuid.UUID, recent: list[Message], text: str, client_message_id: str
) -> Turn:
    conversation = recent[0].conversation
    turn = Turn(session_id=session_id, conversation_id=conversation.pk, question=recent[0])

    if client_message_id:
        earlier = {m.role: m for m in recent if m.client_message_id == client_message_id}
        if Message.Role.ASSISTANT in earlier:  # answered already: the same reply again
            turn.question, turn.reply = earlier[Message.Role.USER], earlier[Message.Role.ASSISTANT]
            return turn
        if Message.Role.USER in earlier:  # a retry of a question not answered yet
            if earlier[Message.Role.USER] is not recent[0]:
                raise RetrySuperseded
            if _in_flight(recent[0]):
                raise TurnInProgress
            turn.history = _history(recent)
            return turn

    if _in_flight(recent[0]):
        raise TurnInProgress
    question = Message(
        conversation=conversation,
        seq=recent[0].seq + 1,
        role=Message.Role.USER,
        content=text,
        client_message_id=client_message_id,
    )
    move_activity = conversation.last_activity_at < question.created_at - ACTIVITY_RESOLUTION
    try:
        # A lone INSERT is atomic by itself: a transaction only when the UPDATE comes along.
        with transaction.atomic() if move_activity else contextlib.nullcontext():
            question.save(force_insert=True)
            if move_activity:
                Conversation.objects.filter(pk=conversation.pk).update(last_activity_at=question.created_at)
    except IntegrityError:
        # Another question took this position first (or this client_message_id
        # was used long ago): the other turn is in flight.
        raise TurnInProgress from None
    turn.question = question
    turn.history = _history([question, *recent])
    return turn


def _in_flight(last: Message) -> bool:
    return (
        last.role == Message.Role.USER
        and last.status != Message.Status.FAILED
        and last.created_at >= in_flight_cutoff()
    )


def _history(newest_first: list[Message]) -> list[dict[str, str]]:
    """The messages the assistant sees, oldest first, within the character budget.

    The newest message is always kept (cut to the budget if it alone exceeds it).
    """
    budget = settings.CHAT_HISTORY_CHARS
    newest, *older = newest_first[: settings.CHAT_HISTORY_MESSAGES]
    kept = [{"role": newest.role, "content": newest.content[:budget]}]
    budget -= len(kept[0]["content"])
    for message in older:
        if len(message.content) > budget:
            break
        kept.append({"role": message.role, "content": message.content})
        budget -= len(message.content)
    kept.reverse()
    return kept


def record_reply(turn: Turn, stream: llm.ReplyStream, status: str = Message.Status.COMPLETE) -> Message:
    try:
        reply = Message.objects.create(
            conversation_id=turn.conversation_id,
            seq=turn.question.seq + 1,
            role=Message.Role.ASSISTANT,
            content=stream.text,
            status=status,
            client_message_id=turn.question.client_message_id,
            model=stream.model,
            prompt_tokens=stream.prompt_tokens,
            completion_tokens=stream.completion_tokens,
            latency_ms=stream.latency_ms,
        )
    except IntegrityError:
        if not Conversation.objects.filter(pk=turn.conversation_id).exists():
            raise ConversationDeleted from None
        raise
    if turn.question.status == Message.Status.FAILED:  # a retry that worked
        Message.objects.filter(pk=turn.question.pk).update(status=Message.Status.COMPLETE)
    if stream.responder != "offline":
        limits.spend(turn.session_id, stream.tokens_used, turn.address)
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
    return reply


def record_failure(turn: Turn, count: bool = True) -> None:
    """Mark the question failed, so that it can be retried and no longer blocks the conversation.

    `count` adds it to the conversation's failed turns; a turn the user stopped
    before the first word is not a failure of ours.
    """
    logger.info("turn", extra={"session": sessions.short_hash(turn.session_id), "status": "failed"})
    with transaction.atomic():
        Message.objects.filter(pk=turn.question.pk).update(status=Message.Status.FAILED)
        if count:
            Conversation.objects.filter(pk=turn.conversation_id).update(
                failed_turns=F("failed_turns") + 1
            )


async def reply_pieces(turn: Turn, streamed: bool = True) -> AsyncIterator[str]:
    """Yield the assistant's reply to `turn` as it is written, and store the outcome.

    On success the reply is stored and set on `turn.reply`. If the assistant
    fails, the question is marked failed and AssistantUnavailable propagates.
    If the caller goes away (Stop, a closed tab), the upstream call is closed and
    what was written so far is kept as a stopped reply.
    """
    stream = llm.ReplyStream(turn.history, streamed=streamed, offline=turn.offline)
    pieces = aiter(stream)
    try:
        async for piece in pieces:
            yield piece
    except llm.AssistantUnavailable:
        await in_db_thread(record_failure, turn)
        raise
    except (asyncio.CancelledError, GeneratorExit):
        await pieces.aclose()  # closes the upstream call now, not when garbage collected
        await _keep_stopped(turn, stream)
        raise
    turn.reply = await in_db_thread(record_reply, turn, stream)


async def _keep_stopped(turn: Turn, stream: llm.ReplyStream) -> None:
    try:
        if stream.text:
            turn.reply = await in_db_thread(record_reply, turn, stream, Message.Status.STOPPED)
        else:
            await in_db_thread(record_failure, turn, count=False)
    except ConversationDeleted:
        pass  # nothing left to keep it in
