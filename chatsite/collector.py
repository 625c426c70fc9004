"""When a worker collects cyclic garbage: on a clock, not when Python's allocation count says.

Python starts a collection of its young generation when the objects allocated outnumber those
freed by a threshold. A worker serving hundreds of turns at once frees about as many objects as it
allocates (each turn's, when it ends), so that count barely grows: its collections came seconds
apart, and each walked every object allocated since that was still alive, which is every turn in
flight (about 280 objects a stream, 140,000 in a worker holding 500 streams: 20 to 110 ms of CPU).
Each paused every stream of the worker at once (docs/benchmarks.md, "Collections on a clock").

So the worker collects its young generations itself, every YOUNG seconds. Each collection walks
only what was allocated since the last one and is still alive (with 500 streams in a worker: the
awaits of each stream's current piece, and the turns just started; about 1 ms of CPU on average,
at most 12 to 31 ms), frees the cycles among it, and moves the rest to the oldest generation. A
turn's objects end there while it waits on the LLM, and are freed by reference counting when it
ends, without the collector. The oldest generation, where the few cycles end that outlived a tick
(about a hundred objects a second under load), is collected every OLD seconds: one full walk of the
turns in flight every five minutes, not one every few seconds. What the worker loaded to start is
frozen first, out of the collector's sight for good.

Each collection's pause is a metric, chat_gc_pause_seconds. Python's own collections stay on as a
backstop, for a burst that allocates more than BURST objects between two ticks (which reset its
count). This is the generational collector of the site's Python (3.11; 3.12, 3.13 and 3.14.5 and
later have the same); on 3.14.0 to 3.14.4, whose collector was incremental, gc.collect(1) meant
"a young collection and an increment of the old one".
"""

import asyncio
import gc
import time

from conversations import metrics

YOUNG = 0.1
OLD = 300.0
BURST = 50_000


def start() -> asyncio.Task:
    """Freeze what the worker holds once started, and collect on the clock from now on (its lifespan)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(BURST, 10**6, 10**6)
    return asyncio.get_running_loop().create_task(_collect())


async def _collect() -> None:
    ticks = 0
    while True:
        await asyncio.sleep(YOUNG)
        ticks += 1
        full = ticks % round(OLD / YOUNG) == 0
        started = time.perf_counter()
        gc.collect(2 if full else 1)
        metrics.GC_PAUSE_SECONDS.labels("full" if full else "young").observe(time.perf_counter() - started)
