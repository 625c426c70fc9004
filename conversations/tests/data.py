"""Generated conversations for the admin, command and model tests."""

import uuid
from datetime import datetime, timedelta

from django.utils import timezone

from conversations.models import Conversation, Message, Session


def conversation(
    *,
    turns: int = 1,
    started: datetime | None = None,
    session_id: uuid.UUID | None = None,
    model: str = "offline-faq",
    latency_ms: int = 100,
    failed_last: bool = False,
) -> Conversation:
    """A conversation of `turns` questions, each answered a second later (the last one
    failed instead if `failed_last`), one minute apart; last active at its last question."""
    return conversations(
        1, turns=turns, started=started, session_ids=[session_id or uuid.uuid4()], model=model,
        latency_ms=latency_ms, failed_last=failed_last,
    )[0]


def conversations(
    count: int,
    *,
    turns: int = 1,
    started: datetime | None = None,
    session_ids: list[uuid.UUID] | None = None,
    model: str = "offline-faq",
    latency_ms: int = 100,
    failed_last: bool = False,
) -> list[Conversation]:
    """`count` conversations like `conversation()`, made with two bulk inserts."""
    started = started or timezone.now() - timedelta(hours=1)
    session_ids = session_ids or [uuid.uuid4() for _ in range(count)]
    made = Conversation.objects.bulk_create(
        Conversation(
            session_id=session_id,
            created_at=started,
            last_activity_at=started + timedelta(minutes=turns - 1),
            failed_turns=1 if failed_last else 0,
        )
        for session_id in session_ids
    )
    messages = []
    for made_one in made:
        seq = 0
        for turn in range(turns):
            asked = started + timedelta(minutes=turn)
            last = turn == turns - 1
            failed = failed_last and last
            messages.append(Message(
                conversation=made_one, seq=seq, role=Message.Role.USER, created_at=asked,
                content=f"Question {turn + 1}?", client_message_id=f"q{turn}",
                status=Message.Status.FAILED if failed else Message.Status.COMPLETE,
            ))
            seq += 1
            if not failed:
                messages.append(Message(
                    conversation=made_one, seq=seq, role=Message.Role.ASSISTANT,
                    created_at=asked + timedelta(seconds=1), content=f"Answer {turn + 1}.",
                    client_message_id=f"q{turn}", model=model, prompt_tokens=50,
                    completion_tokens=20, latency_ms=latency_ms,
                ))
                seq += 1
    Message.objects.bulk_create(messages)
    # Each with its first session, as Conversation.save makes it (bulk_create does not call save).
    Session.objects.bulk_create(Session(session_id=c.session_id, conversation=c, created_at=c.created_at,
                                        last_seen_at=c.last_activity_at) for c in made)
    return made


def long_conversation(messages: int, *, question_chars: int = 4000, reply_chars: int = 20000,
                      filler: str = "Where is my order? ", session_id: uuid.UUID | None = None) -> Conversation:
    """A conversation of `messages` messages, questions and replies in turn (seq 0 a question),
    each `question_chars` or `reply_chars` long and starting with "<seq>:", active now; made with
    bulk inserts, in seconds even at the longest a conversation may be."""
    now = timezone.now()
    made = Conversation.objects.create(session_id=session_id or uuid.uuid4(), last_activity_at=now)
    started = now - timedelta(seconds=messages)
    text = filler * (max(question_chars, reply_chars) // len(filler) + 1)
    Message.objects.bulk_create(
        (Message(
            conversation=made, seq=seq, role=Message.Role.ASSISTANT if seq % 2 else Message.Role.USER,
            content=(f"{seq}: " + text)[: reply_chars if seq % 2 else question_chars],
            client_message_id=f"q{seq // 2}", created_at=started + timedelta(seconds=seq),
        ) for seq in range(messages)),
        batch_size=200,
    )
    return made
