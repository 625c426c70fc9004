"""python -m bench.profile_turn: py-spy on one site worker under figure 1's load (a development aid).

Starts what `python -m bench` starts (its own database, Redis and stand-in
LLM), the site with WEB_CONCURRENCY=--workers (1), warms it up, then runs wrk for
--seconds while `py-spy record` samples the (first) worker, and prints the CPU a
turn cost the workers, their PostgreSQL backends, the stand-in LLM, Redis and the
driver. Needs py-spy on PATH (a tool for this work, not a dependency of the site).
"""

import argparse
import os
import secrets
import subprocess
import sys
import tempfile
from pathlib import Path

from . import load, servers
from .__main__ import DEFAULT_DATABASE


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of each of a process's threads so far, by thread id ("main" for the event loop's)."""
    found: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        key = "main" if task.name == str(pid) else f"{name} {task.name}"  # Python does not name them
        found[key] = (int(fields[11]) + int(fields[12])) / servers.CLOCK_TICKS
    return found


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_turn", description=__doc__)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--out", default="profile.txt", help="py-spy's output (--format raw: collapsed stacks)")
    parser.add_argument("--no-spy", action="store_true", help="measure only, without py-spy")
    parser.add_argument("--app", default=None, help="another ASGI app to profile, e.g. bench.minimal:application")
    parser.add_argument("--minimal-llm", default="openai", help="BENCH_MINIMAL_LLM of bench.minimal (openai, site)")
    parser.add_argument("--stream", action="store_true", help="streamed turns (bench/stream.py) instead of wrk's")
    parser.add_argument("--workers", type=int, default=1, help="WEB_CONCURRENCY; py-spy samples the first worker")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="chatsite-profile-"))
    db = servers.BenchDatabase(os.environ.get("BENCH_DATABASE_URL", DEFAULT_DATABASE))
    db.create()
    redis = llm = site = None
    try:
        redis = servers.BenchRedis(tmp)
        env = {
            "DJANGO_SECRET_KEY": secrets.token_urlsafe(50), "DJANGO_DEBUG": "0", "DATABASE_URL": db.url,
            "REDIS_URL": redis.url, "DJANGO_BEHIND_TLS_PROXY": "1", "CHAT_RATE_LIMIT_SESSION": "0",
            "CHAT_RATE_LIMIT_IP": "0", "CHAT_RATE_LIMIT_NEW_SESSIONS": "0",
            "CHAT_DAILY_TOKENS_PER_SESSION": str(10**12), "CHAT_DAILY_TOKENS_SITE": str(10**15),
            "CHAT_DAILY_TOKENS_PER_ADDRESS": str(10**15), "WEB_CONCURRENCY": str(args.workers),
            "CHAT_MAX_HELD_PER_ADDRESS": "0",  # all the load comes from one address, as in `python -m bench`
        }
        subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
                       cwd=servers.ROOT, env={**os.environ, **env}, check=True)
        os.environ.update(env, DJANGO_SETTINGS_MODULE="chatsite.settings")
        import django

        django.setup()
        from . import seed

        pool = load.Sessions(seed.conversations(6000, 2, tmp / "sessions.txt"), tmp)
        llm = servers.StandInLLM()
        llm.set_delay(args.delay)
        env.update(OPENAI_API_KEY="bench-key", OPENAI_BASE_URL=llm.url, OPENAI_MODEL="fake-model")
        if args.app:
            env = {**{k: v for k, v in env.items() if not k.startswith("DJANGO_")},
                   "DJANGO_SETTINGS_MODULE": args.app.split(":")[0], "BENCH_MINIMAL_LLM": args.minimal_llm}
        site = servers.WebServer("profiled", env, tmp / "site.log", app=args.app)
        sessions = args.connections * 10
        driver = load.stream if args.stream else load.wrk
        pool.wrk("warm-up", site.url, sessions, args.connections, 3 + 2 * args.delay, timeout=60, driver=driver)
        worker = site.workers()[0]
        spy = None if args.no_spy else subprocess.Popen([os.environ.get("PY_SPY", "py-spy"), "record", "--pid", str(worker), "--rate", "200", "--nonblocking",
                                "--gil", "--format", "raw", "--output", args.out,
                                "--duration", str(int(args.seconds))])
        threads_before = thread_cpu(worker)
        assert redis.process is not None
        llm_pid, redis_pid = llm.pid, redis.process.pid
        cpu = {"workers": site.cpu_seconds, "postgres": db.cpu_seconds,
               "llm": lambda: servers.cpu_seconds(llm_pid), "redis": lambda: servers.cpu_seconds(redis_pid)}
        run = pool.wrk("profiled", site.url, sessions, args.connections, args.seconds,
                       cpu=cpu, timeout=60, settle=site.cpu_seconds, driver=driver)
        if spy:
            spy.wait()
        threads_after = thread_cpu(worker)
        for name, seconds in sorted(threads_after.items(), key=lambda item: -item[1]):
            used = seconds - threads_before.get(name, 0.0)
            if used > 0:
                print(f"thread {name}: {used * 1000 / max(run.ok, 1):.2f} ms a turn")
        print(f"{run.turns_per_second:.0f} turns/s, errors {run.errors}, "
              f"worker CPU {run.cpu_seconds['workers'] * 1000 / max(run.ok, 1):.2f} ms/turn; {args.out}")
        print("CPU ms a turn: " + ", ".join(  # the driver's is "wrk", whichever drove the load
            f"{name} {seconds * 1000 / max(run.ok, 1):.2f}" for name, seconds in run.cpu_seconds.items()
            if name != "machine") + f"; machine busy cores {run.cpu_seconds['machine']:.2f}")
    finally:
        for server in (site, llm, redis):
            if server:
                server.stop()
        from django.db import connections

        connections.close_all()
        db.drop()


if __name__ == "__main__":
    main()
