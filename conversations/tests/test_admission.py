"""A worker's places for turns follow its event loop's lag (chatsite/admission.py)."""

import asyncio
import time

import pytest

from chatsite.admission import FLOOR, START, TICK, Admission


@pytest.fixture(autouse=True)
def bounds(settings):
    settings.CHAT_MAX_TURNS_IN_FLIGHT = 1000
    settings.CHAT_LOOP_LAG_TARGET = 0.02
    settings.CHAT_TURN_QUEUE_SECONDS = 5


def test_a_loop_that_falls_behind_gets_fewer_places_and_one_that_keeps_up_gets_them_back():
    admission = Admission()
    admission.places = 400
    admission.adjust(0.1)
    assert admission.places == 300
    for _ in range(100):
        admission.adjust(0.1)
    assert admission.places == FLOOR

    admission.adjust(0.0)
    assert admission.places == FLOOR  # no turn wants one: no more places
    admission.in_flight = FLOOR
    admission.adjust(0.0)
    assert admission.places == FLOOR + 1


def test_the_places_stay_under_the_cap(settings):
    settings.CHAT_MAX_TURNS_IN_FLIGHT = 70
    admission = Admission()
    admission.places, admission.in_flight = 68, 68
    admission.adjust(0.0)
    assert admission.places == 70 and admission.limit == 70


def test_waiting_turns_get_places_first_come_first_served_as_turns_leave():
    async def scenario():
        admission = Admission()
        admission.places = 2
        assert await admission.enter() and await admission.enter()
        order = []

        async def turn(name):
            assert await admission.enter()
            order.append(name)

        waiting = [asyncio.ensure_future(turn(name)) for name in "abc"]
        await asyncio.sleep(0.05)
        assert order == [] and len(admission.waiting) == 3
        admission.leave()
        await asyncio.sleep(0)
        admission.leave()
        await asyncio.gather(*waiting[:2])
        return order, admission, waiting[2]

    order, admission, last = asyncio.run(scenario())
    assert order == ["a", "b"] and admission.in_flight == 2 and last.cancelled()


def test_more_places_let_the_waiting_turns_in():
    async def scenario():
        admission = Admission()
        admission.places = 1
        assert await admission.enter()
        waiting = [asyncio.ensure_future(admission.enter()) for _ in range(3)]
        await asyncio.sleep(0)
        admission.adjust(0.0)  # the loop keeps up and turns wait: a place more
        await asyncio.sleep(0)
        return [w.done() for w in waiting], admission.in_flight

    done, in_flight = asyncio.run(scenario())
    assert done == [True, False, False] and in_flight == 2


async def full() -> tuple[Admission, asyncio.Future]:
    """One place, taken, and a turn waiting for it."""
    admission = Admission()
    admission.places = 1
    assert await admission.enter()
    waiting = asyncio.ensure_future(admission.enter())
    await asyncio.sleep(0)
    return admission, waiting


def test_a_turn_that_leaves_while_it_waits_takes_no_place():
    async def scenario():
        admission, gone = await full()
        gone.cancel()
        await asyncio.gather(gone, return_exceptions=True)
        admission.leave()
        return admission

    admission = asyncio.run(scenario())
    assert admission.in_flight == 0 and not admission.waiting


def test_a_place_given_as_the_wait_runs_out_is_used_not_lost(settings):
    settings.CHAT_TURN_QUEUE_SECONDS = 0.05

    async def scenario():
        admission, waiting = await full()
        time.sleep(0.1)  # the wait runs out while the loop is busy...
        admission.leave()  # ...and the place comes in the same step
        return await waiting, admission

    got, admission = asyncio.run(scenario())
    assert got is True and admission.in_flight == 1 and not admission.waiting


def test_the_places_follow_a_loop_held_up_by_work():
    """Served: the lag is read from the loop itself. A loop blocked for 0.1 s at a time loses places
    within a few ticks."""
    async def scenario():
        admission = Admission()
        admission.start()
        assert admission.places == START
        for _ in range(5):
            time.sleep(0.1)
            await asyncio.sleep(TICK * 1.5)
        places = admission.places
        await admission.stop()
        return places

    assert asyncio.run(scenario()) < START // 2


def test_with_no_lag_target_the_cap_is_the_only_bound(settings):
    settings.CHAT_LOOP_LAG_TARGET = 0

    async def scenario():
        admission = Admission()
        admission.start()
        return admission.task, admission.limit

    assert asyncio.run(scenario()) == (None, 1000)
