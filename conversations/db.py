"""Database work from async views through the ORM, and what happens when the database fails.

The views are async; Django's ORM is not. `in_db_thread` runs a block of ORM
work in a worker thread and hands that thread's connection back to the pool
when the block ends, so no connection is held while a turn waits for the LLM.
(The turn store's PostgreSQL backend runs on the event loop instead, with the
same rule for failures: conversations/store/postgres.py.)

The decision for a failing database (a connection killed by a restart,
failover or pg_terminate_backend; a statement or lock timeout, see
settings.DATABASE_STATEMENT_TIMEOUT_MS; no connection free in the pool): a
block that is safe to run twice is retried once, on a fresh connection
(`retry_once`, or `in_db_thread(..., retry=True)`: every write of the turn
store is, see store/base.py). If that fails too, DatabaseUnavailable answers 503
`database_unavailable` with Retry-After, never a 500.
"""

import asyncio
import contextvars
import functools
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from asgiref.sync import async_to_sync, sync_to_async
from django.db import InterfaceError, OperationalError, connections

from .errors import DatabaseUnavailable

logger = logging.getLogger(__name__)

T = TypeVar("T")
P = ParamSpec("P")

# Set while synchronous code (the admin, a command, the shell, a test) waits for async work:
# that work's ORM statements then run in the caller's thread, inside its transaction.
_sync_caller: contextvars.ContextVar[bool] = contextvars.ContextVar("sync_caller", default=False)

# A lost or broken connection, a timeout, an exhausted pool: what a fresh connection may cure.
FAILURES = (OperationalError, InterfaceError)


def retry_once(func: Callable[..., T], *args, **kwargs) -> T:
    """Run a block of database work; if the database fails, run it once more on a fresh connection."""
    try:
        return func(*args, **kwargs)
    except FAILURES as error:
        logger.warning("database failed, retrying once on a fresh connection: %r", error)
        connections.close_all()  # drops the broken connection; the retry gets a new one
    return func(*args, **kwargs)


async def in_db_thread(func: Callable[..., T], *args, retry: bool = False, **kwargs) -> T:
    """Run `func(*args, **kwargs)` in a worker thread, then hand its database connection back.

    A database failure (after one retry, with `retry=True`) raises DatabaseUnavailable.
    """

    def run() -> T:
        try:
            return _run(func, args, kwargs, retry)
        finally:
            connections.close_all()

    return await sync_to_async(run, thread_sensitive=False)()


async def in_orm_thread(func: Callable[..., T], *args, retry: bool = False, **kwargs) -> T:
    """in_db_thread; or, under synchronous code waiting through `blocking`, in that code's own
    thread, on its connection and inside its transaction."""
    if _sync_caller.get():
        return await sync_to_async(_run, thread_sensitive=True)(func, args, kwargs, retry)
    return await in_db_thread(func, *args, retry=retry, **kwargs)


def blocking(func: Callable[P, Awaitable[T]]) -> Callable[P, T]:
    """An async function, callable from synchronous code (see _sync_caller). Where an event loop
    already runs in the calling thread (Playwright's sync API, a notebook), from a thread of its own."""

    @functools.wraps(func)
    def call(*args: P.args, **kwargs: P.kwargs) -> T:
        token = _sync_caller.set(True)
        try:
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                return async_to_sync(func)(*args, **kwargs)
            context = contextvars.copy_context()
            with ThreadPoolExecutor(1) as thread:
                return thread.submit(lambda: context.run(_closing(async_to_sync(func)), *args, **kwargs)).result()
        finally:
            _sync_caller.reset(token)

    return call


def _closing(func: Callable[..., T]) -> Callable[..., T]:
    def call(*args, **kwargs) -> T:
        try:
            return func(*args, **kwargs)
        finally:
            connections.close_all()

    return call


def _run(func: Callable[..., T], args, kwargs, retry: bool) -> T:
    try:
        return retry_once(func, *args, **kwargs) if retry else func(*args, **kwargs)
    except FAILURES as error:
        logger.warning("database unavailable: %r", error)
        raise DatabaseUnavailable from error
