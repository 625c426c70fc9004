"""What open pages waiting for a staff reply cost the site: `python -m bench.waiting`.

The site runs as deployed (the Procfile's web command, ONE uvicorn worker, its
own PostgreSQL database and redis-server). N pages each hold a long poll open
(GET /api/updates, re-asked as soon as it answers, as the page does), and this
measures side by side in one run:

1. the worker's CPU per second with no page open, then with N waiting (from
   /proc), its memory (RSS) before and after they connect, the Redis commands
   and the PostgreSQL connections the waiting costs;
2. how long a staff reply takes to reach its waiting page (staff replies are
   stored from this process through conversations/handoff.py, as the admin does);
3. the same two with Redis stopped (the watcher then asks the database).

It prints a Markdown section for docs/benchmarks.md.
"""

import argparse
import asyncio
import json
import os
import random
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import servers

ROOT = servers.ROOT


class Page:
    """One open chat page: a keep-alive connection that re-asks GET /api/updates at once."""

    def __init__(self, session_id: str, conversation_id: int):
        self.session_id, self.conversation_id = session_id, conversation_id
        self.after, self.state = 1, "assistant"
        self.answers = 0
        self.staff_seen_at: float | None = None

    async def run(self, port: int, stop: asyncio.Event, headers: str = "") -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while not stop.is_set():
                writer.write(
                    f"GET /api/updates?after={self.after}&state={self.state} HTTP/1.1\r\n"
                    f"Host: 127.0.0.1\r\nX-Session-Id: {self.session_id}\r\n{headers}\r\n".encode()
                )
                await writer.drain()
                body = await read_response(reader)
                self.answers += 1
                for message in body["messages"]:
                    self.after = max(self.after, message["seq"])
                    if message["role"] == "staff" and self.staff_seen_at is None:
                        self.staff_seen_at = time.monotonic()
                self.state = body["handoff"]
        finally:
            writer.close()


async def read_response(reader: asyncio.StreamReader) -> dict:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    headers = dict(line.lower().split(b":", 1) for line in head.split(b"\r\n")[1:] if b":" in line)
    if b"content-length" in headers:
        raw = await reader.readexactly(int(headers[b"content-length"]))
    else:  # chunked: the API's responses carry no Content-Length
        raw = b""
        while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
            raw += (await reader.readexactly(size + 2))[:-2]
        await reader.readuntil(b"\r\n")
    body = json.loads(raw)
    if status != 200:
        raise RuntimeError(f"/api/updates answered {status}: {body}")
    return body


def seed(count: int) -> list[tuple[str, int]]:
    """`count` conversations of a question and an answer, an hour old."""
    from conversations.tests import data

    made = data.conversations(count, turns=1)
    return [(str(conversation.session_id), conversation.pk) for conversation in made]


def staff_user():
    from django.contrib.auth.models import User

    return User.objects.get_or_create(username="bench-staff", defaults={"is_staff": True})[0]


async def parked(redis, timeout: float = 120) -> None:
    """Until every page has asked once and waits: each first ask reads Redis, so until its
    GETs stop for two seconds."""
    seen, quiet_since, deadline = -1, time.monotonic(), time.monotonic() + timeout
    while time.monotonic() - quiet_since < 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.25)
        gets = redis.command_calls().get("get", 0)
        if gets != seen:
            seen, quiet_since = gets, time.monotonic()


async def measure_cpu(site: servers.WebServer, seconds: float) -> float:
    """The worker's CPU seconds per second over `seconds`."""
    before = site.cpu_seconds()
    await asyncio.sleep(seconds)
    return (site.cpu_seconds() - before) / seconds


async def wake_latencies(pages: list[Page], count: int) -> list[float]:
    """Reply as staff to `count` waiting pages, one after another; seconds until each page has it."""
    from asgiref.sync import sync_to_async

    from conversations import handoff

    user = await sync_to_async(staff_user)()
    latencies = []
    for page in random.sample([p for p in pages if p.staff_seen_at is None], count):
        await sync_to_async(handoff.staff_reply)(page.conversation_id, user, "Bench", "Hello.", f"b{page.after}")
        sent = time.monotonic()
        while page.staff_seen_at is None and time.monotonic() - sent < 30:
            await asyncio.sleep(0.01)
        latencies.append((page.staff_seen_at or float("inf")) - sent)
        await asyncio.sleep(0.2)
    return latencies


async def scenario(args, site, redis, db) -> dict:
    results: dict = {"pages": args.pages, "seconds": args.seconds, "wait": args.wait}
    worker = site.workers()[0]
    results["idle_cpu"] = await measure_cpu(site, args.seconds / 2)
    results["rss_before_kib"] = servers.rss_kib(worker)

    pages = [Page(session_id, pk) for session_id, pk in await asyncio.to_thread(seed, args.pages)]
    stop = asyncio.Event()
    tasks = [asyncio.ensure_future(page.run(site.port, stop)) for page in pages]
    await parked(redis)
    calls = redis.command_calls()
    answers = sum(page.answers for page in pages)
    results["waiting_cpu"] = await measure_cpu(site, args.seconds)
    results["rss_waiting_kib"] = servers.rss_kib(worker)
    results["polls_per_second"] = (sum(page.answers for page in pages) - answers) / args.seconds
    after = redis.command_calls()
    results["redis_calls_per_second"] = {
        name: (after.get(name, 0) - calls.get(name, 0)) / args.seconds
        for name in after if after.get(name, 0) != calls.get(name, 0)
    }
    results["db_connections"] = len(db.backends())
    results["wake_seconds"] = await wake_latencies(pages, args.wakes)

    redis.stop()
    await asyncio.sleep(2)
    results["redis_down_cpu"] = await measure_cpu(site, args.seconds / 2)
    results["redis_down_wake_seconds"] = await wake_latencies(pages, max(3, args.wakes // 4))

    stop.set()
    failed = [task.exception() for task in tasks if task.done() and not task.cancelled() and task.exception()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    if failed:
        raise RuntimeError(f"{len(failed)} pages failed, e.g. {failed[0]!r}")
    return results


def render(results: dict, machine: str) -> str:
    n = results["pages"]
    extra_cpu = results["waiting_cpu"] - results["idle_cpu"]
    per_1000 = extra_cpu / n * 1000
    rss = (results["rss_waiting_kib"] - results["rss_before_kib"]) / n
    wake, down = results["wake_seconds"], results["redis_down_wake_seconds"]
    redis_calls = ", ".join(f"{name} {rate:.1f}/s" for name, rate in sorted(results["redis_calls_per_second"].items()))
    return f"""## Pages waiting for a staff reply (`python -m bench.waiting`)

{n} open pages each hold a long poll (`GET /api/updates`, asked again as soon as it answers) on one
uvicorn worker, with Redis, `CHAT_UPDATES_WAIT={results['wait']:g}`; {machine}.

| | value |
| --- | --- |
| worker CPU, no page open | {results['idle_cpu'] * 100:.1f} % of a core |
| worker CPU, {n} pages waiting | {results['waiting_cpu'] * 100:.1f} % of a core |
| **CPU per 1,000 waiting pages** | **{per_1000 * 1000:.0f} ms per second** ({per_1000 * 100:.1f} % of a core) |
| **memory per waiting page** | **{rss:.1f} KiB** (worker RSS {results['rss_before_kib'] // 1024} -> {results['rss_waiting_kib'] // 1024} MiB) |
| polls answered (the wait ran out, asked again) | {results['polls_per_second']:.1f} per second |
| Redis commands while they wait | {redis_calls or 'none'} |
| PostgreSQL connections of the worker meanwhile | {results['db_connections']} |
| staff reply to page, median / max of {len(wake)} | {statistics.median(wake):.2f} s / {max(wake):.2f} s |
| with Redis stopped: worker CPU, {n} pages waiting | {results['redis_down_cpu'] * 100:.1f} % of a core |
| with Redis stopped: staff reply to page, median / max of {len(down)} | {statistics.median(down):.2f} s / {max(down):.2f} s |

A waiting page costs a coroutine, an `asyncio.Event` and its open connection; no database
connection and no thread. Every `CHAT_UPDATES_TICK` (0.5 s) the worker's watcher reads the versions
of all the conversations waited on in one `MGET`; a page's wait ends after `CHAT_UPDATES_WAIT` (25 s)
and the page asks again, which costs a request and one short query. With Redis stopped the watcher asks
PostgreSQL instead, one query per tick for all of them.
"""


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.waiting", description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the measured phase")
    parser.add_argument("--wakes", type=int, default=20, help="staff replies whose delivery is timed")
    parser.add_argument("--wait", type=float, default=25.0,
                        help="the site's CHAT_UPDATES_WAIT; longer than --seconds leaves the watcher alone measured")
    parser.add_argument("--database", default=os.environ.get(
        "BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/chatsite_bench_waiting"))
    args = parser.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="chatsite-bench-waiting-"))
    db = servers.BenchDatabase(args.database)
    db.create()
    redis = site = None
    try:
        redis = servers.BenchRedis(tmp)
        env = {
            "DJANGO_SECRET_KEY": secrets.token_urlsafe(50), "DJANGO_DEBUG": "0",
            "DJANGO_SECURE_SSL_REDIRECT": "0", "DATABASE_URL": db.url, "REDIS_URL": redis.url,
            "WEB_CONCURRENCY": "1", "CHAT_UPDATES_WAIT": str(args.wait),
            # Every page waits from this one address, all on one worker.
            "CHAT_MAX_HELD_PER_ADDRESS": "0", "CHAT_MAX_HELD": "0",
        }
        subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
                       cwd=ROOT, env={**os.environ, **env}, check=True)
        os.environ.update(env, DJANGO_SETTINGS_MODULE="chatsite.settings")
        import django

        django.setup()
        site = servers.WebServer("site", env, tmp / "site.log")
        results = asyncio.run(scenario(args, site, redis, db))
    finally:
        if site:
            site.stop()
        if redis:
            redis.stop()
        from django.db import connections

        connections.close_all()
        db.drop()
    print(json.dumps(results, indent=1))
    print(render(results, f"{os.cpu_count()} cores shared with other work"))


if __name__ == "__main__":
    main()
