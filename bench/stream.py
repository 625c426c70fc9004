"""The streamed turn's load driver: what wrk does for the JSON turn, for `Accept: text/event-stream`.

    python -m bench.stream URL SESSIONS_FILE CONNECTIONS SECONDS [FREE_FILE [TIMEOUT]]

Holds CONNECTIONS streamed turns at once (aiohttp, one process), each connection
taking the sessions of its own slice of SESSIONS_FILE in turn, so that a session
is never in two turns at once (as chat.lua does), for SECONDS, then prints one line
"BENCH {json}" in chat.lua's shape, with a "stream" part: what wrk cannot see.

The stand-in LLM stamps each piece it streams with the time it sent it
(devtools/fake_llm.py, `stamp`), and this client notes the time each one arrives,
on the same machine's clock, so for every streamed turn:

- **time to first token added**: when the first piece reached the client, less
  when the LLM sent it: what the server in between (the site, or the minimal
  streamed turn) and the client's own reading added;
- **stall**: the longest gap between two pieces as the client saw them, less the
  gap the LLM made between the same two: a stream held up in the server;
- **time to first token**: from the request sent to the first piece, for reference
  (the LLM's own first chunk is in it);
- **the client's own lag**: how late a 10 ms timer fires in this process, sampled all
  along: what this driver's own event loop (a thousand streams in one process) adds to
  the two above, which no server can take away.

A turn counts as completed when its `done` event arrives; a non-2xx answer, an
`error` event, a stream that ends without `done`, a socket error and a turn that
starts a new session count as errors. A 503 or 429 makes that connection wait its
Retry-After. Turns in flight when the run ends are cut off (their sessions are not
written to FREE_FILE, as chat.lua does).
"""

import asyncio
import contextlib
import gc
import json
import re
import sys
import time
from collections import Counter, deque

import aiohttp

STAMP = re.compile(rb"<t=(\d+\.\d+)>")
MESSAGE = "What is your return policy?"
HEADERS = {"Content-Type": "application/json", "Accept": "text/event-stream",
           # As a TLS-terminating load balancer would (the site runs with DJANGO_BEHIND_TLS_PROXY=1).
           "X-Forwarded-Proto": "https"}


def percentile(values: list[float], share: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share / 100 * len(ordered)))]


class Driver:
    def __init__(self, url: str, sessions: list[str], connections: int, seconds: float, timeout: float):
        self.url, self.seconds, self.timeout = url + "/api/chat", seconds, timeout
        self.slices = [deque(sessions[i::connections]) for i in range(connections)]
        self.statuses: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.lost = self.starved = self.requests = 0
        self.latency: list[float] = []  # seconds, request to `done`
        self.ttft: list[float] = []  # request to first piece
        self.ttft_added: list[float] = []  # first piece: arrived - sent by the LLM
        self.stall: list[float] = []  # per turn: the longest (gap seen - gap made)
        self.pieces = 0
        self.lag: list[float] = []  # this process's own event loop: how late a timer fires
        self.in_window = True

    async def run(self) -> dict:
        connector = aiohttp.TCPConnector(limit=0, force_close=False)
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            started = time.monotonic()
            tasks = [asyncio.create_task(self.connection(session, free)) for free in self.slices]
            tasks.append(asyncio.create_task(self.own_lag()))
            await asyncio.sleep(self.seconds)
            self.in_window = False
            elapsed = time.monotonic() - started
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        ms = [v * 1000 for v in self.latency]
        return {
            "duration_us": round(elapsed * 1e6), "requests": self.requests, "statuses": dict(self.statuses),
            "lost": self.lost, "starved": self.starved,
            "errors": {"connect": self.errors["connect"], "read": self.errors["read"], "write": 0,
                       "status": self.errors["status"], "timeout": self.errors["timeout"]},
            "latency_us": {"mean": 1000 * sum(ms) / max(len(ms), 1), "p50": 1000 * percentile(ms, 50),
                           "p90": 1000 * percentile(ms, 90), "p99": 1000 * percentile(ms, 99),
                           "max": 1000 * max(ms, default=0)},
            "stream": {
                "turns": len(self.latency),
                "pieces_per_turn": self.pieces / max(len(self.latency), 1),
                "ttft_ms": {"p50": 1000 * percentile(self.ttft, 50), "p99": 1000 * percentile(self.ttft, 99)},
                "ttft_added_ms": {"p50": 1000 * percentile(self.ttft_added, 50),
                                  "p99": 1000 * percentile(self.ttft_added, 99)},
                "stall_ms": {"p50": 1000 * percentile(self.stall, 50), "p99": 1000 * percentile(self.stall, 99),
                             "max": 1000 * max(self.stall, default=0)},
                "event_errors": self.errors["event"],
                "client_lag_ms": {"p50": 1000 * percentile(self.lag, 50), "p99": 1000 * percentile(self.lag, 99),
                                  "max": 1000 * max(self.lag, default=0)},
            },
        }

    async def own_lag(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            asked = loop.time()
            await asyncio.sleep(0.01)
            self.lag.append(max(0.0, loop.time() - asked - 0.01))

    async def connection(self, session: aiohttp.ClientSession, free: deque) -> None:
        while True:
            if not free:
                self.starved += 1
                await asyncio.sleep(1)
                continue
            sid = free.popleft()
            backoff = await self.turn(session, sid, free)
            if backoff:
                await asyncio.sleep(backoff)

    async def turn(self, session: aiohttp.ClientSession, sid: str, free: deque) -> float:
        """One streamed turn; gives the session back to `free` unless it was lost; the seconds to wait."""
        body = json.dumps({"message": MESSAGE, "sessionId": sid})
        sent = time.time()
        arrived: list[tuple[float, float]] = []  # (sent by the LLM, arrived here) of each piece
        event, done, backoff = b"", None, 0.0
        try:
            async with session.post(self.url, data=body, headers=HEADERS) as response:
                if response.status != 200:
                    await response.read()
                    if response.status in (429, 503):
                        backoff = float(response.headers.get("Retry-After", "0") or 0)
                    self.count(str(response.status), error="status")
                    free.append(sid)
                    return backoff
                async for line in response.content:
                    if line.startswith(b"event: "):
                        event = line[7:].strip()
                    elif line.startswith(b"data: "):
                        if event == b"delta":
                            now = time.time()
                            arrived.extend((float(stamp), now) for stamp in STAMP.findall(line))
                        elif event in (b"done", b"error"):
                            done = event, json.loads(line[6:])
        except asyncio.CancelledError:
            raise  # cut off by the end of the run: the session is not used again
        except TimeoutError:
            self.count("timeout", error="timeout")
            return 0.0
        except aiohttp.ClientError:
            self.count("socket", error="read")
            return 0.0
        finished = time.time()
        if done is None or done[0] != b"done":
            self.count("200", error="event")
            free.append(sid)
            return 0.0
        if done[1].get("newSession"):
            self.lost += 1
        else:
            free.append(sid)
        if not self.in_window:
            return 0.0
        self.requests += 1
        self.statuses["200"] += 1
        self.latency.append(finished - sent)
        self.pieces += len(arrived)
        if arrived:
            self.ttft.append(arrived[0][1] - sent)
            self.ttft_added.append(arrived[0][1] - arrived[0][0])
            self.stall.append(max(((b_at - a_at) - (b_sent - a_sent)
                                   for (a_sent, a_at), (b_sent, b_at) in zip(arrived, arrived[1:], strict=False)),
                                  default=0.0))
        return 0.0

    def count(self, status: str, error: str) -> None:
        if self.in_window:
            self.requests += 1
            self.statuses[status] += 1
            self.errors[error] += 1


def main(argv: list[str]) -> None:
    url, sessions_file, connections, seconds = argv[0], argv[1], int(argv[2]), float(argv[3])
    free_file = argv[4] if len(argv) > 4 else ""
    timeout = float(argv[5]) if len(argv) > 5 else 60.0
    with open(sessions_file) as f:
        sessions = f.read().split()
    driver = Driver(url, sessions, connections, seconds, timeout)
    # No cycle collection in this process while it measures: with a thousand streams open, one full
    # collection paused every stream it reads for 100 ms and more at once, which the stall figure
    # counted against the server. A run of seconds leaves little cyclic garbage.
    gc.collect()
    gc.disable()
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    result = asyncio.run(driver.run())
    if free_file:
        with open(free_file, "w") as f:
            f.write("".join(f"{sid}\n" for free in driver.slices for sid in free))
    print("BENCH " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
