"""The common turn's I/O on the worker's event loop: a PostgreSQL pool, a Redis client, the statements.

Django's ORM is synchronous: its work runs in a worker thread (db.in_db_thread),
and that hand-off, the ORM's query building and django-redis were most of what a
chat turn cost above its own I/O (docs/benchmarks.md). The common turn, a
returning customer's next question (turns.py, "The quick path"), runs its three
statements on psycopg's async pool and its two Redis round trips on
redis.asyncio instead, without leaving the event loop. turns.py decides; this
module only reads and writes, with the same rule for a failing database as
db.py: a statement is retried once on a fresh connection (every statement here
is safe to run twice), then DatabaseUnavailable.

Both are opened when a worker process starts serving (the ASGI lifespan,
chatsite/asgi.py) and closed when it stops. Where nothing opened them (SQLite,
no Redis, Django's test clients, a management command, another event loop)
`ready()` is False and every turn takes the ORM path, which does everything
the quick path does and more.

The pool is configured like Django's own (settings.DATABASES: the same
database, statement and lock timeouts, DATABASE_POOL_TIMEOUT to wait for a
connection) and shares DATABASE_POOL_MAX_SIZE with it: half of it here
(CHAT_QUICK_POOL_MAX_SIZE), the rest Django's, so that a worker still holds at
most DATABASE_POOL_MAX_SIZE connections (at least 2: one in each pool).
"""

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

import psycopg
import redis.asyncio
from django.conf import settings
from django.core.cache import cache
from django.db import connections
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from . import cache_guard
from .errors import DatabaseUnavailable
from .models import Conversation, Message

logger = logging.getLogger(__name__)

_pool: AsyncConnectionPool | None = None
_redis: redis.asyncio.Redis | None = None
_loop: asyncio.AbstractEventLoop | None = None
_make_key: Callable[[str], Any] = str


async def open_clients() -> None:
    """Open the pool and the client on the running loop, if the site runs on PostgreSQL and Redis."""
    global _pool, _redis, _loop, _make_key
    database = connections["default"]
    if database.vendor != "postgresql" or not settings.REDIS_URL:
        return
    params = database.get_connection_params()
    # Django's cursor class and its type adapters (whose Python timestamp loader cost
    # more than any other step of reading a conversation): psycopg's own, in C, read
    # timestamps in the session's time zone, which is UTC as in Django's connections.
    params.pop("cursor_factory", None)
    params.pop("context", None)
    params["options"] = f"{params.get('options', '')} -c TimeZone=UTC".strip()
    # Named in pg_stat_activity unless PGAPPNAME names every connection of the site.
    params.setdefault("fallback_application_name", "chatsite quick turns")
    _pool = AsyncConnectionPool(
        kwargs={**params, "autocommit": True},
        min_size=1,
        max_size=settings.CHAT_QUICK_POOL_MAX_SIZE,
        timeout=settings.DATABASE_POOL_TIMEOUT,
        name="quick-turn",
        open=False,
    )
    await _pool.open(wait=False)  # a database down at start is no reason not to serve
    timeout = float(settings.REDIS_SOCKET_TIMEOUT)
    # At most this many commands at once; past it a command waits for a connection.
    _redis = redis.asyncio.Redis(connection_pool=redis.asyncio.BlockingConnectionPool.from_url(
        settings.REDIS_URL, max_connections=100, timeout=2,
        socket_timeout=timeout, socket_connect_timeout=timeout,
    ))
    _loop = asyncio.get_running_loop()
    _make_key = cache.make_key  # the cache's own, looked up once (`cache` is a per-context proxy)
    logger.info("quick turns on: psycopg async pool (%s connections at most) and redis.asyncio",
                _pool.max_size)


async def close_clients() -> None:
    global _pool, _redis, _loop
    pool, client = _pool, _redis
    _pool = _redis = _loop = None
    if pool is not None:
        await pool.close()
    if client is not None:
        await client.aclose()


def ready() -> bool:
    """Whether this event loop has both, and Redis is not being skipped after a failure."""
    if _loop is None or not cache_guard.available():
        return False
    try:
        return asyncio.get_running_loop() is _loop
    except RuntimeError:
        return False


def pool() -> AsyncConnectionPool:
    assert _pool is not None
    return _pool


def redis_client() -> redis.asyncio.Redis:
    assert _redis is not None
    return _redis


# --- Statements -------------------------------------------------------------------

T = TypeVar("T")

# Every column, so that no field of what is read is deferred (reading one would
# be a query, and a synchronous one on the event loop).
_MESSAGE_FIELDS = [field.attname for field in Message._meta.concrete_fields]
_CONVERSATION_FIELDS = [field.attname for field in Conversation._meta.concrete_fields]
_INSERTED = [field for field in Message._meta.concrete_fields if not field.primary_key]
_CONVERSATION = Message._meta.get_field("conversation")
_M: str = Message._meta.db_table
_C: str = Conversation._meta.db_table

_RECENT = (
    "SELECT {} , {} FROM {m} JOIN {c} ON {c}.id = {m}.conversation_id "
    "WHERE {c}.session_id = %s AND {c}.last_activity_at >= %s"
).format(", ".join(f"{_M}.{f.column}" for f in Message._meta.concrete_fields),
         ", ".join(f"{_C}.{f.column}" for f in Conversation._meta.concrete_fields), m=_M, c=_C)
_ROW = "({})".format(", ".join(["%s"] * len(_INSERTED)))
_INSERT = "INSERT INTO {} ({}) VALUES {}, {} RETURNING id, seq".format(
    _M, ", ".join(str(f.column) for f in _INSERTED), _ROW, _ROW)
_REPLY = (
    f"UPDATE {_M} SET content = %s, status = %s, created_at = %s, model = %s, latency_ms = %s, "
    f"prompt_tokens = %s, completion_tokens = %s WHERE id = %s AND lease_owner = %s"
)

_RENEW = (
    f"UPDATE {_M} SET lease_until = %s WHERE status = %s "
    f"AND (id, lease_owner) IN (SELECT * FROM unnest(%s::bigint[], %s::uuid[]))"
)

# The database errors a fresh connection may cure (psycopg's: a connection killed,
# a statement or lock timeout).
FAILURES = (psycopg.OperationalError, psycopg.InterfaceError)


async def run(block: Callable[[psycopg.AsyncConnection], Awaitable[T]]) -> T:
    """Run `block` (its statements must be safe to run twice) on a pooled connection; on a database
    failure, once more on a fresh one. DatabaseUnavailable if that fails too, or if no connection
    can be had (see _connection)."""
    try:
        async with _connection() as conn:
            return await block(conn)
    except PoolTimeout as error:
        logger.warning("database unavailable: %r", error)
        raise DatabaseUnavailable from error
    except FAILURES as error:
        logger.warning("database failed, retrying once on a fresh connection: %r", error)
        # The pool's idle connections may have died with this one (a restart,
        # pg_terminate_backend): test them all before taking one again.
        await pool().check()
    try:
        async with _connection() as conn:
            return await block(conn)
    except FAILURES as error:  # PoolTimeout is one
        logger.warning("database unavailable: %r", error)
        raise DatabaseUnavailable from error


@contextlib.asynccontextmanager
async def _connection():
    """A connection from the pool. Waited for DATABASE_POOL_TIMEOUT, and then, if the pool has
    connections and all are busy with other turns (a burst: the wait is a queue, not a failure),
    up to DATABASE_POOL_QUEUE_TIMEOUT in all; if it has none (the database cannot be reached), no longer."""
    the_pool = pool()
    try:
        conn = await the_pool.getconn(timeout=settings.DATABASE_POOL_TIMEOUT)
    except PoolTimeout:
        if not the_pool.get_stats().get("pool_size"):
            raise
        conn = await the_pool.getconn(
            timeout=max(0.0, settings.DATABASE_POOL_QUEUE_TIMEOUT - settings.DATABASE_POOL_TIMEOUT))
    try:
        yield conn
    finally:
        await the_pool.putconn(conn)


async def recent_messages(conn: psycopg.AsyncConnection, session_id: uuid.UUID, conversation_id: int | None,
                          active_since: datetime, limit: int) -> list[Message]:
    """sessions.recent_messages, on the event loop: the latest `limit` messages of the session's
    conversation, newest first, each with its conversation; [] if it has none."""
    sql, params = _RECENT, [session_id, active_since]
    if conversation_id is not None:
        sql, params = sql + f" AND {_M}.conversation_id = %s", [*params, conversation_id]
    sql, params = sql + f" ORDER BY {_M}.seq DESC LIMIT %s", [*params, limit]
    rows = await (await conn.execute(sql, params)).fetchall()
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


async def insert_question(conn: psycopg.AsyncConnection, question: Message, slot: Message,
                          activity_at: datetime | None) -> bool:
    """INSERT the question and its answer slot in one statement (and, with `activity_at`, move the
    conversation's last activity in the same one), setting their ids. False on a conflict: a
    position or a clientMessageId taken, the conversation gone."""
    sql = _INSERT
    params = [getattr(message, field.attname) for message in (question, slot) for field in _INSERTED]
    if activity_at is not None:
        sql = (f"WITH inserted AS ({_INSERT}), moved AS (UPDATE {_C} SET last_activity_at = %s WHERE id = %s) "
               f"SELECT id, seq FROM inserted")
        params += [activity_at, question.conversation_id]
    try:
        rows = dict((seq, pk) for pk, seq in await (await conn.execute(sql, params)).fetchall())
    except psycopg.IntegrityError:
        return False
    question.pk, slot.pk = rows[question.seq], rows[slot.seq]
    question._state.adding = slot._state.adding = False
    return True


async def renew_leases(leases: dict[int, uuid.UUID], until: datetime) -> None:
    """Move the lease of each answer slot (id -> owner) still answered by its owner to `until`."""

    async def update(conn):
        await conn.execute(_RENEW, [until, Message.Status.ANSWERING, list(leases), list(leases.values())])

    await run(update)


async def store_reply(slot: Message, owner: uuid.UUID) -> bool:
    """The owner's UPDATE of its answer slot with the reply set on `slot`; False if it no longer owns it."""
    params = [slot.content, slot.status, slot.created_at, slot.model, slot.latency_ms, slot.prompt_tokens,
              slot.completion_tokens, slot.pk, owner]

    async def update(conn):
        return (await conn.execute(_REPLY, params)).rowcount

    return await run(update) == 1


# --- Redis ------------------------------------------------------------------------


def _key(key: str) -> str:
    return str(_make_key(key))  # django-redis's key for it: the same entries


async def redis_round_trip(counters: list[tuple[str, int, int]], sets: list[tuple[str, Any, int]],
                           read: list[str]) -> list[Any] | None:
    """One pipeline: INCRBY each (key, amount, ttl) counter, SET each (key, value, ttl), then MGET
    `read`. The counters' new totals followed by what was read; None if Redis failed (it is then
    skipped for a few seconds, cache_guard) or is being skipped."""
    if not cache_guard.available():
        return None
    try:
        pipe = redis_client().pipeline(transaction=False)
        for key, amount, ttl in counters:
            pipe.incrby(_key(key), amount)
            pipe.expire(_key(key), ttl, nx=True)
        for key, value, ttl in sets:
            pipe.set(_key(key), value, ex=ttl)
        if read:
            pipe.mget([_key(key) for key in read])
        results = await pipe.execute()
    except Exception as error:  # noqa: BLE001 - any Redis failure: the caller goes without
        cache_guard.failed("pipeline", error)
        return None
    totals = [int(total) for total in results[: 2 * len(counters) : 2]]
    return totals + (list(results[-1]) if read else [])
