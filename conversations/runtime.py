"""What a worker process makes when it starts serving and closes when it stops (the ASGI
lifespan, chatsite/asgi.py): the turn store, the shared-state gateway, the LLM client, the
lease keeper, the open pages' sightings and the waiting pages' watcher.

In a served worker on PostgreSQL the store is the event loop's own (store/postgres.py) and
the gateway has a redis.asyncio client; everywhere else (the embedded default on SQLite,
Django's test clients, management commands, the shell) `current()` is the embedded runtime:
the ORM store in worker threads and the gateway through django-redis, or this process's own
counters without Redis. Tests make a fresh one with `Runtime.open()` on their own loop.
"""

import asyncio
import logging
import uuid

from django.conf import settings
from django.db import connections

from . import llm, updates
from .errors import DatabaseUnavailable
from .models import Message, lease_end
from .shared_state import Gateway
from .store.base import TurnStore
from .store.orm import OrmStore

logger = logging.getLogger(__name__)


class LeaseKeeper:
    """Renews the leases of every turn this worker answers, together: one UPDATE every
    0.6 x CHAT_TURN_LEASE_SECONDS for all of them however many wait on the LLM, so that only
    a dead worker's leases run out (turns.py)."""

    def __init__(self, store: TurnStore):
        self.store = store
        self.leases: dict[int, uuid.UUID] = {}
        self.task: asyncio.Task | None = None

    async def hold(self, slot: Message, owner: uuid.UUID) -> None:
        """Keep `slot`'s lease renewed until cancelled (when the turn ends)."""
        self.leases[slot.pk] = owner
        loop = asyncio.get_running_loop()
        if self.task is None or self.task.done() or self.task.get_loop() is not loop:
            self.task = loop.create_task(self._keep())
        try:
            await loop.create_future()
        finally:
            self.leases.pop(slot.pk, None)

    async def _keep(self) -> None:
        every = settings.CHAT_TURN_LEASE_SECONDS * 0.6
        while self.leases:
            await asyncio.sleep(every)
            if not self.leases:  # every turn ended meanwhile
                return
            try:
                await self.store.renew_leases(dict(self.leases), lease_end())
            except DatabaseUnavailable:
                pass  # logged; tried again at the next renewal


# Seconds between two writes of the pages seen (Sightings).
SIGHTINGS_EVERY = 1.0


class Sightings:
    """The sessions whose open page asked while their "seen" was due (models.Session.seen_due),
    written together: one UPDATE every SIGHTINGS_EVERY for all of them, where 10,000 open pages
    made one a poll, a third of their polls (docs/benchmarks.md, "What a waiting page's poll costs").

    A worker that stops or a database that fails loses at most one batch of them: a last-seen
    time has a minute's resolution, and each of those pages marks it again at its next poll."""

    def __init__(self, store: TurnStore):
        self.store = store
        self.due: set[uuid.UUID] = set()
        self.task: asyncio.Task | None = None

    def add(self, session_id: uuid.UUID) -> None:
        self.due.add(session_id)
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._write())

    async def _write(self) -> None:
        while self.due:
            await asyncio.sleep(SIGHTINGS_EVERY)
            await self.flush()

    async def flush(self) -> None:
        due, self.due = self.due, set()
        if due:
            try:
                await self.store.seen(due)
            except DatabaseUnavailable:
                pass  # logged by the store; the pages mark themselves seen again at their next poll

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
        await self.flush()


class Runtime:
    def __init__(self, store: TurnStore, gateway: Gateway, llm_client: llm.Client | None = None):
        self.store = store
        self.gateway = gateway
        self.llm = llm_client
        self.leases = LeaseKeeper(store)
        # A served worker's (start()); the embedded runtime writes each at once, since the test
        # client's loop ends with its request.
        self.sightings: Sightings | None = None
        self._watcher: updates.Watcher | None = None

    async def seen(self, session_id: uuid.UUID) -> None:
        """The session's open page asked while its "seen" was due: mark it (Sightings)."""
        if self.sightings is None:
            await self.store.seen([session_id])
        else:
            self.sightings.add(session_id)

    @property
    def watcher(self) -> updates.Watcher:
        """The waiting pages' watcher of the running loop (the embedded runtime may serve several
        loops, one after another, as tests do)."""
        loop = asyncio.get_running_loop()
        if self._watcher is None or self._watcher.loop is not loop:
            self._watcher = updates.Watcher(loop)
        return self._watcher

    @classmethod
    async def open(cls) -> "Runtime":
        """The runtime of a worker serving on the running loop."""
        store: TurnStore = OrmStore()
        if connections["default"].vendor == "postgresql":
            from .store.postgres import PostgresStore

            store = await PostgresStore.open()
        client = None
        if settings.OPENAI_API_KEY:  # none for the offline responder
            try:
                client = llm.Client()
            except Exception:  # noqa: BLE001 - each call then makes a client of its own
                logger.exception("the worker's LLM client could not be made")
        runtime = cls(store, Gateway.open(), client)
        logger.info("turn store: %s", type(store).__name__)
        return runtime

    async def close(self) -> None:
        if self.leases.task is not None:
            self.leases.task.cancel()
        if self.sightings is not None:
            await self.sightings.close()
        close = getattr(self.store, "close", None)
        if close is not None:
            await close()
        await self.gateway.close()
        if self.llm is not None:
            await self.llm.close()


_embedded = Runtime(OrmStore(), Gateway())
_served: dict[asyncio.AbstractEventLoop, Runtime] = {}


def current() -> Runtime:
    """The runtime of the running loop's worker, or the embedded one."""
    try:
        return _served.get(asyncio.get_running_loop(), _embedded)
    except RuntimeError:
        return _embedded


async def start() -> Runtime:
    """Open this worker's runtime on the running loop (the ASGI lifespan's startup)."""
    runtime = await Runtime.open()
    runtime.sightings = Sightings(runtime.store)
    _served[asyncio.get_running_loop()] = runtime
    return runtime


async def stop() -> None:
    runtime = _served.pop(asyncio.get_running_loop(), None)
    if runtime is not None:
        await runtime.close()
