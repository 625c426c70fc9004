"""What the worker processes share through Redis, and what happens when Redis is not there.

This is the only module that talks to Redis, knows which cache backend runs,
or catches a Redis error. Redis only speeds things up and shares counters
between workers; the database is the truth. The decisions:

- No Redis configured (the embedded default: the local-memory cache): counters,
  flags and values live in this process, in `_local`. Each worker then counts
  on its own.
- Redis fails (stopped, paused, unreachable): the failure is logged, the call
  falls back as above (a read is a miss, a counter counts in this process), and
  Redis is left alone for RETRY_AFTER seconds, so that a stalled Redis costs
  one socket timeout per worker every few seconds, not one per call.

Two clients reach the same keys (the cache's own key function): django-redis
for synchronous callers (the ORM's threads, the admin, commands), and, in a
served worker, the redis.asyncio client that the worker's runtime opens, so
that a turn's round trips never leave the event loop (`round_trip`).

Values are JSON or plain integers (JSONSerializer below, set in
settings.CACHES), never pickle, which django-redis uses by default and which
runs whatever code anyone who can write to Redis put there. A value that is not
JSON is logged and read as a miss.
"""

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

import redis.asyncio
from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.cache import cache
from django_redis.serializers.json import JSONSerializer as _JSONSerializer

logger = logging.getLogger(__name__)

RETRY_AFTER = 5.0
_down_until = 0.0

# Counters kept in this process (without Redis, and while it is skipped), and values while it is
# skipped; without Redis, values live in the local-memory cache (settings.CACHES).
_local: dict[str, tuple[Any, float]] = {}
_local_lock = threading.Lock()


def uses_redis() -> bool:
    """Whether the cache is Redis, shared by every worker (else it is this process's own)."""
    return str(settings.CACHES["default"]["BACKEND"]).startswith("django_redis")


def available() -> bool:
    """Whether Redis is configured and not being skipped after a failure."""
    return uses_redis() and time.monotonic() >= _down_until


def _failed(action: str, error: Exception) -> None:
    global _down_until
    _down_until = time.monotonic() + RETRY_AFTER
    logger.warning("cache %s failed, skipping the cache for %ss: %r", action, RETRY_AFTER, error)


def reset() -> None:
    """Forget a past failure and everything counted in this process (tests)."""
    global _down_until
    _down_until = 0.0
    with _local_lock:
        _local.clear()
    if not uses_redis():
        cache.clear()


def key(name: str) -> str:
    return str(cache.make_key(name))


# --- Synchronous calls (threads, the admin, commands) -----------------------------


def get(name: str) -> Any:
    if not available():
        return _local_get(name)
    try:
        return cache.get(name)
    except Exception as error:  # noqa: BLE001 - any cache failure is a miss
        _failed("get", error)
        return None


def get_many(names: list[str]) -> dict[str, Any] | None:
    """The values found, by name; None when there is no shared cache to ask (the caller decides)."""
    if not available():
        return None
    try:
        return cache.get_many(names)
    except Exception as error:  # noqa: BLE001
        _failed("get_many", error)
        return None


def set_many(values: dict[str, Any], ttl: int) -> None:
    if not available():
        for name, value in values.items():
            _local_set(name, value, ttl)
        return
    try:
        cache.set_many(values, ttl)
    except Exception as error:  # noqa: BLE001 - the entries are only a speed-up
        _failed("set", error)


def delete_many(names: list[str]) -> None:
    """Drop entries. While Redis is skipped this skips it too rather than pay a timeout per
    call: its entries die by their TTL, and none is trusted without the database."""
    with _local_lock:
        for name in names:
            _local.pop(name, None)
    if not uses_redis():
        cache.delete_many(names)
    if not names or not available():
        return
    try:
        cache.delete_many(names)
    except Exception as error:  # noqa: BLE001
        _failed("delete", error)


# --- One round trip: counters, values, reads -------------------------------------

# (key, amount, ttl): INCRBY, with the TTL set when the counter is new.
Counter = tuple[str, int, int]
# (key, value, ttl): SET.
Value = tuple[str, Any, int]


class Gateway:
    """A round trip to Redis; in a served worker on its event loop (`client`), elsewhere through
    django-redis in a thread. Made by the worker's runtime (runtime.py)."""

    def __init__(self, client: redis.asyncio.Redis | None = None):
        self.client = client
        # A served worker's cache is settled: its key function is looked up once, not through
        # the per-context cache proxy for every key of every round trip (a dozen a turn).
        self.key = cache.make_key if client is not None else key

    @classmethod
    def open(cls) -> "Gateway":
        if not uses_redis():
            return cls()
        timeout = float(settings.REDIS_SOCKET_TIMEOUT)
        # At most this many commands at once; past it a command waits for a connection.
        pool = redis.asyncio.BlockingConnectionPool.from_url(
            settings.REDIS_URL, max_connections=100, timeout=2,
            socket_timeout=timeout, socket_connect_timeout=timeout,
        )
        return cls(redis.asyncio.Redis(connection_pool=pool))

    async def close(self) -> None:
        if self.client is not None:
            await self.client.aclose()

    async def ping(self) -> str:
        """The cache's state for /healthz: "ok", "down", or "local" (no Redis configured). Not
        logged here: health.py logs a change."""
        if not uses_redis():
            return "local"
        try:
            if self.client is not None:
                await self.client.ping()
            else:
                await _in_thread(lambda: cache.client.get_client().ping())  # type: ignore[attr-defined]
            return "ok"
        except Exception:  # noqa: BLE001
            return "down"

    async def round_trip(self, counters: Sequence[Counter] = (), values: Sequence[Value] = (),
                         claims: Sequence[Value] = (), reads: Sequence[str] = (),
                         deletes: Sequence[str] = ()) -> list[Any]:
        """One pipeline: INCRBY each counter, SET each value, SET each claim if absent, DELETE
        `deletes`, then read `reads`. Returns the counters' totals, then whether each value and
        claim was set, then what was read (None: a miss). Without Redis, or when it fails, the
        same in this process (see the module docstring)."""
        writes = [(*value, False) for value in values] + [(*claim, True) for claim in claims]
        if not (counters or writes or reads or deletes):
            return []
        if deletes:
            with _local_lock:
                for name in deletes:
                    _local.pop(name, None)
            if not uses_redis():
                cache.delete_many(list(deletes))
        if available():
            try:
                if self.client is not None:
                    pipe = self.client.pipeline(transaction=False)
                    _fill(pipe, self.key, counters, writes, reads, deletes)
                    return _results(await pipe.execute(), counters, writes, reads)
                client = cache.client.get_client(write=True)  # type: ignore[attr-defined]
                return await _in_thread(_pipeline_sync, client.pipeline(transaction=False),
                                        counters, writes, reads, deletes)
            except Exception as error:  # noqa: BLE001 - any Redis failure: counted in this process
                _failed("pipeline", error)
        return _local_round_trip(counters, writes, reads)



_in_thread = sync_to_async(lambda func, *args: func(*args), thread_sensitive=False)


def _pipeline_sync(pipe, counters, values, reads, deletes) -> list[Any]:
    _fill(pipe, key, counters, values, reads, deletes)
    return _results(pipe.execute(), counters, values, reads)


def _fill(pipe, key, counters, values, reads, deletes) -> None:
    for name, amount, ttl in counters:
        full = key(name)
        pipe.incrby(full, amount)
        pipe.expire(full, ttl, nx=True)
    for name, value, ttl, only_if_absent in values:
        pipe.set(key(name), value, ex=ttl, nx=only_if_absent)
    if deletes:
        pipe.delete(*[key(name) for name in deletes])
    if reads:
        pipe.mget([key(name) for name in reads])


def _results(results: list, counters, values, reads) -> list[Any]:
    totals = [int(total) for total in results[: 2 * len(counters): 2]]
    stored = [bool(ok) for ok in results[2 * len(counters): 2 * len(counters) + len(values)]]
    return totals + stored + ([_plain(value) for value in results[-1]] if reads else [])


def _plain(value: bytes | None) -> int | None:
    """An entry as read raw: django-redis stores an integer as its digits. Anything else (written
    by someone else) is a miss."""
    if value is None or not value.isdigit() or len(value) > 18:
        return None
    return int(value)


# --- In this process -------------------------------------------------------------


def _local_get(name: str) -> Any:
    now = time.monotonic()
    with _local_lock:
        value, expires = _local.get(name, (None, now))
    if expires > now:
        return value
    if not uses_redis():  # values without Redis: the local-memory cache
        return cache.get(name)
    return None


def _local_set(name: str, value: Any, ttl: int, only_if_absent: bool = False) -> bool:
    if not uses_redis():
        if only_if_absent:
            return cache.add(name, value, ttl)
        cache.set(name, value, ttl)
        return True
    now = time.monotonic()
    with _local_lock:
        if len(_local) > 100_000:  # forget expired entries now and then
            for stale in [k for k, (_, expires) in _local.items() if expires <= now]:
                del _local[stale]
        if only_if_absent and _local.get(name, (None, now))[1] > now:
            return False
        _local[name] = (value, now + ttl)
        return True


def _local_add(name: str, amount: int, ttl: int) -> int:
    now = time.monotonic()
    with _local_lock:
        count, expires = _local.get(name, (0, now + ttl))
        if expires <= now or not isinstance(count, int):
            count, expires = 0, now + ttl
        _local[name] = (count + amount, expires)
        return count + amount


def _local_round_trip(counters, values, reads) -> list[Any]:
    totals = [_local_add(name, amount, ttl) for name, amount, ttl in counters]
    stored = [_local_set(name, value, ttl, only_if_absent) for name, value, ttl, only_if_absent in values]
    read = [_local_get(name) for name in reads]
    return totals + stored + [value if isinstance(value, int) else None for value in read]


class JSONSerializer(_JSONSerializer):
    """django-redis's JSON serializer, with a value that does not decode read as a miss (None)."""

    def loads(self, value: bytes):
        try:
            return super().loads(value)
        except (ValueError, UnicodeDecodeError, RecursionError) as error:
            logger.warning("cache value is not JSON, read as a miss: %s", type(error).__name__)
            return None
