"""What one held connection costs a worker: `python -m bench.connections [--held 2000]`.

The site runs as deployed (the Procfile's web command, ONE worker, its own PostgreSQL
database and redis-server, the stand-in LLM), a fresh one for each kind of connection:

- idle: a connection that sends nothing (the head timeout set out of the way);
- poll: a long poll (GET /api/updates) waiting on a conversation with nothing new;
- stream: a streamed turn (Accept: text/event-stream) whose LLM has not answered yet.

For each, the worker's RSS and its CPU over 10 s (from /proc) with none held, then with
N held; the caps are off for the run. It prints a Markdown table for docs/benchmarks.md.
"""

import argparse
import http.client
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from devtools.fake_llm import FakeLLM
from devtools.processes import ROOT, RedisServer, Site

from .servers import BenchDatabase

CPU_SECONDS = 10


def worker(site: Site) -> int:
    children = Path(f"/proc/{site.pid}/task/{site.pid}/children").read_text().split()
    assert len(children) == 1, children
    return int(children[0])


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_over(pid: int, seconds: float) -> float:
    before = cpu_seconds(pid)
    time.sleep(seconds)
    return cpu_seconds(pid) - before


def request(port: int, method: str, path: str, body: dict | None = None, headers: str = "") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    data = json.dumps(body).encode() if body is not None else b""
    sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}"
                 f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n".encode() + data)
    return sock


def call(port: int, method: str, path: str, body: dict | None = None, headers: dict | None = None) -> dict:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(method, path, body=json.dumps(body) if body is not None else None,
                           headers={"Content-Type": "application/json", **(headers or {})})
        response = connection.getresponse()
        assert response.status == 200, (response.status, response.read())
        return json.loads(response.read())
    finally:
        connection.close()


def measure(kind: str, held: int, env: dict[str, str], fake: FakeLLM) -> dict:
    site = Site(env, name=f"held-{kind}")
    sockets: list[socket.socket] = []
    try:
        pid = worker(site)
        session_id = call(site.port, "POST", "/api/chat", {"message": "Hi"})["sessionId"]
        mine = {"X-Session-Id": session_id}
        for _ in range(20):  # warm: a turn, a poll
            call(site.port, "POST", "/api/chat", {"message": "Hi", "sessionId": session_id})
            call(site.port, "GET", "/api/updates?after=-1", headers=mine)
        history = call(site.port, "GET", "/api/history", headers=mine)
        latest = max(message["seq"] for message in history["messages"])
        time.sleep(2)
        rss_before, cpu_before = rss_kib(pid), cpu_over(pid, CPU_SECONDS)

        fake.control("ok", delay=3600)
        for _ in range(held):
            if kind == "idle":
                sockets.append(socket.create_connection(("127.0.0.1", site.port)))
            elif kind == "poll":
                sockets.append(request(site.port, "GET", f"/api/updates?after={latest}&state=assistant",
                                       headers=f"X-Session-Id: {session_id}\r\n"))
            else:
                sock = request(site.port, "POST", "/api/chat", {"message": "Where is my parcel?"},
                               headers="Accept: text/event-stream\r\n")
                assert sock.recv(12).startswith(b"HTTP/1.1 200"), "a stream was refused"
                sockets.append(sock)
        deadline = time.monotonic() + 120  # until the worker has settled: every request is in
        while cpu_over(pid, 2) > 0.1 and time.monotonic() < deadline:
            pass
        rss_after, cpu_after = rss_kib(pid), cpu_over(pid, CPU_SECONDS)
        return {"kind": kind, "held": held, "rss_before": rss_before, "rss_after": rss_after,
                "cpu_before": cpu_before, "cpu_after": cpu_after}
    finally:
        fake.reset()
        for sock in sockets:
            sock.close()
        site.stop()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.connections", description=__doc__)
    parser.add_argument("--held", type=int, default=2000)
    parser.add_argument("--database", default="postgres://postgres@127.0.0.1:5432/chatsite_bench_connections")
    args = parser.parse_args(argv)

    database = BenchDatabase(args.database)
    database.create()
    redis = RedisServer(Path(tempfile.mkdtemp(prefix="bench-redis-")))
    redis.start()
    try:
        with FakeLLM() as fake:
            env = {
                "DJANGO_SECRET_KEY": secrets.token_urlsafe(50), "DJANGO_DEBUG": "0", "DJANGO_SECURE_SSL_REDIRECT": "0",
                "DATABASE_URL": database.url, "REDIS_URL": redis.url,
                "OPENAI_API_KEY": "bench", "OPENAI_BASE_URL": fake.url, "OPENAI_MODEL": "fake-model",
                "CHAT_LLM_DEADLINE": "3600", "CHAT_LLM_MAX_RETRIES": "0", "CHAT_UPDATES_WAIT": "3600",
                "CHAT_HEADER_TIMEOUT": "3600", "CHAT_MAX_HELD": "0", "CHAT_MAX_HELD_PER_ADDRESS": "0",
                "CHAT_MAX_TURNS_IN_FLIGHT": "0", "CHAT_MAX_CONNECTIONS": "0",
                "CHAT_RATE_LIMIT_SESSION": "0", "CHAT_RATE_LIMIT_IP": "0", "CHAT_RATE_LIMIT_NEW_SESSIONS": "0",
                "CHAT_DAILY_TOKENS_PER_SESSION": "0", "CHAT_DAILY_TOKENS_PER_ADDRESS": "0",
                "CHAT_DAILY_TOKENS_SITE": "0", "CHAT_LLM_DOWN_AFTER_FAILURES": "0",
            }
            subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT,
                           env={**os.environ, **env}, check=True)
            rows = [measure(kind, args.held, env, fake) for kind in ("idle", "poll", "stream")]
    finally:
        redis.stop()
        database.drop()

    print(f"| held connection | worker RSS, none held | with {args.held} held | per connection "
          f"| worker CPU, none held | with {args.held} held | per connection |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        per_kib = (row["rss_after"] - row["rss_before"]) / row["held"]
        per_cpu = (row["cpu_after"] - row["cpu_before"]) / CPU_SECONDS / row["held"] * 1e6
        print(f"| {row['kind']} | {row['rss_before'] / 1024:.0f} MiB | {row['rss_after'] / 1024:.0f} MiB "
              f"| {per_kib:.1f} KiB | {row['cpu_before'] / CPU_SECONDS * 100:.2f} % of a core "
              f"| {row['cpu_after'] / CPU_SECONDS * 100:.2f} % | {per_cpu:.2f} µs/s |")


if __name__ == "__main__":
    main()
