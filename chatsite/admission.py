"""How many chat turns a worker serves at once: as many as its event loop keeps up with.

Offered more turns than its CPU serves, a worker that starts them all serves none of them well:
every stream waits for the CPU between two of its pieces, a load balancer's /healthz waits
behind them all (over 2 s, and answered 503, with 1,000 streams on two workers:
docs/benchmarks.md), and no more turns get served for it. So a turn takes a place before it is
served (chatsite/asgi.py), and the number of places follows the event loop's lag, read every
TICK from how late a timer fires:

- the lag over CHAT_LOOP_LAG_TARGET: a quarter fewer places;
- under it, with every place taken or turns waiting for one: a tenth more (at least one);
- never fewer than FLOOR, never more than CHAT_MAX_TURNS_IN_FLIGHT.

A turn that finds no place waits for one, first come first served, for at most
CHAT_TURN_QUEUE_SECONDS, and is then refused as a turn past the cap always was (503 overloaded
with Retry-After). Waiting, it holds its connection and its question, nothing else: the turns
being served stream at the speed the LLM sends, and /healthz answers at once. Little's law sets
how long a turn takes in all (the turns offered at once over the turns served a second), the
queue or not; with it the time is spent before a turn starts, not in every stream's pieces.

A lag, not a number of turns: the turns a worker can serve at once depend on how long the LLM
takes (a 2 s model and a 20 s one differ tenfold), its lag does not. CHAT_LOOP_LAG_TARGET = 0
leaves the places at CHAT_MAX_TURNS_IN_FLIGHT, as before this module.
"""

import asyncio
import collections

from django.conf import settings

from conversations import metrics

TICK = 0.05
# Places a worker keeps whatever its lag: a garbage collection or a burst of pages may slow the
# loop for a tick, and a site with a few customers must not queue them.
FLOOR = 8
# Places when the lag is first read (a worker starting, a burst's first tick): growing from here
# a tenth a tick, it reaches a thousand within 1.5 s if the loop keeps up.
START = 64


class Admission:
    """A worker's places for turns (one per event loop; chatsite/asgi.py holds it). The settings
    are read as they are used."""

    def __init__(self):
        self.places: int | None = None  # None: the ceiling (the lag is not read)
        self.in_flight = 0
        self.waiting: collections.deque[asyncio.Future] = collections.deque()
        self.task: asyncio.Task | None = None

    @property
    def limit(self) -> int:
        ceiling = settings.CHAT_MAX_TURNS_IN_FLIGHT or 10**9
        return ceiling if self.places is None else min(self.places, ceiling)

    def start(self) -> None:
        """Read the loop's lag from now on (the worker's lifespan)."""
        if settings.CHAT_LOOP_LAG_TARGET and self.task is None:
            self.places = START
            self.task = asyncio.get_running_loop().create_task(self._watch())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
            self.task = None

    async def enter(self) -> bool:
        """Take a place, waiting for one at most CHAT_TURN_QUEUE_SECONDS; False: none came (refuse
        the turn). A True must be followed by leave()."""
        if self.in_flight < self.limit and not self.waiting:
            self.in_flight += 1
            return True
        if not settings.CHAT_TURN_QUEUE_SECONDS:
            return False
        place = asyncio.get_running_loop().create_future()
        self.waiting.append(place)
        try:
            async with asyncio.timeout(settings.CHAT_TURN_QUEUE_SECONDS):
                await place
        except TimeoutError:
            pass
        except BaseException:  # the request cancelled (the worker stopping)
            self._give_up(place)
            raise
        if place.done() and not place.cancelled():
            return True  # given a place, perhaps as the wait ran out
        self._give_up(place)
        return False

    def _give_up(self, place: asyncio.Future) -> None:
        if place.done() and not place.cancelled():
            self.leave()  # given a place it will not use: the next one waiting has it
        else:
            place.cancel()
            self.waiting.remove(place)

    def leave(self) -> None:
        self.in_flight -= 1
        self._admit_waiting()

    def _admit_waiting(self) -> None:
        while self.waiting and self.in_flight < self.limit:
            place = self.waiting.popleft()
            if not place.done():
                place.set_result(None)
                self.in_flight += 1

    def adjust(self, lag: float) -> None:
        """One tick's lag: fewer places if it is over the target, more if they are all taken."""
        ceiling = settings.CHAT_MAX_TURNS_IN_FLIGHT or 10**9
        places = self.places or START
        if lag > settings.CHAT_LOOP_LAG_TARGET:
            self.places = max(FLOOR, min(places, ceiling) * 3 // 4)
        elif self.waiting or self.in_flight >= places:
            self.places = min(ceiling, places + max(1, places // 10))
            self._admit_waiting()

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            asked = loop.time()
            await asyncio.sleep(TICK)
            self.adjust(max(0.0, loop.time() - asked - TICK))
            metrics.TURN_PLACES.labels("places").set(self.limit)
            metrics.TURN_PLACES.labels("in_flight").set(self.in_flight)
            metrics.TURN_PLACES.labels("waiting").set(len(self.waiting))
