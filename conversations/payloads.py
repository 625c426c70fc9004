"""Every shape the API answers with, written once: a turn's reply, a message, an error, an event.

The views, the streamed turn and the refusals that chatsite/asgi.py sends before Django
reads a request all build their bodies here, so a client sees one error shape everywhere:
`{"error": {"code": ..., "message": ...}}`, with the `sessionId` when the error concerns one.
"""

import json
import uuid

from . import knowledge, llm
from .models import Message


def error(code: str, message: str, session_id: uuid.UUID | None = None) -> dict:
    body: dict = {"error": {"code": code, "message": message}}
    if session_id is not None:
        body["sessionId"] = str(session_id)
    return body


def event(name: str, data: dict) -> str:
    """One server-sent event."""
    return f"event: {name}\ndata: {json.dumps(data)}\n\n"


def reply(turn) -> dict:
    """A turn's outcome (turns.Turn), as POST /api/chat answers it and the stream's `done` event."""
    message = turn.reply  # None: stored for staff, not answered by the assistant
    return {
        "reply": message.content if message else None,
        "sessionId": str(turn.session_id),
        "newSession": turn.new_session,
        # This message started a new conversation because the session's was full (turns.full).
        "previousConversationFull": turn.follows_full,
        "stopped": message is not None and message.status == Message.Status.STOPPED,
        "responder": None if message is None else "offline" if message.model == llm.OFFLINE_MODEL else "openai",
        "model": message.model if message else None,
        "handoff": turn.handoff,
        # Set when this message asked for a person (null otherwise): what to tell the customer.
        "notice": turn.notice,
        # The notice says the shop is closed: the page offers a field for the customer's email.
        "offerEmail": turn.offer_email,
        # The reply comes with the offer of a person ("anyone there?", an upset customer): a button.
        "offerPerson": message is not None and turn.question is not None
        and knowledge.suggests_person(turn.question.content),
    }


def message(message: Message) -> dict:
    """A stored message, as /api/history and /api/updates show it."""
    return {
        "seq": message.seq,
        "role": message.role,
        "content": message.content,
        "author": message.author or None,
        "createdAt": message.created_at.isoformat(),
        "status": message.status,
        # The customer's own ids only: a staff reply's token is staff's.
        "clientMessageId": (message.client_message_id or None)
        if message.role in (Message.Role.USER, Message.Role.ASSISTANT) else None,
    }
