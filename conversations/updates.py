"""GET /api/updates: an open page waits here for what changes in its conversation.

A page that waits (for a staff reply, say) must cost neither a database
connection nor a thread, since a thousand of them may wait on one machine.
So a wait is an asyncio.Event, and what wakes it is one watcher task per
worker process:

- Every change to a conversation (a question stored, a reply stored, a staff
  message or notice, a change of handoff state, its deletion) sets a version
  key in the cache, `conversation-version:{id}`, to a new random value, once
  the change is committed: `version_entry()`, sent with the round trip that ends
  a turn (turns.py), a staff action (handoff.py) or a deletion (forget.py).
- A waiter remembers the version it saw before it looked at the database. Every
  CHAT_UPDATES_TICK seconds the watcher reads the versions of all conversations
  waited on in this process in ONE cache round trip (MGET) and wakes the
  waiters whose version moved. A woken waiter looks at the database again (one
  short statement, the turn store's `state`, on the event loop) and answers, or
  waits again after a false alarm.

Served (chatsite/asgi.py), a customer's poll waits below Django (views.park_poll): what
it holds while it waits is its connection, its scope and its waiter, not Django's request,
tasks and middleware; once woken or out of time it goes on to the view, which answers with
what the wait found (PARKED).

Decided for a failing or absent shared cache: when Redis is down (or the cache
is the per-process local-memory one, which another worker's change never
reaches) the watcher instead runs ONE database query per tick for all the
conversations waited on in its process, comparing each one's handoff state and
latest message with what its waiters last saw. Slower per tick, still no
connection or thread held per page. A version lost to a Redis failure at the
moment of a change delays that change by at most one wait (the page asks
again and sees it in the database).
"""

import asyncio
import logging
import os
import random
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db.models import Exists, OuterRef, Subquery
from django.utils import timezone

from . import paging, sessions, shared_state
from .db import in_db_thread
from .models import Conversation, Message, idle_cutoff

if TYPE_CHECKING:
    from .runtime import Runtime

logger = logging.getLogger(__name__)

# The ASGI scope's key for what a customer's poll found when it waited below Django
# (views.park_poll): the view answers with it instead of waiting again.
PARKED = "chat.updates.found"

# A version outlives any wait by far; an expired one only causes a false alarm.
VERSION_SECONDS = 24 * 3600


def version_key(conversation_id: int) -> str:
    return f"conversation-version:{conversation_id}"


def shared_cache() -> bool:
    """Whether every worker process sees the same cache (Redis), so that versions can be trusted."""
    return shared_state.uses_redis()


def new_version() -> int:
    """A conversation's next version: random, so that two workers never write the same one.
    An int, which django-redis stores as it is, so both of shared_state's clients read it."""
    return int.from_bytes(os.urandom(6), "big")


def version_entry(conversation_id: int) -> tuple[str, int, int]:
    """The write that tells the pages waiting on this conversation to look again (a new version),
    for shared_state: sent with the round trip of the change, once it is committed."""
    return version_key(conversation_id), new_version(), VERSION_SECONDS


def _shared_version(conversation_id: int) -> int | None:
    if not shared_cache():
        return None
    return shared_state.get(version_key(conversation_id))


async def _version(rt: "Runtime", conversation_id: int) -> int | None:
    if not shared_cache():
        return None
    [version] = await rt.gateway.round_trip(reads=[version_key(conversation_id)])
    return version


# --- What a page is told ------------------------------------------------------


@dataclass
class Snapshot:
    conversation_id: int
    handoff: str
    turn_in_progress: bool
    # (handoff, seq and status of the latest message): what the watcher
    # compares when it has to ask the database instead of the cache.
    signature: tuple
    messages: list[dict] = field(default_factory=list)
    # More messages after these than one answer holds (paging.py): the page asks again at once.
    has_more: bool = False
    # When the asking session was last seen (models.Session.seen_due).
    seen_at: datetime | None = None


def answering() -> Exists:
    """Whether a conversation (the outer query's row) has an answer slot being written: one EXISTS."""
    return Exists(Message.objects.filter(conversation=OuterRef("pk"), status=Message.Status.ANSWERING,
                                         lease_until__gt=timezone.now()))


def with_latest(conversations):
    """Annotate each conversation's newest message (`last_seq`, `last_status`) and `answering`: the
    state a waiting page compares (the turn store's `state` reads the same in SQL)."""
    latest = Message.objects.filter(conversation=OuterRef("pk")).order_by("-seq")
    return conversations.annotate(
        last_seq=Subquery(latest.values("seq")[:1]),
        last_status=Subquery(latest.values("status")[:1]),
        answering=answering(),
    )


def _snapshot(conversations, after: int) -> Snapshot | None:
    """The staff page's look: the conversation and a page of its messages after `after`."""
    conversation = with_latest(conversations).first()
    if conversation is None:
        return None
    found = Snapshot(
        conversation_id=conversation.pk,
        handoff=conversation.handoff,
        turn_in_progress=conversation.answering,
        signature=(conversation.handoff, conversation.last_seq, conversation.last_status),
    )
    if conversation.last_seq is not None and conversation.last_seq > after:
        found.messages, found.has_more = _page(conversation.pk, after)
    return found


def _page(conversation_id: int, after: int) -> tuple[list[dict], bool]:
    """The messages after `after` that one answer holds (paging.py), and whether more follow. A
    reply being written is not shown until it is stored (its slot then changes)."""
    page = paging.after(Message.objects.filter(conversation_id=conversation_id)
                        .exclude(status=Message.Status.ANSWERING), after)
    return page.messages, page.has_more


async def _look(rt: "Runtime", session_id, after: int) -> tuple[int | None, Snapshot | None]:
    """The version, then the conversation's state: a change committed after the version was read
    moves the version, so the watcher cannot miss it. On the event loop, in one statement
    (TurnStore.state) and a round trip or two to Redis, since every waiting page asks again each
    CHAT_UPDATES_WAIT; the messages, only when there are new ones."""
    [cached] = await rt.gateway.round_trip(reads=[sessions.cache_key(session_id)])
    cached = cached if type(cached) is int else None
    version = await _version(rt, cached) if cached is not None else None
    state = await rt.store.state(session_id, idle_cutoff())
    if state is not None and state.conversation_id != cached:
        # The session was not cached: read the version now and look once more,
        # so that nothing committed in between goes unseen.
        version = await _version(rt, state.conversation_id)
        state = await rt.store.state(session_id, idle_cutoff())
    if state is None:
        return version, None
    found = Snapshot(
        conversation_id=state.conversation_id,
        handoff=state.handoff,
        turn_in_progress=state.answering,
        signature=(state.handoff, state.last_seq, state.last_status),
        seen_at=state.seen_at,
    )
    if state.last_seq is not None and state.last_seq > after:
        found.messages, found.has_more = await in_db_thread(_page, state.conversation_id, after, retry=True)
    return version, found


def page_wait(watcher: "Watcher") -> float:
    """How long one poll of a customer's page waits in this worker: never longer than
    CHAT_UPDATES_WAIT, which proxies' idle timeouts are set above.

    Most polls wait three quarters to all of it, at random: pages opened together (a sale's
    newsletter) would otherwise all run out and ask again together, every CHAT_UPDATES_WAIT.
    A quarter's spread is too little for a crowd that came at once (every page reconnecting
    after a deploy: ten thousand within seconds ran out 1,600 a second, more than two workers
    answer, for several rounds; docs/benchmarks.md). So the watcher books the second each poll
    runs out in (Watcher.book), and a poll whose second is already past its share runs out
    at an earlier one, down to a quarter of the wait: the crowd's next asks are spread over
    three quarters of it, and a worker in its steady state, whose seconds are even, waits
    exactly as before."""
    full = settings.CHAT_UPDATES_WAIT
    if full <= 0:
        return 0.0  # no long poll: each poll answers at once
    return watcher.book(full * random.uniform(0.75, 1.0), earliest=full / 4, mean=full * 0.875)


async def wait(rt: "Runtime", session_id, after: int, state: str | None, timeout: float) -> Snapshot | None:
    """Answer at once if there are messages after `after` or the handoff state is
    not `state`; else wait up to `timeout` seconds for that. None: no such session."""
    return await _wait(rt.watcher, lambda key, seq: _look(rt, key, seq), session_id, after, state, timeout)


def _look_by_id(conversation_id: int, after: int) -> tuple[int | None, Snapshot | None]:
    version = _shared_version(conversation_id)  # first, as in _look
    return version, _snapshot(Conversation.objects.filter(pk=conversation_id), after)


async def wait_for_staff(watcher: "Watcher", conversation_id: int, after: int, state: str | None,
                         timeout: float) -> Snapshot | None:
    """wait() for a staff page (the admin's live view): the conversation by its id, idle or not,
    through the ORM in a thread (a few staff pages, not thousands of customers')."""
    async def look(key, seq):
        return await in_db_thread(_look_by_id, key, seq, retry=True)

    return await _wait(watcher, look, conversation_id, after, state, timeout)


async def _wait(watcher: "Watcher", look, key, after: int, state: str | None, timeout: float) -> Snapshot | None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        async with watcher.looks:
            version, found = await look(key, after)
        if found is None or found.messages or (state is not None and found.handoff != state):
            return found
        remaining = deadline - loop.time()
        if remaining <= 0:
            return found
        waiter = Waiter(found.conversation_id, version, found.signature)
        watcher.add(waiter)
        try:
            # A timeout around the wait, not wait_for: that would make a task of it, kept alive
            # for every waiting page.
            async with asyncio.timeout(remaining):
                await waiter.woken
        except TimeoutError:
            return found
        finally:
            watcher.remove(waiter)


# --- The watcher ----------------------------------------------------------------


# More than a worker's connections to the database (DATABASE_POOL_MAX_SIZE), well under its
# Redis client's (100).
LOOKS_AT_ONCE = 10
# page_wait: no second of a worker's polls' ends holds more than SPREAD times their even share,
# or SECOND_FLOOR (a worker with few pages never moves one).
SPREAD = 1.5
SECOND_FLOOR = 20


@dataclass(eq=False)
class Waiter:
    conversation_id: int
    version: int | None
    signature: tuple
    # Set when the conversation moved. A future, not an asyncio.Event: an Event's deque of waiters
    # and its wait() coroutine were 1.2 KiB of every waiting page (docs/benchmarks.md).
    woken: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())

    def wake(self) -> None:
        if not self.woken.done():  # woken already, or cancelled by its wait's timeout
            self.woken.set_result(None)


class Watcher:
    """Wakes the waiters of one event loop (one worker process) whose conversation changed.

    It runs only while someone waits: the task ends when the last waiter leaves
    and starts again with the next one.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.waiters: dict[int, set[Waiter]] = {}
        self.task: asyncio.Task | None = None
        # Pages looking at their conversation at once (a round trip or two to Redis, a statement):
        # pages opened together (thousands in a second) queue here, each a small future, instead of
        # all at once in the Redis client's pool, whose wait for a connection would time out and
        # fail the look over to the database, twice the work in the middle of the burst.
        self.looks = asyncio.Semaphore(LOOKS_AT_ONCE)
        # page_wait's bookings: how many of this worker's polls run out in each second to come
        # (of the loop's clock), and how many that is in all.
        self.ends: dict[int, int] = {}
        self.booked = 0

    def book(self, wait: float, earliest: float, mean: float) -> float:
        """Book a poll's end `wait` seconds from now, or at the latest earlier second down to
        `earliest` whose bookings are under SPREAD times the even share of this worker's polls
        (those booked, over `mean`, the mean wait); the wait booked. A poll that ends early (woken,
        or its page gone) keeps its booking until its second has passed: it only spreads a little
        more."""
        now = self.loop.time()
        if self.ends and min(self.ends) < now - 1:
            for second in [second for second in self.ends if second < now - 1]:
                self.booked -= self.ends.pop(second)
        share = max(SECOND_FLOOR, SPREAD * self.booked / mean)
        second = drawn = int(now + wait)
        while self.ends.get(second, 0) >= share and second > now + earliest:
            second -= 1
        if self.ends.get(second, 0) >= share:
            second = drawn  # every second is past its share: as drawn
        elif second != drawn:
            wait = max(earliest, second + random.random() - now)
        self.ends[second] = self.ends.get(second, 0) + 1
        self.booked += 1
        return wait

    def add(self, waiter: Waiter) -> None:
        self.waiters.setdefault(waiter.conversation_id, set()).add(waiter)
        if self.task is None or self.task.done():
            self.task = self.loop.create_task(self.run())

    def remove(self, waiter: Waiter) -> None:
        waiting = self.waiters.get(waiter.conversation_id)
        if waiting is not None:
            waiting.discard(waiter)
            if not waiting:
                del self.waiters[waiter.conversation_id]

    async def run(self) -> None:
        while self.waiters:
            await asyncio.sleep(settings.CHAT_UPDATES_TICK)
            try:
                await self.tick()
            except Exception:  # noqa: BLE001 - a failed tick is retried at the next one
                logger.exception("updates: the watcher's tick failed")

    async def tick(self) -> None:
        ids = list(self.waiters)
        if not ids:
            return
        versions = await _in_thread(_versions, ids)
        signatures = await in_db_thread(_signatures, ids) if versions is None else {}
        for conversation_id in ids:
            for waiter in list(self.waiters.get(conversation_id, ())):
                if versions is not None:
                    moved = versions.get(version_key(conversation_id)) != waiter.version
                else:
                    moved = signatures.get(conversation_id) != waiter.signature
                if moved:
                    waiter.wake()


_in_thread = sync_to_async(lambda func, *args: func(*args), thread_sensitive=False)


def _versions(ids: list[int]) -> dict | None:
    """The versions of these conversations in one round trip; None if the cache cannot tell
    (then the database answers instead)."""
    return shared_state.get_many([version_key(conversation_id) for conversation_id in ids])


def _signatures(ids: list[int]) -> dict[int, tuple]:
    """Each conversation's (handoff, latest seq, its status), in one query."""
    rows = with_latest(Conversation.objects.filter(pk__in=ids)).values_list(
        "pk", "handoff", "last_seq", "last_status"
    )
    return {pk: (handoff, last_seq, last_status) for pk, handoff, last_seq, last_status in rows}
