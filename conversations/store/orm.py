"""The turn store through Django's ORM, in a worker thread: the embedded default (SQLite), and
wherever no served worker opened a pool (see base.py)."""

from django.db import IntegrityError, connection, transaction
from django.db.models import F, Max, Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from ..db import in_orm_thread
from ..models import Conversation, Handoff, Message, Session
from ..updates import with_latest
from .base import Conflict, ConversationState, TurnStore


def _db(func):
    """The method in a worker thread, with one retry on a fresh connection (db.in_orm_thread)."""

    async def method(self, *args, **kwargs):
        return await in_orm_thread(func, self, *args, retry=True, **kwargs)

    method.__name__ = method.__qualname__ = func.__name__
    method.__doc__ = func.__doc__
    return method


class OrmStore(TurnStore):
    @_db
    def recent(self, session_id, conversation_id, active_since, limit):
        messages = Message.objects.select_related("conversation").filter(
            conversation__in=Conversation.objects.of_session(session_id),
            conversation__last_activity_at__gte=active_since)
        if conversation_id is not None:
            messages = messages.filter(conversation_id=conversation_id)
        found = list(messages.order_by("-seq")[:limit])
        for message in found:  # the conversation as this session sees it (base.recent)
            message.conversation.session_id = session_id
        return found

    @_db
    def opening(self, opening_key, started_since, limit):
        # The first session, which started the conversation, and only while it has not ended.
        return list(Message.objects.select_related("conversation").filter(
            conversation__opening_client_message_id=opening_key, conversation__created_at__gte=started_since,
            conversation__sessions__session_id=F("conversation__session_id"),
        ).order_by("-seq")[:limit])

    @_db
    def sent_before(self, conversation_id, client_message_id):
        return list(Message.objects.filter(
            conversation_id=conversation_id, client_message_id=client_message_id,
            role__in=[Message.Role.USER, Message.Role.ASSISTANT]))

    @_db
    def newest_seq(self, conversation_id):
        return Message.objects.filter(conversation_id=conversation_id).aggregate(n=Max("seq"))["n"]

    @_db
    def state(self, session_id, active_since):
        found = with_latest(Conversation.objects.filter(last_activity_at__gte=active_since)
                            .of_session(session_id).seen_by(session_id)).values_list(
            "pk", "handoff", "last_seq", "last_status", "answering", "session_seen_at").first()
        return ConversationState(*found) if found else None

    @_db
    def seen(self, session_ids):
        Session.objects.seen(*session_ids)

    @_db
    def start(self, conversation, messages):
        try:
            with transaction.atomic():
                conversation.save(force_insert=True)
                for message in messages:
                    message.conversation = conversation
                Message.objects.bulk_create(messages)
        except IntegrityError:
            conversation.pk = None
            return False
        return True

    @_db
    def insert(self, messages, activity_at, language=None):
        try:
            with transaction.atomic():
                Message.objects.bulk_create(messages)
                changes = {"last_activity_at": activity_at, "language": language}
                if changes := {name: value for name, value in changes.items() if value is not None}:
                    Conversation.objects.filter(pk=messages[0].conversation_id).update(**changes)
        except IntegrityError:
            for message in messages:
                message.pk = None
                message._state.adding = True
            return False
        return True

    @_db
    def take_over(self, slot, owner, lease_until):
        return _abandoned(slot).update(lease_owner=owner, lease_until=lease_until) == 1

    @_db
    def abandon(self, slot):
        with transaction.atomic():
            if _abandoned(slot).delete()[0] != 1:
                return False
            Message.objects.filter(conversation_id=slot.conversation_id, seq=slot.seq - 1).update(
                status=Message.Status.FAILED)
        return True

    @_db
    def store_reply(self, slot, owner, question):
        with transaction.atomic():
            stored = Message.objects.filter(pk=slot.pk, lease_owner=owner).update(
                content=slot.content, status=slot.status, created_at=slot.created_at, model=slot.model,
                latency_ms=slot.latency_ms, prompt_tokens=slot.prompt_tokens,
                completion_tokens=slot.completion_tokens,
            )
            if stored and question is not None:
                Message.objects.filter(pk=question.pk).update(status=Message.Status.COMPLETE)
        return bool(stored)

    @_db
    def release(self, slot, question, owner, count):
        with transaction.atomic():
            freed, _ = Message.objects.filter(pk=slot.pk, lease_owner=owner,
                                              status=Message.Status.ANSWERING).delete()
            if freed:
                Message.objects.filter(pk=question.pk).update(status=Message.Status.FAILED)
                if count:
                    Conversation.objects.filter(pk=slot.conversation_id).update(failed_turns=F("failed_turns") + 1)
        return bool(freed)

    @_db
    def renew_leases(self, leases, lease_until):
        owned = Q()
        for pk, owner in leases.items():
            owned |= Q(pk=pk, lease_owner=owner)
        Message.objects.filter(owned, status=Message.Status.ANSWERING).update(lease_until=lease_until)

    @_db
    def ping(self):
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")

    @_db
    def exists(self, conversation_id):
        return Conversation.objects.filter(pk=conversation_id).exists()

    @_db
    def store_for_staff(self, conversation_id, question):
        with transaction.atomic():
            if not _with_a_person(conversation_id).update(
                    last_activity_at=question.created_at,
                    waiting_since=Coalesce("waiting_since", question.created_at)):
                return None
            _append(conversation_id, [question])
            return Conversation.objects.values_list("handoff", flat=True).get(pk=conversation_id)

    @_db
    def request_person(self, conversation_id, messages, now, notify_if_before):
        with transaction.atomic():
            conversation = Conversation.objects.filter(pk=conversation_id, handoff=Handoff.ASSISTANT).first()
            if conversation is None:
                return None
            notify = conversation.notified_at is None or conversation.notified_at <= notify_if_before
            changed = Conversation.objects.filter(pk=conversation_id, handoff=Handoff.ASSISTANT).update(
                handoff=Handoff.WAITING, waiting_since=now, last_activity_at=now,
                notified_at=now if notify else conversation.notified_at)
            if not changed:
                return None
            _append(conversation_id, messages)
        return notify

    @_db
    def staff_reply(self, conversation_id, reply):
        if _staff_token_stored(conversation_id, reply.client_message_id):
            return False
        try:
            with transaction.atomic():
                Conversation.objects.filter(pk=conversation_id).update(
                    handoff=Handoff.STAFF, waiting_since=None, last_activity_at=reply.created_at)
                _append(conversation_id, [reply])
        except Conflict:
            if _staff_token_stored(conversation_id, reply.client_message_id):
                return False  # the same form sent twice at once
            raise
        return True

    @_db
    def hand_back(self, conversation_id, notice, close):
        with transaction.atomic():
            fields: dict = {"handoff": Handoff.ASSISTANT, "waiting_since": None}
            if close:
                fields["closed_at"] = notice.created_at
            if not _with_a_person(conversation_id).update(**fields):
                return False
            _append(conversation_id, [notice])
        return True

    @_db
    def forget(self, session_ids=None, conversation_ids=None, idle_before=None):
        chosen = Conversation.objects.filter(sessions__session_id__in=session_ids) if session_ids is not None \
            else Conversation.objects.filter(pk__in=conversation_ids or [])
        if idle_before is not None:
            chosen = chosen.filter(last_activity_at__lt=idle_before)
        with transaction.atomic():
            # Locked first: a message inserted meanwhile either committed before (and is
            # deleted below, whose statements see it) or waits, then fails on its conversation.
            ids = list(chosen.select_for_update().values_list("pk", flat=True))
            if not ids:
                return [], [], 0
            ended = list(Session.objects.filter(conversation__in=ids).values_list("session_id", flat=True))
            _, deleted = Conversation.objects.filter(pk__in=ids).delete()
        return ids, ended, deleted.get("conversations.Message", 0)


def _abandoned(slot: Message):
    return Message.objects.filter(pk=slot.pk, status=Message.Status.ANSWERING, lease_until__lt=timezone.now())


def _staff_token_stored(conversation_id: int, token: str) -> bool:
    return Message.objects.filter(conversation_id=conversation_id, role=Message.Role.STAFF,
                                  client_message_id=token).exists()


def _with_a_person(conversation_id: int):
    return Conversation.objects.filter(pk=conversation_id).exclude(handoff=Handoff.ASSISTANT)


def _append(conversation_id: int, messages: list[Message]) -> None:
    """Insert messages at the conversation's next positions (IntegrityError if one is taken meanwhile)."""
    newest = Message.objects.filter(conversation_id=conversation_id).aggregate(n=Max("seq"))["n"]
    first = 0 if newest is None else newest + 1
    for offset, message in enumerate(messages):
        message.conversation_id, message.seq = conversation_id, first + offset
    try:
        with transaction.atomic():
            Message.objects.bulk_create(messages)
    except IntegrityError:
        for message in messages:
            message.pk = None
            message._state.adding = True
        raise Conflict from None

