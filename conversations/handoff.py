"""A person in the conversation: the handoff states, staff replies, and the email to staff.

A conversation's `handoff` is "assistant" (the assistant answers), "waiting"
(the customer asked for a person, nobody has replied yet) or "staff" (a staff
member has replied). The transitions, and who makes each:

    assistant -> waiting     the customer asks for a person (a message that asks,
                             or the page's button): a notice is stored, staff are
                             emailed (at most hourly per conversation).
    waiting -> staff         a staff member replies.
    staff -> staff           the customer writes again: stored for staff, and the
                             conversation waits again (waiting_since).
    waiting/staff -> assistant
                             a staff member hands back or closes: a notice is stored.

While a person is on the conversation, the customer's messages are stored for
staff and the assistant stays quiet (turns.py). Each change is one conditional
write of the conversation's row in the store (store/base.py), so a change that
races another is decided by the database: a customer message that arrives after
Close finds the assistant's state and is answered by the assistant; a person is
asked for again only if the customer asks. A staff reply carries a token made
when its form was shown, unique per conversation, so a double submit or two tabs
posting the same form store it once. Every change tells the pages waiting on the
conversation to look (updates.py).
"""

import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import send_mail
from django.db import connections
from django.db.models import Q
from django.utils import timezone

from . import knowledge, runtime, updates
from .db import blocking, in_orm_thread
from .errors import TurnInProgress
from .models import Conversation, Handoff, Message
from .store.base import Conflict, TurnStore

logger = logging.getLogger(__name__)

# Staff are emailed about a conversation at most this often.
NOTIFY_EVERY = timedelta(hours=1)

# How often a change is tried again after a message took the position it wanted.
ATTEMPTS = 5

# Emails go out from this one thread, so that neither a customer nor a staff
# member waits for the mail server.
_mailer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="handoff-mail")


def notice() -> str:
    """What the customer is told when they ask for a person."""
    return (
        "You asked to talk to a person. Someone from our team will answer here as soon as "
        "they can; you can keep writing meanwhile (the assistant does not answer until they "
        "hand you back).\n\n" + knowledge.contact_details()
    )


def notice_message(conversation: Conversation, seq: int) -> Message:
    return Message(conversation=conversation, seq=seq, role=Message.Role.EVENT, content=notice(),
                   created_at=timezone.now())


# --- The customer's side (called by turns.py, on the worker's loop) -----------------


async def ask_for_person(store: TurnStore, conversation: Conversation, question: Message | None
                         ) -> tuple[str, Message | None]:
    """The customer asks for a person, with `question` (a message that asks) or without (the
    button). The handoff state, and the notice stored (None when a person was already asked
    for: then the question is stored for staff, and nothing is said twice)."""
    for _ in range(ATTEMPTS):
        now = timezone.now()
        notice = notice_message(conversation, 0)
        try:
            notify = await store.request_person(conversation.pk, [question, notice] if question else [notice], now,
                                                now - NOTIFY_EVERY)
            if notify is None:  # a person is on it already
                if question is None:
                    return conversation.handoff if conversation.handoff != Handoff.ASSISTANT else Handoff.WAITING, None
                state = await store.store_for_staff(conversation.pk, question)
                if state is None:
                    continue  # handed back meanwhile: ask again
                return state, None
        except Conflict:
            continue
        if notify:
            email_staff(conversation, question.content if question else None)
        return Handoff.WAITING, notice
    raise TurnInProgress(session_id=conversation.session_id, retry_after=1)


async def store_for_staff(store: TurnStore, conversation: Conversation, question: Message) -> str | None:
    """Store the customer's question for the person on the conversation; the handoff state, or
    None if the assistant has the conversation again (handed back or closed meanwhile)."""
    for _ in range(ATTEMPTS):
        try:
            return await store.store_for_staff(conversation.pk, question)
        except Conflict:
            continue
    raise TurnInProgress(session_id=conversation.session_id, retry_after=1)


@blocking
async def request_person(conversation_id: int) -> Message | None:
    """ask_for_person() from synchronous code (the shell, tests): the notice stored, or None."""
    rt = runtime.current()
    conversation = await in_orm_thread(Conversation.objects.get, pk=conversation_id)
    _, notice = await ask_for_person(rt.store, conversation, None)
    await rt.gateway.round_trip(values=[updates.version_entry(conversation_id)])
    return notice


# --- The staff's side (the admin, the shell) ------------------------------------


async def reply_as_staff(conversation_id: int, user, author: str, text: str, token: str) -> tuple[Message, bool]:
    """Store a staff member's reply (once per `token`) and put the conversation in "staff".
    Returns the message and whether it was stored now (False: it was already)."""
    reply = Message(role=Message.Role.STAFF, content=text, author=author, sent_by=user, client_message_id=token,
                    created_at=timezone.now())
    return reply, await _change(conversation_id, lambda store: store.staff_reply(conversation_id, reply))


async def return_to_assistant(conversation_id: int, user, author: str, close: bool = False) -> Message | None:
    """Return the conversation to the assistant (`close`: and record that staff closed it).
    Returns the notice stored, or None if the assistant had it already."""
    text = f"{author} closed the conversation." if close else f"{author} handed you back to the assistant."
    notice = Message(role=Message.Role.EVENT, content=text + " The assistant answers again.", author=author,
                     sent_by=user, created_at=timezone.now())
    changed = await _change(conversation_id, lambda store: store.hand_back(conversation_id, notice, close))
    return notice if changed else None


# The same, from synchronous code (the admin's views, the shell).
staff_reply = blocking(reply_as_staff)
hand_back = blocking(return_to_assistant)


async def _change(conversation_id: int, change) -> bool:
    rt = runtime.current()
    for _ in range(ATTEMPTS):
        try:
            changed = await change(rt.store)
        except Conflict:
            continue  # a customer's message took the position: the next one
        if changed:
            await rt.gateway.round_trip(values=[updates.version_entry(conversation_id)])
        return changed
    raise TurnInProgress(retry_after=1)


# --- Email ------------------------------------------------------------------------


def staff_emails() -> list[str]:
    """CHAT_HANDOFF_EMAILS, else every active user who may answer and has an email address."""
    if settings.CHAT_HANDOFF_EMAILS:
        return list(settings.CHAT_HANDOFF_EMAILS)
    may_answer = (
        Q(is_superuser=True)
        | Q(user_permissions__codename="reply_conversation")
        | Q(groups__permissions__codename="reply_conversation")
    )
    users = get_user_model().objects.filter(may_answer, is_active=True).exclude(email="")
    return sorted(set(users.values_list("email", flat=True)))


def email_staff(conversation: Conversation, question: str | None) -> None:
    """Tell staff that a customer waits (with `question`, else their latest message), from the mail thread."""
    _mailer.submit(_send, conversation.pk, conversation.reference, question)


def _send(conversation_id: int, reference: str, question: str | None) -> None:
    try:
        if question is None:
            question = Message.objects.filter(conversation_id=conversation_id, role=Message.Role.USER).order_by(
                "-seq").values_list("content", flat=True).first()
        subject = f"Conversation {reference} is waiting for a person"
        body = (
            f"A customer asked to talk to a person in conversation {reference}.\n\n"
            + (f"Their latest message:\n\n    {question[:500]}\n\n" if question else "")
            + "Answer it in the admin: Conversations > Waiting for a person "
            f"(/admin/conversations/conversation/{conversation_id}/change/).\n"
        )
        recipients = staff_emails()
        if not recipients:
            logger.warning("handoff: nobody to email (set CHAT_HANDOFF_EMAILS or give staff an email address)")
            return
        send_mail(subject, body, None, recipients)
    except Exception:  # noqa: BLE001 - the conversation waits in the admin queue anyway
        logger.exception("handoff: the email to staff failed")
    finally:
        connections.close_all()


def flush_email() -> None:
    """Wait until the emails queued so far are sent (tests; a graceful shutdown)."""
    _mailer.submit(lambda: None).result()
