"""The turn store: every statement a chat turn and a handoff make, behind one interface.

As `django.contrib.sessions.backends` does for sessions, the rules live above
the store (turns.py, handoff.py, forget.py) and are written once; a backend
only reads and writes, each in one round trip to the database where it can.
Two backends: `postgres` (psycopg's async pool, never leaving the event loop)
for a served worker on PostgreSQL, and `orm` (Django's ORM in a worker thread)
for the embedded default, SQLite, and wherever no worker's runtime opened a
pool (Django's test clients, management commands, the shell).

The rows are model instances (Message, with its `conversation` set), made and
read by the backends, so that the rules read the same objects from both.

The decision for a failing database is each backend's `run`: a statement is
retried once on a fresh connection (every statement here is safe to run twice:
inserts conflict on the positions they take, updates are conditional on their
owner or on the state they change), then DatabaseUnavailable (503).

Every method that writes returns whether it did: False means the state it was
conditional on had changed (another request was first, a staff member acted,
the conversation was deleted); the rules then read again and decide.
"""

import uuid
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from ..models import Conversation, Message


@dataclass
class ConversationState:
    """What a waiting page's long poll reads of its conversation each time it asks (updates.py)."""

    conversation_id: int
    handoff: str
    # The newest message's position and status (None, None without messages).
    last_seq: int | None
    last_status: str | None
    # An answer slot is being written (its lease has not run out), whatever was appended after it.
    answering: bool
    # When the asking session was last seen (models.Session.seen_due).
    seen_at: datetime | None


class TurnStore:
    # --- Reading ---------------------------------------------------------------

    async def recent(self, session_id: uuid.UUID, conversation_id: int | None, active_since: datetime,
                     limit: int) -> list[Message]:
        """The latest `limit` messages of the session's conversation if it was active since
        `active_since`, newest first, each with its conversation; [] if it has none. A
        `conversation_id` (from the cache) narrows the read; the session id is checked anyway.

        A conversation may have several sessions (one per browser, models.Session): the
        conversation read here is as this session sees it, its `session_id` this session's, so
        that what a turn answers (and every error) names the asking browser's id, never another's."""
        raise NotImplementedError

    async def opening(self, opening_key: str, started_since: datetime, limit: int) -> list[Message]:
        """The latest messages of the conversation that a first question with this key started, if it
        started since `started_since` and its first session has not ended; newest first, each with
        its conversation."""
        raise NotImplementedError

    async def sent_before(self, conversation_id: int, client_message_id: str) -> list[Message]:
        """The customer's question with this clientMessageId and its answer slot, whichever exist."""
        raise NotImplementedError

    async def newest_seq(self, conversation_id: int) -> int | None:
        """The position of the conversation's newest message; None if it has none or is gone."""
        raise NotImplementedError

    async def state(self, session_id: uuid.UUID, active_since: datetime) -> ConversationState | None:
        """The state of the session's conversation if it was active since `active_since`, in one
        statement (a waiting page asks for it every CHAT_UPDATES_WAIT); None if it has none."""
        raise NotImplementedError

    async def seen(self, session_ids: Collection[uuid.UUID]) -> None:
        """Move these sessions' last seen time, each where it is due, in one statement
        (models.SessionQuerySet.seen: the rule; runtime.Sightings gathers them)."""
        raise NotImplementedError

    # --- A turn ------------------------------------------------------------------

    async def start(self, conversation: Conversation, messages: list[Message]) -> bool:
        """Insert a new conversation, its first session (the conversation's `session_id`) and its first
        messages, setting their ids. False if its opening key is taken (the same first question sent
        again)."""
        raise NotImplementedError

    async def insert(self, messages: list[Message], activity_at: datetime | None, language: str | None = None
                     ) -> bool:
        """Insert messages (a question and its answer slot, or a slot alone), setting their ids, with
        `activity_at` move the conversation's last activity, and with `language` record the language
        the customer now writes in. False on a conflict: a position or a clientMessageId taken, the
        conversation gone."""
        raise NotImplementedError

    async def take_over(self, slot: Message, owner: uuid.UUID, lease_until: datetime) -> bool:
        """Compare-and-set: `owner` takes over an answer slot whose lease has run out."""
        raise NotImplementedError

    async def abandon(self, slot: Message) -> bool:
        """Compare-and-set: free an answer slot whose lease has run out, and mark its question failed."""
        raise NotImplementedError

    async def store_reply(self, slot: Message, owner: uuid.UUID, question: Message | None) -> bool:
        """The owner's write of the reply set on `slot` (and, with `question`, a failed question
        marked complete). False if `owner` no longer holds the slot."""
        raise NotImplementedError

    async def release(self, slot: Message, question: Message, owner: uuid.UUID, count: bool) -> bool:
        """The owner frees its slot unanswered and marks the question failed (`count`: one more
        failed turn for the conversation). False if `owner` no longer held it."""
        raise NotImplementedError

    async def renew_leases(self, leases: dict[int, uuid.UUID], lease_until: datetime) -> None:
        """Move the lease of each answer slot (id -> owner) still answered by its owner."""
        raise NotImplementedError

    async def exists(self, conversation_id: int) -> bool:
        raise NotImplementedError

    async def ping(self) -> None:
        """A statement that touches nothing (/healthz); DatabaseUnavailable if it cannot run."""
        raise NotImplementedError

    # --- A person in the conversation (handoff.py) -------------------------------

    async def store_for_staff(self, conversation_id: int, question: Message) -> str | None:
        """Store the customer's question for staff, if a person is on the conversation: its
        last activity moves, and it waits again if a staff member had answered. The handoff
        state, or None if the assistant has the conversation (handed back or closed meanwhile)."""
        raise NotImplementedError

    async def request_person(self, conversation_id: int, messages: list[Message], now: datetime,
                             notify_if_before: datetime) -> bool | None:
        """If the assistant has the conversation: put it in "waiting" and store `messages` (the
        question, if any, then the notice). Whether staff are to be emailed (not since
        `notify_if_before`), or None if a person was already on it (nothing stored)."""
        raise NotImplementedError

    async def staff_reply(self, conversation_id: int, reply: Message) -> bool:
        """Store a staff member's reply and put the conversation in "staff". False if a reply
        with its token was stored before."""
        raise NotImplementedError

    async def hand_back(self, conversation_id: int, notice: Message, close: bool) -> bool:
        """If a person is on the conversation: return it to the assistant and store the notice
        (`close`: recording that staff closed it). False if the assistant had it."""
        raise NotImplementedError

    async def forget(self, session_ids: list[uuid.UUID] | None = None, conversation_ids: list[int] | None = None,
                     idle_before: datetime | None = None) -> tuple[list[int], list[uuid.UUID], int]:
        """Delete these conversations (with `idle_before`: those still idle since then) and every
        message in them, even while messages arrive: the
        conversations' rows are locked first, so a message arriving meanwhile either lands
        before (and is deleted) or fails on its conversation being gone. `session_ids` name the
        conversations of these sessions: every session of them ends with them. The ids of the
        conversations deleted, the ids of every session they had, and how many messages went."""
        raise NotImplementedError


class Conflict(Exception):
    """A position taken by another request: the rules read again (raised inside a backend only)."""
