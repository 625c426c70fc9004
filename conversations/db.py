"""Database work from async views, and what happens when the database fails.

The views are async; Django's ORM is not. `in_db_thread` runs a block of ORM
work in a worker thread and hands that thread's connection back to the pool
when the block ends, so no connection is held while a turn waits for the LLM.
(The common turn does its few statements on the event loop instead, with the
same rule for failures: conversations/loop_io.py.)

The decision for a failing database (a connection killed by a restart,
failover or pg_terminate_backend; a statement or lock timeout, see
settings.DATABASE_STATEMENT_TIMEOUT_MS; no connection free in the pool): a
block that is safe to run twice is retried once, on a fresh connection
(`retry_once`, or `in_db_thread(..., retry=True)`: every write of a turn is,
see turns.py). If that fails too, DatabaseUnavailable answers 503
`database_unavailable` with Retry-After, never a 500.
"""

import logging
from collections.abc import Callable
from typing import TypeVar

from asgiref.sync import sync_to_async
from django.db import InterfaceError, OperationalError, connections

from .errors import DatabaseUnavailable

logger = logging.getLogger(__name__)

T = TypeVar("T")

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
            return retry_once(func, *args, **kwargs) if retry else func(*args, **kwargs)
        except FAILURES as error:
            logger.warning("database unavailable: %r", error)
            raise DatabaseUnavailable from error
        finally:
            connections.close_all()

    return await sync_to_async(run, thread_sensitive=False)()
