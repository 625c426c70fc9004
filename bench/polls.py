"""What a waiting page's poll costs the workers: `python -m bench.polls [--pages 10000] [--tree DIR]`.

The site as deployed (the Procfile's web command, its 2 workers, a PostgreSQL database and a
redis-server of its own, the caps off) and --pages open pages (bench/crowd.py), each asking
GET /api/updates again as soon as it answers (CHAT_UPDATES_WAIT 25 s, the default). After
--warm seconds (past the first wave, and past the minute after which each page's session is
due to be marked seen again), the workers' CPU and their PostgreSQL backends' from /proc and the
polls they answered (their request log) over --windows windows of --seconds: CPU ms a poll.

--tree serves another checkout (a `git worktree` of an older revision) with this one's venv,
for a side-by-side comparison: run them alternately, as docs/benchmarks.md's figures were.
"""

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .servers import ROOT, BenchDatabase, BenchRedis, WebServer


def polls_answered(log: Path) -> int:
    with log.open("rb") as f:
        return sum(1 for line in f if b'"route": "api/updates"' in line)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pages", type=int, default=10000)
    parser.add_argument("--warm", type=float, default=70.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--windows", type=int, default=2)
    parser.add_argument("--tree", type=Path, default=ROOT, help="the checkout to serve (default: this one)")
    parser.add_argument("--database", default="postgres://postgres@127.0.0.1:5432/chatsite_bench_polls")
    args = parser.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="chatsite-polls-"))
    db = BenchDatabase(args.database)
    db.create()
    redis = BenchRedis(tmp)
    site = pages = None
    env = {
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50), "DJANGO_DEBUG": "0", "DATABASE_URL": db.url,
        "REDIS_URL": redis.url, "DJANGO_BEHIND_TLS_PROXY": "1", "CHAT_UPDATES_WAIT": "25",
        # All the pages come from one address, more than the caps' defaults hold.
        "CHAT_MAX_HELD": "0", "CHAT_MAX_HELD_PER_ADDRESS": "0", "CHAT_MAX_CONNECTIONS": "0",
        "CHAT_RATE_LIMIT_SESSION": "0", "CHAT_RATE_LIMIT_IP": "0", "CHAT_RATE_LIMIT_NEW_SESSIONS": "0",
    }
    try:
        subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
                       cwd=args.tree, env={**os.environ, **env}, check=True)
        os.environ.update(env, DJANGO_SETTINGS_MODULE="chatsite.settings")
        import django

        django.setup()
        from . import seed

        seed.conversations(args.pages, 2, tmp / "sessions.txt")
        site = WebServer("polls", env, tmp / "site.log", tree=args.tree)
        pages = subprocess.Popen([sys.executable, "-m", "bench.crowd", str(site.port), str(tmp / "sessions.txt")],
                                 cwd=ROOT, stdout=subprocess.PIPE, text=True)
        assert pages.stdout is not None
        opened = pages.stdout.readline().strip()
        if not opened.startswith("OPEN"):
            raise RuntimeError(f"bench.crowd did not open its pages: {opened!r}")
        time.sleep(args.warm)
        windows = []
        for _ in range(args.windows):
            cpu, polls, started = site.cpu_seconds(), polls_answered(site.log_path), time.monotonic()
            database = db.cpu_seconds()
            time.sleep(args.seconds)
            elapsed = time.monotonic() - started
            cpu, polls = site.cpu_seconds() - cpu, polls_answered(site.log_path) - polls
            database = db.cpu_seconds() - database
            windows.append({"cores": round(cpu / elapsed, 3), "polls_per_s": round(polls / elapsed, 1),
                            "cpu_ms_per_poll": round(cpu * 1000 / max(polls, 1), 3),
                            "postgres_cpu_ms_per_poll": round(database * 1000 / max(polls, 1), 3)})
        print(json.dumps({"tree": str(args.tree), "pages": args.pages, "windows": windows}))
    finally:
        if pages is not None:
            pages.terminate()
            pages.communicate(timeout=60)
        if site is not None:
            site.stop()
        redis.stop()
        from django.db import connections

        connections.close_all()
        db.drop()


if __name__ == "__main__":
    main()
