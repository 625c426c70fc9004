"""What GET /healthz answers (docs/health.md): the database's, the cache's and the LLM's states.

A served worker checks them in the background, every CHAT_HEALTH_INTERVAL, from a task its
lifespan starts (chatsite/asgi.py), and /healthz answers the latest report at once. A probe
that asked each dependency itself waited for every answer in its worker's event loop: five or
six awaits of the network, and under load each await waits for a turn of the loop behind every
stream's pieces, so the probe took several times what a bare request did (/healthz p99 517 ms
where /livez answered in a fraction of it, docs/benchmarks.md). A load balancer that waits
too long takes a busy instance out, when it is needed most. The price: a report is up to
CHAT_HEALTH_INTERVAL old (plus CHAT_HEALTH_TIMEOUT when a dependency does not answer).

Where no report is fresh (Django's test client, `runserver`, a worker that has only just
started, a checker that stopped), /healthz checks there and then, as it always did.
"""

import asyncio
import logging
import time
from dataclasses import dataclass

from django.conf import settings

from . import llm, runtime

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Report:
    body: dict
    status: int  # HTTP: 503 only when the database is down
    at: float  # time.monotonic() when it was taken


_latest: Report | None = None


async def report() -> Report:
    """The latest report if it is fresh, else one taken now."""
    fresh_for = settings.CHAT_HEALTH_INTERVAL + settings.CHAT_HEALTH_TIMEOUT + 1
    if _latest is not None and time.monotonic() - _latest.at <= fresh_for:
        return _latest
    return await check()


async def check() -> Report:
    """Ask the database, the cache and the LLM's circuit breaker, each at once and each for at
    most CHAT_HEALTH_TIMEOUT: a database that does not answer still leaves the others reported.

    What is not ok is logged when it was ok in the last report (or there is none): once an
    outage, not once a second."""
    rt, timeout = runtime.current(), settings.CHAT_HEALTH_TIMEOUT
    before = _latest.body if _latest is not None else {}
    database, (cache_state, llm_state) = await asyncio.gather(
        _within(timeout, _database_state(rt, before), "down", quiet=before.get("database") == "down"),
        _within(timeout, _cache_and_llm_states(rt), ("unknown", {"llm": "unknown"}),
                quiet=before.get("cache") == "unknown"),
    )
    if cache_state == "down" and before.get("cache") != "down":
        logger.warning("health check: cache down")
    if database != "ok":
        status, code = "down", 503
    elif cache_state == "down" or llm_state["llm"] == "down":
        status, code = "degraded", 200
    else:
        status, code = "ok", 200
    return Report({"status": status, "database": database, "cache": cache_state, **llm_state}, code,
                  time.monotonic())


def start() -> asyncio.Task | None:
    """Keep the report fresh from now on, in the running loop (a served worker's lifespan); None
    with CHAT_HEALTH_INTERVAL = 0 (each probe checks). Cancel the task to stop."""
    if not settings.CHAT_HEALTH_INTERVAL:
        return None
    return asyncio.get_running_loop().create_task(_keep())


async def _keep() -> None:
    global _latest
    try:
        while True:
            try:
                _latest = await check()
            except Exception:  # noqa: BLE001 - a bug here must not stop the reports; probes check meanwhile
                logger.exception("health check failed")
            await asyncio.sleep(settings.CHAT_HEALTH_INTERVAL)
    finally:
        _latest = None


async def _within(timeout: float, check, unanswered, quiet: bool):
    """What `check` finds, or `unanswered` if it has not found it within `timeout` seconds."""
    try:
        return await asyncio.wait_for(check, timeout)
    except TimeoutError:
        if not quiet:
            logger.warning("health check: no answer within %ss", timeout)
        return unanswered


async def _database_state(rt: runtime.Runtime, before: dict) -> str:
    try:
        await rt.store.ping()
    except Exception:  # noqa: BLE001 - any failure means the database is not usable
        if before.get("database") != "down":
            logger.exception("health check: database down")
        return "down"
    return "ok"


async def _cache_and_llm_states(rt: runtime.Runtime) -> tuple[str, dict]:
    cache_state = await rt.gateway.ping()
    # Read like limits.admit reads it: from Redis, else what this worker holds while Redis is away.
    [down] = await rt.gateway.round_trip(reads=[llm.DOWN])
    return cache_state, llm.health(down)
