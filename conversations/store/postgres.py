"""The turn store on PostgreSQL through psycopg's async pool: a served worker's statements never
leave its event loop (no thread hand-off, no ORM query building: docs/benchmarks.md).

The pool is configured like Django's own (settings.DATABASES: the same database,
statement and lock timeouts, DATABASE_POOL_TIMEOUT to wait for a connection) and
shares DATABASE_POOL_MAX_SIZE with it: half of it here (CHAT_STORE_POOL_MAX_SIZE),
the rest Django's (the admin, history pages, commands).
"""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import psycopg
from django.conf import settings
from django.db import connections
from django.utils import timezone
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from ..errors import DatabaseUnavailable
from ..models import Conversation, DeviceLink, Handoff, Message, Session
from .base import Conflict, ConversationState, TurnStore

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Every column, so that no field of what is read is deferred (reading one would be a
# synchronous query on the event loop).
_MESSAGE_FIELDS = [field.attname for field in Message._meta.concrete_fields]
_CONVERSATION_FIELDS = [field.attname for field in Conversation._meta.concrete_fields]
_INSERTED = [field for field in Message._meta.concrete_fields if not field.primary_key]
_STARTED = [field for field in Conversation._meta.concrete_fields if not field.primary_key]
_CONVERSATION = Message._meta.get_field("conversation")
_M: str = Message._meta.db_table
_C: str = Conversation._meta.db_table
_S: str = Session._meta.db_table
_L: str = DeviceLink._meta.db_table

# A message with its conversation as a session sees it: the conversation's `session_id` read from
# the session's row (Conversation.objects.of_session is the rule; base.recent says why).
_SELECT = "SELECT {}, {} FROM {m} JOIN {c} ON {c}.id = {m}.conversation_id JOIN {s} ".format(
    ", ".join(f"{_M}.{f.column}" for f in Message._meta.concrete_fields),
    ", ".join(f"{_S}.session_id" if f.attname == "session_id" else f"{_C}.{f.column}"
              for f in Conversation._meta.concrete_fields), m=_M, c=_C, s=_S)
_RECENT = _SELECT + f"ON {_S}.conversation_id = {_C}.id WHERE {_S}.session_id = %s AND {_C}.last_activity_at >= %s"
# The first session, which started the conversation, and only while it has not ended.
_OPENING = _SELECT + (f"ON {_S}.session_id = {_C}.session_id "
                      f"WHERE {_C}.opening_client_message_id = %s AND {_C}.created_at >= %s")
_ROW = "({})".format(", ".join(["%s"] * len(_INSERTED)))
_INSERT_COLUMNS = f"INSERT INTO {_M} ({', '.join(str(f.column) for f in _INSERTED)}) VALUES "
# The conversation and its first session, in one statement.
_START = ("WITH started AS (INSERT INTO {} ({}) VALUES ({}) ON CONFLICT DO NOTHING RETURNING id, session_id), "
          "first_session AS (INSERT INTO {} (session_id, conversation_id, created_at, last_seen_at, label) "
          "SELECT session_id, id, %s, %s, '' FROM started) SELECT id FROM started").format(
    _C, ", ".join(str(f.column) for f in _STARTED), ", ".join(["%s"] * len(_STARTED)), _S)
_REPLY = (
    f"UPDATE {_M} SET content = %s, status = %s, created_at = %s, model = %s, latency_ms = %s, "
    f"prompt_tokens = %s, completion_tokens = %s WHERE id = %s AND lease_owner = %s"
)
_REPLY_REVIVING = (
    f"WITH reply AS ({_REPLY} RETURNING id) "
    f"UPDATE {_M} SET status = 'complete' WHERE id = %s AND EXISTS (SELECT 1 FROM reply) "
    f"RETURNING (SELECT count(*) FROM reply)"
)
_RENEW = (
    f"UPDATE {_M} SET lease_until = %s WHERE status = 'answering' "
    f"AND (id, lease_owner) IN (SELECT * FROM unnest(%s::bigint[], %s::uuid[]))"
)
_ABANDONED = "id = %s AND status = 'answering' AND lease_until < %s"
# A waiting page's look at its conversation (base.state): the newest message, and whether an
# answer slot is being written, each by the conversation's (conversation_id, seq) index.
_STATE = (
    f"SELECT {_C}.id, {_C}.handoff, latest.seq, latest.status, "
    f"EXISTS (SELECT 1 FROM {_M} WHERE conversation_id = {_C}.id AND status = 'answering' "
    f"AND lease_until > %s), {_S}.last_seen_at "
    f"FROM {_S} JOIN {_C} ON {_C}.id = {_S}.conversation_id "
    f"LEFT JOIN LATERAL (SELECT seq, status FROM {_M} WHERE conversation_id = {_C}.id "
    f"ORDER BY seq DESC LIMIT 1) latest ON true "
    f"WHERE {_S}.session_id = %s AND {_C}.last_activity_at >= %s"
)
_NEXT_SEQ = f"SELECT coalesce(max(seq) + 1, 0) FROM {_M} WHERE conversation_id = %s"

# psycopg's default: a statement run this many times on a connection is prepared there.
PREPARE_THRESHOLD = 5

# The database errors a fresh connection may cure: a connection killed, a statement or lock timeout.
FAILURES = (psycopg.OperationalError, psycopg.InterfaceError)


class PostgresStore(TurnStore):
    def __init__(self, pool: AsyncConnectionPool, params: dict | None = None):
        self.pool = pool
        self.params = params or {}
        # /healthz's own connection (ping): opened when first asked, kept while it works.
        self.health: psycopg.AsyncConnection | None = None
        self.health_lock = asyncio.Lock()
        self.warming: asyncio.Future | None = None

    @classmethod
    async def open(cls) -> "PostgresStore":
        params = connections["default"].get_connection_params()
        # Django's cursor class and its type adapters (whose Python timestamp loader cost more
        # than any other step of reading a conversation): psycopg's own, in C, read timestamps
        # in the session's time zone, which is UTC as in Django's connections.
        params.pop("cursor_factory", None)
        params.pop("context", None)
        # Each statement prepared on a connection after psycopg's default of 5 uses, unless
        # settings.DATABASE_PREPARED_STATEMENTS is off (a pooler that does not keep them); Django
        # turns them off for all its connections, which this pool would otherwise inherit.
        params["prepare_threshold"] = PREPARE_THRESHOLD if settings.DATABASE_PREPARED_STATEMENTS else None
        params["options"] = f"{params.get('options', '')} -c TimeZone=UTC".strip()
        # Named in pg_stat_activity unless PGAPPNAME names every connection of the site.
        params.setdefault("fallback_application_name", "chatsite turns")
        pool = AsyncConnectionPool(
            kwargs={**params, "autocommit": True}, min_size=1, max_size=settings.CHAT_STORE_POOL_MAX_SIZE,
            timeout=settings.DATABASE_POOL_TIMEOUT, name="turns", open=False,
        )
        await pool.open(wait=False)  # a database down at start is no reason not to serve
        # Named apart from the pool's in pg_stat_activity (unless PGAPPNAME names every connection).
        store = cls(pool, {**params, "autocommit": True, "fallback_application_name": "chatsite health"})
        # The check's connection opened now, beside the start, not by the first /healthz.
        store.warming = asyncio.ensure_future(store.ping())
        store.warming.add_done_callback(lambda done: done.cancelled() or done.exception())
        return store

    async def close(self) -> None:
        if self.warming is not None:
            self.warming.cancel()
        await self.pool.close()
        if self.health is not None:
            await self.health.close()

    # --- Running statements ----------------------------------------------------

    async def run(self, block: Callable[[psycopg.AsyncConnection], Awaitable[T]]) -> T:
        """Run `block` (safe to run twice) on a pooled connection; on a database failure, once more
        on a fresh one. DatabaseUnavailable if that fails too, or if no connection can be had."""
        try:
            async with self._connection() as conn:
                return await block(conn)
        except PoolTimeout as error:
            logger.warning("database unavailable: %r", error)
            raise DatabaseUnavailable from error
        except FAILURES as error:
            logger.warning("database failed, retrying once on a fresh connection: %r", error)
            # The pool's idle connections may have died with this one (a restart,
            # pg_terminate_backend): test them all before taking one again.
            await self.pool.check()
        try:
            async with self._connection() as conn:
                return await block(conn)
        except FAILURES as error:  # PoolTimeout is one
            logger.warning("database unavailable: %r", error)
            raise DatabaseUnavailable from error

    @contextlib.asynccontextmanager
    async def _connection(self):
        """A connection from the pool. Waited for DATABASE_POOL_TIMEOUT, and then, if the pool has
        connections and all are busy (a burst: the wait is a queue, not a failure), up to
        DATABASE_POOL_QUEUE_TIMEOUT in all; if it has none (the database is unreachable), no longer."""
        try:
            conn = await self.pool.getconn(timeout=settings.DATABASE_POOL_TIMEOUT)
        except PoolTimeout:
            if not self.pool.get_stats().get("pool_size"):
                raise
            conn = await self.pool.getconn(
                timeout=max(0.0, settings.DATABASE_POOL_QUEUE_TIMEOUT - settings.DATABASE_POOL_TIMEOUT))
        try:
            yield conn
        finally:
            await self.pool.putconn(conn)

    async def _rows(self, sql: str, params: list) -> list[tuple]:
        async def read(conn):
            return await (await conn.execute(sql, params)).fetchall()

        return await self.run(read)

    async def _count(self, sql: str, params: list) -> int:
        async def write(conn):
            return (await conn.execute(sql, params)).rowcount

        return await self.run(write)

    # --- Reading ---------------------------------------------------------------

    async def recent(self, session_id, conversation_id, active_since, limit):
        sql, params = _RECENT, [session_id, active_since]
        if conversation_id is not None:
            sql, params = sql + f" AND {_M}.conversation_id = %s", [*params, conversation_id]
        return _messages(await self._rows(sql + f" ORDER BY {_M}.seq DESC LIMIT %s", [*params, limit]))

    async def opening(self, opening_key, started_since, limit):
        return _messages(await self._rows(_OPENING + f" ORDER BY {_M}.seq DESC LIMIT %s",
                                          [opening_key, started_since, limit]))

    async def sent_before(self, conversation_id, client_message_id):
        sql = (f"SELECT {', '.join(_MESSAGE_FIELDS)} FROM {_M} WHERE conversation_id = %s "
               f"AND client_message_id = %s AND role IN ('user', 'assistant')")
        rows = await self._rows(sql, [conversation_id, client_message_id])
        return [Message.from_db("default", _MESSAGE_FIELDS, row) for row in rows]

    async def newest_seq(self, conversation_id):
        [(seq,)] = await self._rows(f"SELECT max(seq) FROM {_M} WHERE conversation_id = %s", [conversation_id])
        return seq

    async def state(self, session_id, active_since):
        rows = await self._rows(_STATE, [timezone.now(), session_id, active_since])
        return ConversationState(*rows[0]) if rows else None

    async def seen(self, session_ids):
        now = timezone.now()
        await self._count(f"UPDATE {_S} SET last_seen_at = %s WHERE session_id = ANY(%s) AND last_seen_at < %s",
                          [now, list(session_ids), now - Session.SEEN_RESOLUTION])

    async def ping(self):
        """On a connection of its own, not one of the pool's: the pool's connections may all be busy
        (10,000 waiting pages asking again together, a thousand turns), which is no reason to
        tell the load balancer the database is down and have it take the site out when it is
        busiest; it waited in the pool's queue for 2 s and answered 503 (docs/benchmarks.md).
        A connection that fails is opened again at once, once: a restarted database is up."""
        async with self.health_lock:
            for attempt in (1, 2):
                try:
                    if self.health is None or self.health.closed:
                        self.health = await psycopg.AsyncConnection.connect(**self.params)
                    await self.health.execute("SELECT 1")
                    return
                except BaseException as error:  # a failure, or the check's own timeout: start afresh
                    broken, self.health = self.health, None
                    if broken is not None:
                        with contextlib.suppress(Exception):
                            await broken.close()
                    if not isinstance(error, FAILURES):
                        raise
                    if attempt == 2:
                        raise DatabaseUnavailable from error

    async def exists(self, conversation_id):
        return bool(await self._rows(f"SELECT 1 FROM {_C} WHERE id = %s", [conversation_id]))

    # --- A turn ------------------------------------------------------------------

    async def start(self, conversation, messages):
        async def insert(conn):
            async with conn.transaction():
                found = await (await conn.execute(
                    _START, [*(getattr(conversation, f.attname) for f in _STARTED), conversation.created_at,
                             conversation.created_at])).fetchone()
                if found is None:  # the opening key is taken
                    return False
                conversation.pk = found[0]
                conversation._state.adding = False
                for message in messages:
                    message.conversation = conversation
                await _insert(conn, messages)
                return True

        return await self.run(insert)

    async def insert(self, messages, activity_at, language=None):
        async def insert(conn):
            try:
                await _insert(conn, messages, activity_at, language)
            except psycopg.IntegrityError:
                return False
            return True

        return await self.run(insert)

    async def take_over(self, slot, owner, lease_until):
        return await self._count(f"UPDATE {_M} SET lease_owner = %s, lease_until = %s WHERE {_ABANDONED}",
                                 [owner, lease_until, slot.pk, timezone.now()]) == 1

    async def abandon(self, slot):
        sql = (f"WITH freed AS (DELETE FROM {_M} WHERE {_ABANDONED} RETURNING conversation_id, seq) "
               f"UPDATE {_M} SET status = 'failed' FROM freed WHERE {_M}.conversation_id = freed.conversation_id "
               f"AND {_M}.seq = freed.seq - 1 RETURNING 1")
        return bool(await self._rows(sql, [slot.pk, timezone.now()]))

    async def store_reply(self, slot, owner, question):
        params = [slot.content, slot.status, slot.created_at, slot.model, slot.latency_ms, slot.prompt_tokens,
                  slot.completion_tokens, slot.pk, owner]
        if question is None:
            return await self._count(_REPLY, params) == 1
        rows = await self._rows(_REPLY_REVIVING, [*params, question.pk])
        return bool(rows) and rows[0][0] == 1

    async def release(self, slot, question, owner, count):
        sql = (f"WITH freed AS (DELETE FROM {_M} WHERE id = %s AND lease_owner = %s AND status = 'answering' "
               f"RETURNING id), failed AS (UPDATE {_M} SET status = 'failed' WHERE id = %s "
               f"AND EXISTS (SELECT 1 FROM freed)) "
               f"UPDATE {_C} SET failed_turns = failed_turns + %s WHERE id = %s AND EXISTS (SELECT 1 FROM freed) "
               f"RETURNING 1")
        return bool(await self._rows(sql, [slot.pk, owner, question.pk, int(count), slot.conversation_id]))

    async def renew_leases(self, leases, lease_until):
        await self._count(_RENEW, [lease_until, list(leases), list(leases.values())])

    # --- A person in the conversation --------------------------------------------

    async def _changing(self, change: str, params: list, messages: list[Message], conversation_id: int,
                        returning: Callable[[tuple], Any]) -> Any:
        """In one transaction: `change` (an UPDATE of the conversation's row, conditional on its
        state, RETURNING what `returning` reads), then, if it changed, `messages` at the next
        positions. None if the state did not allow the change; Conflict if a position was taken."""

        async def block(conn):
            try:
                async with conn.transaction():
                    found = await (await conn.execute(change, params)).fetchone()
                    if found is None:
                        return None
                    [(seq,)] = await (await conn.execute(_NEXT_SEQ, [conversation_id])).fetchall()
                    for offset, message in enumerate(messages):
                        message.conversation_id, message.seq = conversation_id, seq + offset
                    await _insert(conn, messages)
                    return returning(found)
            except psycopg.IntegrityError:
                raise Conflict from None

        return await self.run(block)

    async def store_for_staff(self, conversation_id, question):
        return await self._changing(
            f"UPDATE {_C} SET last_activity_at = %s, waiting_since = coalesce(waiting_since, %s) "
            f"WHERE id = %s AND handoff <> 'assistant' RETURNING handoff",
            [question.created_at, question.created_at, conversation_id], [question], conversation_id,
            lambda found: found[0])

    async def request_person(self, conversation_id, messages, now, notify_if_before):
        return await self._changing(
            f"UPDATE {_C} SET handoff = %s, waiting_since = %s, last_activity_at = %s, notified_at = "
            f"CASE WHEN notified_at IS NULL OR notified_at <= %s THEN %s ELSE notified_at END "
            f"WHERE id = %s AND handoff = 'assistant' RETURNING notified_at = %s",
            [Handoff.WAITING, now, now, notify_if_before, now, conversation_id, now], messages, conversation_id,
            lambda found: bool(found[0]))

    async def staff_reply(self, conversation_id, reply):
        stored = (f"SELECT 1 FROM {_M} WHERE conversation_id = %s AND role = 'staff' "
                  f"AND client_message_id = %s")
        if await self._rows(stored, [conversation_id, reply.client_message_id]):
            return False
        try:
            return bool(await self._changing(
                f"UPDATE {_C} SET handoff = %s, waiting_since = NULL, last_activity_at = %s WHERE id = %s "
                f"RETURNING 1", [Handoff.STAFF, reply.created_at, conversation_id], [reply], conversation_id,
                lambda found: True))
        except Conflict:
            if await self._rows(stored, [conversation_id, reply.client_message_id]):
                return False  # the same form sent twice at once
            raise

    async def hand_back(self, conversation_id, notice, close):
        closed = ", closed_at = %s" if close else ""
        return bool(await self._changing(
            f"UPDATE {_C} SET handoff = 'assistant', waiting_since = NULL{closed} "
            f"WHERE id = %s AND handoff <> 'assistant' RETURNING 1",
            [*([notice.created_at] if close else []), conversation_id], [notice], conversation_id,
            lambda found: True))

    async def forget(self, session_ids=None, conversation_ids=None, idle_before=None):
        where, params = (f"id IN (SELECT conversation_id FROM {_S} WHERE session_id = ANY(%s))", [session_ids]) \
            if session_ids is not None else ("id = ANY(%s)", [conversation_ids or []])
        if idle_before is not None:
            where, params = where + " AND last_activity_at < %s", [*params, idle_before]

        async def delete(conn):
            async with conn.transaction():
                # Locked first: a message inserted meanwhile either committed before (and the
                # DELETE below, a later statement, sees it) or waits, then fails on its conversation.
                rows = await (await conn.execute(
                    f"SELECT id FROM {_C} WHERE {where} ORDER BY id FOR UPDATE", params)).fetchall()
                if not rows:
                    return [], [], 0
                ids = [pk for pk, in rows]
                ended = await (await conn.execute(
                    f"DELETE FROM {_S} WHERE conversation_id = ANY(%s) RETURNING session_id", [ids])).fetchall()
                await conn.execute(f"DELETE FROM {_L} WHERE conversation_id = ANY(%s)", [ids])
                messages = (await conn.execute(f"DELETE FROM {_M} WHERE conversation_id = ANY(%s)", [ids])).rowcount
                await conn.execute(f"DELETE FROM {_C} WHERE id = ANY(%s)", [ids])
                return ids, [session_id for session_id, in ended], messages

        return await self.run(delete)


async def _insert(conn: psycopg.AsyncConnection, messages: list[Message], activity_at=None, language=None) -> None:
    """INSERT messages in one statement (with `activity_at`, moving the conversation's last activity,
    with `language`, recording the customer's language, in the same one), setting their ids."""
    sql = _INSERT_COLUMNS + ", ".join([_ROW] * len(messages)) + " RETURNING id, seq"
    params = [getattr(message, field.attname) for message in messages for field in _INSERTED]
    changes = [(column, value) for column, value in (("last_activity_at", activity_at), ("language", language))
               if value is not None]
    if changes:
        sets = ", ".join(f"{column} = %s" for column, _ in changes)
        sql = f"WITH inserted AS ({sql}), moved AS (UPDATE {_C} SET {sets} WHERE id = %s) " \
              f"SELECT id, seq FROM inserted"
        params += [value for _, value in changes] + [messages[0].conversation_id]
    ids = {seq: pk for pk, seq in await (await conn.execute(sql, params)).fetchall()}
    for message in messages:
        message.pk = ids[message.seq]
        message._state.adding = False


def _messages(rows: list[tuple]) -> list[Message]:
    if not rows:
        return []
    split = len(_MESSAGE_FIELDS)
    conversation = Conversation.from_db("default", _CONVERSATION_FIELDS, rows[0][split:])
    messages = []
    for row in rows:
        message = Message.from_db("default", _MESSAGE_FIELDS, row[:split])
        _CONVERSATION.set_cached_value(message, conversation)
        messages.append(message)
    return messages



