"""A worker collects garbage on its clock (chatsite/collector.py): young cycles go within a tick,
what lives longer is moved where young collections no longer walk it, and the oldest generation is
collected every OLD seconds. Each test runs the collector in an event loop of its own, as a worker's
lifespan starts it, and puts the test process's collector back as it was."""

import asyncio
import gc
import weakref

import pytest
from prometheus_client import REGISTRY

from chatsite import collector


class Node:
    """A container the collector tracks, with a weak reference to tell when it is freed."""

    def __init__(self):
        self.other = None


def cycle() -> tuple[Node, weakref.ref]:
    a, b = Node(), Node()
    a.other, b.other = b, a
    return a, weakref.ref(a)


async def freed(ref: weakref.ref, seconds: float) -> bool:
    for _ in range(round(seconds / 0.05)):
        if ref() is None:
            return True
        await asyncio.sleep(0.05)
    return ref() is None


@pytest.fixture
def run_collector(monkeypatch):
    """Run a coroutine with the collector started in its loop, then undo what starting it did."""
    thresholds = gc.get_threshold()

    def run(test, old=collector.OLD):
        monkeypatch.setattr(collector, "OLD", old)

        async def main():
            task = collector.start()
            try:
                await test()
            finally:
                task.cancel()

        try:
            asyncio.run(main())
        finally:
            gc.unfreeze()
            gc.set_threshold(*thresholds)

    return run


def test_a_cycle_made_after_the_start_is_freed_within_a_tick_without_allocations(run_collector):
    async def test():
        ref = cycle()[1]  # garbage at once; nothing else is allocated to start Python's own collection
        assert await freed(ref, 10 * collector.YOUNG), "the young collection on the clock did not free it"

    run_collector(test)


def test_what_outlives_a_tick_is_moved_to_the_oldest_generation(run_collector):
    async def test():
        kept = Node()
        await asyncio.sleep(3 * collector.YOUNG)
        assert any(o is kept for o in gc.get_objects(generation=2)), \
            "an object alive across ticks is still walked by every young collection"
        assert not any(o is kept for o in gc.get_objects(generation=0) + gc.get_objects(generation=1))

    run_collector(test)


def test_what_the_worker_held_at_its_start_is_frozen(run_collector):
    held = Node()

    async def test():
        assert gc.get_freeze_count() > 0
        assert not any(o is held for generation in range(3) for o in gc.get_objects(generation=generation))

    run_collector(test)


def pauses(generation: str) -> float:
    return REGISTRY.get_sample_value("chat_gc_pause_seconds_count", {"generation": generation}) or 0.0


def test_a_cycle_that_outlived_a_tick_waits_for_the_full_collection(run_collector):
    young, full = pauses("young"), pauses("full")

    async def test():
        node, ref = cycle()
        await asyncio.sleep(3 * collector.YOUNG)  # promoted to the oldest generation, then dropped
        del node
        await asyncio.sleep(3 * collector.YOUNG)
        assert ref() is not None, "young collections walk the oldest generation"
        assert await freed(ref, 10.0), "the full collection every OLD seconds did not come"

    run_collector(test, old=1.0)
    # Each pause is in the metric an operator graphs (chat_gc_pause_seconds).
    assert pauses("young") >= young + 9 and pauses("full") >= full + 1
