"""A person in the conversation: the handoff states, staff replies, and the email to staff.

A conversation's `handoff` is "assistant" (the assistant answers), "waiting"
(the customer asked for a person, nobody has replied yet) or "staff" (a staff
member has replied). While it is not "assistant", the customer's messages are
stored for staff and the assistant stays quiet (turns.py). A hand-back or a
close returns it to "assistant".

Each change takes the conversation's row lock (SELECT ... FOR UPDATE), so two
staff members acting at once are serialized: the second sees what the first
did. A staff reply carries a token made when its form was shown, unique per
conversation (the client_message_id constraint), so a double submit or two
tabs posting the same form store it once. Every change is stored with a
message (the reply, or an "event" notice the page shows), and every message
tells the pages waiting on the conversation to look (updates.py, on commit).
"""

import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from . import knowledge, sessions, updates
from .models import Conversation, Handoff, Message

logger = logging.getLogger(__name__)

# Staff are emailed about a conversation at most this often.
NOTIFY_EVERY = timedelta(hours=1)

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


def request_person(conversation_id: int) -> tuple[Conversation, Message | None]:
    """Put the conversation in "waiting" and store the notice; email staff (at most hourly).

    Returns the conversation and the notice stored, or None when a person was
    already asked for (nothing is stored twice).
    """
    now = timezone.now()
    with transaction.atomic():
        conversation = Conversation.objects.select_for_update().get(pk=conversation_id)
        if conversation.handoff != Handoff.ASSISTANT:
            return conversation, None
        stored = _append(conversation, role=Message.Role.EVENT, content=notice())
        conversation.handoff = Handoff.WAITING
        conversation.waiting_since = conversation.last_activity_at = now
        notify = conversation.notified_at is None or conversation.notified_at <= now - NOTIFY_EVERY
        if notify:
            conversation.notified_at = now
        conversation.save(update_fields=["handoff", "waiting_since", "last_activity_at", "notified_at"])
        if notify:
            email = _notification(conversation)
            transaction.on_commit(lambda: _mailer.submit(_send, *email))
    return conversation, stored


def store_for_staff(
    conversation: Conversation | None, recent: list[Message], text: str, client_message_id: str,
    opening: str | None = None,
) -> tuple[Conversation, Message, str, str | None]:
    """Store a customer's question that the assistant does not answer (turns.py): a person
    is on the conversation, or the question asks for one (knowledge.wants_person), which
    puts the conversation in "waiting". `conversation` None: a new one is started,
    or, for a first question sent again with the same strong clientMessageId
    (`opening`, see turns.py), found again.

    Returns the conversation, the question, the handoff state and the notice (None
    unless this question asked for a person). A question sent again with its
    clientMessageId (`recent`: the latest messages) is stored once.
    """
    if conversation is None:
        try:
            with transaction.atomic():
                conversation = Conversation.objects.create(
                    session_id=sessions.new_session_id(), opening_client_message_id=opening
                )
        except IntegrityError:  # the same first question sent twice at once
            conversation = Conversation.objects.get(opening_client_message_id=opening)
        sessions.remember(conversation.session_id, conversation.pk, conversation.last_activity_at)
    question = next((m for m in recent if m.role == Message.Role.USER and client_message_id
                     and m.client_message_id == client_message_id), None)
    if question is not None:  # sent again: as it was
        return conversation, question, conversation.handoff, None
    try:
        with transaction.atomic():
            locked = Conversation.objects.select_for_update().get(pk=conversation.pk)
            question = _append(locked, role=Message.Role.USER, content=text, client_message_id=client_message_id)
            locked.last_activity_at = question.created_at
            fields = ["last_activity_at"]
            if locked.handoff != Handoff.ASSISTANT and locked.waiting_since is None:
                locked.waiting_since = question.created_at  # waiting for a person again
                fields.append("waiting_since")
            locked.save(update_fields=fields)
            state = locked.handoff
    except IntegrityError:  # sent twice at once: the other request stored it
        question = Message.objects.get(conversation=conversation, role=Message.Role.USER,
                                       client_message_id=client_message_id)
        state = Conversation.objects.values_list("handoff", flat=True).get(pk=conversation.pk)
    if state != Handoff.ASSISTANT:
        return conversation, question, state, None
    conversation, notice = request_person(conversation.pk)
    return conversation, question, conversation.handoff, notice.content if notice else None


def staff_reply(conversation_id: int, user, author: str, text: str, token: str) -> tuple[Message, bool]:
    """Store a staff member's reply (once per `token`) and put the conversation in "staff".

    Returns the message and whether it was stored now (False: it was already).
    """
    try:
        with transaction.atomic():
            conversation = Conversation.objects.select_for_update().get(pk=conversation_id)
            earlier = _staff_message(conversation_id, token)
            if earlier is not None:
                return earlier, False
            message = _append(
                conversation, role=Message.Role.STAFF, content=text, author=author, sent_by=user,
                client_message_id=token,
            )
            conversation.handoff = Handoff.STAFF
            conversation.waiting_since = None
            # A reply keeps the customer's session alive as their own message would.
            conversation.last_activity_at = message.created_at
            conversation.save(update_fields=["handoff", "waiting_since", "last_activity_at"])
        return message, True
    except IntegrityError:
        # Without a row lock (SQLite has none) the token's constraint is what holds.
        earlier = _staff_message(conversation_id, token)
        if earlier is None:
            raise
        return earlier, False


def hand_back(conversation_id: int, user, author: str, close: bool = False) -> Message | None:
    """Return the conversation to the assistant (`close`: and record that staff closed it).

    Returns the notice stored, or None if the assistant had it already.
    """
    with transaction.atomic():
        conversation = Conversation.objects.select_for_update().get(pk=conversation_id)
        if conversation.handoff == Handoff.ASSISTANT:
            return None
        text = f"{author} closed the conversation." if close else f"{author} handed you back to the assistant."
        stored = _append(conversation, role=Message.Role.EVENT, content=text + " The assistant answers again.",
                         author=author, sent_by=user)
        conversation.handoff = Handoff.ASSISTANT
        conversation.waiting_since = None
        fields = ["handoff", "waiting_since"]
        if close:
            conversation.closed_at = timezone.now()
            fields.append("closed_at")
        conversation.save(update_fields=fields)
    return stored


def _staff_message(conversation_id: int, token: str) -> Message | None:
    return Message.objects.filter(
        conversation_id=conversation_id, role=Message.Role.STAFF, client_message_id=token
    ).first()


def _append(conversation: Conversation, **fields) -> Message:
    """Store a message at the conversation's next position (the caller holds its row lock),
    and tell the pages waiting on the conversation once it is committed.

    The customer's turns do not take that lock, so a question (with its answer
    slot, turns.py) may take the position first: then the next one is tried.
    """
    for attempt in range(5):
        last = conversation.messages.order_by("-seq").first()
        try:
            with transaction.atomic():
                message = Message.objects.create(conversation=conversation, seq=0 if last is None else last.seq + 1,
                                                 **fields)
        except IntegrityError:
            # A question took the position first: try the next one. But a clientMessageId
            # stored already (the same reply or question sent twice) is the caller's to handle.
            sent = fields.get("client_message_id")
            if attempt == 4 or (sent and conversation.messages.filter(role=fields["role"], client_message_id=sent)
                                .exists()):
                raise
            continue
        transaction.on_commit(lambda: updates.changed(conversation.pk))
        return message
    raise AssertionError("unreachable")


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


def _notification(conversation: Conversation) -> tuple[str, str, list[str]]:
    question = (
        conversation.messages.filter(role=Message.Role.USER).order_by("-seq").values_list("content", flat=True).first()
    )
    body = (
        f"A customer asked to talk to a person in conversation {conversation.reference}.\n\n"
        + (f"Their latest message:\n\n    {question[:500]}\n\n" if question else "")
        + "Answer it in the admin: Conversations > Waiting for a person "
        f"(/admin/conversations/conversation/{conversation.pk}/change/).\n"
    )
    return f"Conversation {conversation.reference} is waiting for a person", body, staff_emails()


def _send(subject: str, body: str, recipients: list[str]) -> None:
    if not recipients:
        logger.warning("handoff: nobody to email (set CHAT_HANDOFF_EMAILS or give staff an email address)")
        return
    try:
        send_mail(subject, body, None, recipients)
    except Exception:  # noqa: BLE001 - the conversation waits in the admin queue anyway
        logger.exception("handoff: the email to staff failed")


def flush_email() -> None:
    """Wait until the emails queued so far are sent (tests; a graceful shutdown)."""
    _mailer.submit(lambda: None).result()
