"""What an operator graphs: the site's Prometheus metrics (docs/metrics.md).

The instruments are defined here, once; each is counted by a single line where
its outcome is decided (turns.py, limits.py, llm.py, chatsite/asgi.py), and
`GET /metrics` (views.metrics) writes them out.

A served site runs several gunicorn workers, and a scrape lands on one of them,
so the counts live in prometheus-client's multiprocess mode: each worker writes
its own to a file in PROMETHEUS_MULTIPROC_DIR, and a scrape adds up every
worker's files, those of workers that have exited included (gunicorn.conf.py
makes the directory, empties it when the site starts and marks dead workers).
Without that directory (the tests' in-process clients, `manage.py runserver`)
they are this process's own.

Labels have few values each (no session, address or path in a label), so a
site's series stay in the hundreds.
"""

import os
import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

TURNS = Counter(
    "chat_turns", "Chat turns by how they ended: complete, stopped (by the customer), failed "
    "(the LLM failed), for_staff (stored for a person, not answered by the assistant).", ["outcome"])
TURN_SECONDS = Histogram(
    "chat_turn_seconds", "From the question stored to its complete reply stored.",
    buckets=(0.25, 0.5, 1, 2, 4, 8, 15, 30, 60))
FIRST_TOKEN_SECONDS = Histogram(
    "chat_llm_first_token_seconds", "From the call to the LLM to the first words of its reply.",
    buckets=(0.1, 0.25, 0.5, 1, 2, 4, 8, 15))
LLM_CALLS = Counter("chat_llm_calls", "Calls to the LLM (not the offline responder).")
LLM_FAILURES = Counter(
    "chat_llm_failures", "Failed calls to the LLM by cause: refused, dns, tls, reset, connection, "
    "timeout, http_<status>, bad_reply, empty_reply, too_large.", ["cause"])
TOKENS_SPENT = Counter("chat_tokens_spent", "LLM tokens counted against the daily budgets.")
BUDGET_SPENT = Counter(
    "chat_budget_spent_turns", "Turns answered by the offline responder because a daily token "
    "budget was spent, by budget: session, address, site.", ["budget"])
REFUSALS = Counter(
    "chat_refusals", "Requests refused by a limit: rate_limit_ip, rate_limit_session, "
    "rate_limit_new-session, too_many_connections (429), overloaded (503).", ["reason"])
# Per worker (a `pid` label each): a worker holds a long poll for up to CHAT_UPDATES_WAIT
# seconds and a streamed turn for as long as the LLM writes.
HELD = Gauge(
    "chat_held_requests", "Requests a worker holds open now: stream (a streamed turn), "
    "long_poll (GET /api/updates).", ["kind"], multiprocess_mode="liveall")

# Per worker, set each time its places are adjusted (chatsite/admission.py, 20 times a second).
TURN_PLACES = Gauge(
    "chat_turn_places", "Chat turns a worker serves at once now (places: as many as keep its event "
    "loop's lag under CHAT_LOOP_LAG_TARGET), turns in flight, and turns waiting for a place.",
    ["kind"], multiprocess_mode="liveall")
GC_PAUSE_SECONDS = Histogram(
    "chat_gc_pause_seconds", "A worker's garbage collections on its clock (chatsite/collector.py), each "
    "a pause of every request the worker serves: young every 0.1 s, full every 5 minutes.",
    ["generation"], buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1))


def turn_ended(status: str, started: float) -> None:
    """A reply stored: complete (its latency observed) or stopped."""
    TURNS.labels(status).inc()
    if status == "complete":
        TURN_SECONDS.observe(time.monotonic() - started)


def exposition(extra: CollectorRegistry) -> tuple[bytes, str]:
    """The text a scrape answers: every worker's counts (or this process's), then `extra`."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=directory)
    else:
        registry = REGISTRY
    return generate_latest(registry) + generate_latest(extra), CONTENT_TYPE_LATEST
