"""The faults a turn must survive, injected into the site as deployed, and what each costs.

    python -m bench.faults        (make faults)

Runs the Procfile's web command on a PostgreSQL database of its own, a
redis-server of its own and the stand-in LLM, injects each fault while
customers chat, and prints the table in docs/faults.md: what the customer
sees, what is stored, and for how long the conversation is blocked (from the
end of the fault until the conversation takes a new turn).
"""

import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg

from bench.servers import BenchDatabase, children
from devtools.fake_llm import FakeLLM
from devtools.processes import ROOT, RedisServer, Site

DATABASE_URL = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/chatsite_faults_bench")
LEASE = 3


def post(site: Site, body: dict, timeout: float = 30) -> tuple[int | str, dict, float]:
    """(status or the connection error's name, body, seconds)."""
    started = time.monotonic()
    request = urllib.request.Request(f"{site.url}/api/chat", data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read()), time.monotonic() - started
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read()), time.monotonic() - started
    except (OSError, ConnectionError) as error:
        return type(error).__name__, {}, time.monotonic() - started


def outcome(status, body) -> str:
    code = body.get("error", {}).get("code")
    return f"{status} {code}" if code else str(status)


def blocked_for(site: Site, session_id: str, since: float) -> float:
    """Seconds from `since` until the conversation takes a new turn (sent then, and answered)."""
    while True:
        sent = time.monotonic()
        status, _, _ = post(site, {"message": "Next question", "sessionId": session_id})
        if status == 200:
            return max(0.0, sent - since)
        time.sleep(0.1)


def rows(database: BenchDatabase, session_id: str) -> str:
    with psycopg.connect(database.url) as conn:
        found = conn.execute(
            "SELECT m.role, m.status FROM conversations_message m JOIN conversations_conversation c"
            " ON c.id = m.conversation_id WHERE c.session_id = %s ORDER BY m.seq", [session_id]
        ).fetchall()
    return ", ".join(f"{role[0].upper()}:{status}" for role, status in found)


def llm_calls(llm: FakeLLM) -> int:
    return llm.stats()["received"]


def duplicate_retries(site, database, llm):
    session_id = post(site, {"message": "Hi"})[1]["sessionId"]
    body = {"message": "Where is my parcel?", "sessionId": session_id, "clientMessageId": str(uuid.uuid4())}
    llm.control("status", status=500)
    post(site, body)
    llm.reset()
    llm.control("ok", delay=0.5)
    with ThreadPoolExecutor(10) as pool:
        results = list(pool.map(lambda _: post(site, body), range(10)))
    done = time.monotonic()
    calls = llm_calls(llm)
    llm.control("ok")
    seen = sorted(outcome(status, answer) for status, answer, _ in results)
    summary = {text: seen.count(text) for text in seen}
    return ("10 parallel retries of a failed question", ", ".join(f"{n} x {t}" for t, n in summary.items()),
            f"{rows(database, session_id)}; LLM calls: {calls}", blocked_for(site, session_id, done))


def worker_killed(site, database, llm):
    session_id = post(site, {"message": "Hi"})[1]["sessionId"]
    body = {"message": "Are you there?", "sessionId": session_id, "clientMessageId": str(uuid.uuid4())}
    llm.control("ok", delay=30)
    with ThreadPoolExecutor(1) as pool:
        cut = pool.submit(post, site, body)
        time.sleep(0.5)
        for pid in children(site.pid):
            os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        status, answer, _ = cut.result()
    llm.control("ok")
    while post(site, body)[0] != 200:  # the customer's Retry, as the page does it
        time.sleep(0.25)
    retried = time.monotonic() - killed
    return ("worker SIGKILLed mid-turn", f"{outcome(status, answer)}; Retry works after {retried:.1f} s",
            rows(database, session_id), retried)


def connections_killed(site, database, llm):
    sessions = [post(site, {"message": f"start {n}"})[1]["sessionId"] for n in range(8)]
    llm.control("ok", delay=0.05)
    seen: list[str] = []

    def chat(session_id):
        for turn in range(10):
            status, answer, _ = post(site, {"message": f"q {turn}", "sessionId": session_id,
                                            "clientMessageId": str(uuid.uuid4())})
            seen.append(outcome(status, answer))

    def kill():
        with psycopg.connect(database.url, autocommit=True) as conn:
            for _ in range(5):
                time.sleep(0.4)
                conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s"
                             " AND pid <> pg_backend_pid()", [database.name])

    killer = threading.Thread(target=kill)
    killer.start()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(chat, sessions))
    killer.join()
    done = time.monotonic()
    llm.control("ok")
    blocked = max(blocked_for(site, session_id, done) for session_id in sessions)
    summary = {text: seen.count(text) for text in sorted(set(seen))}
    with psycopg.connect(database.url) as conn:
        answering = conn.execute("SELECT count(*) FROM conversations_message WHERE status = 'answering'").fetchone()
    return ("pg_terminate_backend x5 during 80 turns", ", ".join(f"{n} x {t}" for t, n in summary.items()),
            f"no answer left half stored ({answering[0]} answering)", blocked)


def lock_held(site, database, llm):
    session_id = post(site, {"message": "Hi"})[1]["sessionId"]
    llm.control("ok")
    with psycopg.connect(database.url) as conn:
        conn.execute("LOCK TABLE conversations_message IN ACCESS EXCLUSIVE MODE")
        status, answer, took = post(site, {"message": "Blocked?", "sessionId": session_id})
        time.sleep(max(0.0, 5 - took))
        conn.rollback()
    released = time.monotonic()
    return ("messages table locked for 5 s", f"{outcome(status, answer)} after {took:.1f} s",
            rows(database, session_id), blocked_for(site, session_id, released))


def llm_hang(site, database, llm):
    session_id = post(site, {"message": "Hi"})[1]["sessionId"]
    llm.control("hang")
    status, answer, took = post(site, {"message": "Hello?", "sessionId": session_id})
    done = time.monotonic()
    llm.control("ok")
    return ("LLM hangs", f"{outcome(status, answer)} after {took:.1f} s (deadline 3 s)",
            rows(database, session_id), blocked_for(site, session_id, done))


def llm_megabytes(site, database, llm):
    """An upstream that ignores max_tokens: 2 MiB of reply."""
    session_id = post(site, {"message": "Hi"})[1]["sessionId"]
    llm.control("ok", reply="word " * 1000, repeat=420, ignore_max_tokens=True, piece_chars=4096)
    status, answer, took = post(site, {"message": "Tell me everything", "sessionId": session_id})
    done = time.monotonic()
    llm.control("ok")
    size = len(answer.get("reply") or "")
    return ("LLM answers 2 MiB, ignoring max_tokens",
            f"{outcome(status, answer)} after {took:.1f} s, the reply cut at {size:,} characters with a note",
            rows(database, session_id), blocked_for(site, session_id, done))


def llm_garbage(site, database, llm):
    """An answer that parses but whose content is not text, and a model name that cannot be stored."""
    session_id = post(site, {"message": "Hi"})[1]["sessionId"]
    llm.control("ok", content=12345, model="m" * 300, usage={"prompt_tokens": -5, "completion_tokens": "x"})
    status, answer, took = post(site, {"message": "Garbage?", "sessionId": session_id})
    done = time.monotonic()
    llm.control("ok")
    return ("LLM answers a number as content, a 300-character model, bad usage",
            f"{outcome(status, answer)} after {took:.1f} s", rows(database, session_id),
            blocked_for(site, session_id, done))


def redis_down(site, database, llm, redis):
    session_id = post(site, {"message": "Hi"})[1]["sessionId"]
    llm.control("ok")
    redis.stop()
    results = [post(site, {"message": f"q {n}", "sessionId": session_id}) for n in range(5)]
    redis.start()
    seen = ", ".join(f"{outcome(status, answer)} in {took * 1000:.0f} ms" for status, answer, took in results[:2])
    return ("Redis stopped", f"{seen}, ...", rows(database, session_id), 0.0)


def main() -> int:
    database = BenchDatabase(DATABASE_URL)
    database.create()
    tmp = Path(tempfile.mkdtemp(prefix="faults-"))
    redis = RedisServer(tmp)
    redis.start()
    llm = FakeLLM().start()
    env = {
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50), "DJANGO_DEBUG": "0", "DJANGO_SECURE_SSL_REDIRECT": "0",
        "DATABASE_URL": DATABASE_URL, "REDIS_URL": redis.url, "OPENAI_API_KEY": "fake",
        "OPENAI_BASE_URL": llm.url, "OPENAI_MODEL": "fake-model", "CHAT_LLM_DEADLINE": "3",
        "CHAT_LLM_MAX_RETRIES": "0", "CHAT_TURN_LEASE_SECONDS": str(LEASE),
        "CHAT_RATE_LIMIT_SESSION": "0", "CHAT_RATE_LIMIT_IP": "0", "CHAT_RATE_LIMIT_NEW_SESSIONS": "0",
        "CHAT_DAILY_TOKENS_PER_SESSION": "0", "CHAT_DAILY_TOKENS_SITE": "0",
        "CHAT_DAILY_TOKENS_PER_ADDRESS": "0", "CHAT_LLM_DOWN_AFTER_FAILURES": "0",
    }
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, check=True,
                   env={**os.environ, **env})
    site = Site(env, name="faults")
    try:
        table = [scenario(site, database, llm) for scenario in
                 (duplicate_retries, worker_killed, connections_killed, lock_held, llm_hang, llm_megabytes,
                  llm_garbage)]
        table.append(redis_down(site, database, llm, redis))
    finally:
        site.stop()
        llm.stop()
        redis.stop()
        database.drop()
    print(f"| fault | what the customer sees | what is stored (U: question, A: reply) | "
          f"blocked after the fault (lease {LEASE} s) |")
    print("|---|---|---|---|")
    for fault, seen, stored, blocked in table:
        print(f"| {fault} | {seen} | {stored} | {blocked:.1f} s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
