"""python -m bench: the site as deployed against the bare-Django anchor; writes docs/benchmarks.md.

See docs/benchmarks.md for what is measured and why, and `python -m bench --help`.
"""

import argparse
import dataclasses
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from devtools import wire

from . import load, report, servers

ROOT = servers.ROOT
DEFAULT_DATABASE = "postgres://postgres@127.0.0.1:5432/chatsite_bench"
FIGURES = ("1", "2", "stream", "crowd", "3", "4", "5", "overload", "scale")


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short runs, one A B pair: for development")
    parser.add_argument("--rounds", type=int, default=2, help="A B pairs per figure (default 2: A B A B)")
    parser.add_argument("--seconds", type=float, default=10, help="length of a run at instant LLM")
    parser.add_argument("--held-seconds", type=float, default=20, help="length of a run of figure 2")
    parser.add_argument("--connections", type=int, default=50, help="connections of figure 1")
    parser.add_argument("--held", type=int, default=1000, help="concurrent conversations of figure 2")
    parser.add_argument("--delay", type=float, default=2.0, help="LLM delay of figure 2, seconds")
    parser.add_argument("--sessions", type=int, default=60000, help="existing sessions the load continues")
    parser.add_argument("--pages", type=int, default=10000, help="pages waiting for a staff reply in figure crowd")
    parser.add_argument("--crowd-wait", type=float, default=25.0,
                        help="CHAT_UPDATES_WAIT in figure crowd (the site's default 25: a page asks again that often)")
    parser.add_argument("--only", default=",".join(FIGURES), help=f"figures to run, of {','.join(FIGURES)}")
    parser.add_argument("--database", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_DATABASE),
                        help="the bench's own database (created and dropped; its name must contain 'bench')")
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"),
                        help="document to write the results into ('-' for none)")
    parser.add_argument("--compare", default="",
                        help="also run these as the site in figures 1 and 2: git revisions (each exported "
                             "and served with this venv), or h11 for the worker on asyncio + h11")
    parser.add_argument("--keep-database", action="store_true")
    parser.add_argument("--render", metavar="RESULTS_JSON",
                        help="run nothing: write the figures of an earlier run (bench/results/*.json) again")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.seconds, args.held_seconds, args.sessions = 1, 3, 8, 10000
    args.only = set(args.only.split(","))
    if "crowd" in args.only:  # each page is a session of its own, and is not used again
        args.sessions += args.pages
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.render:
        results = json.loads(Path(args.render).read_text())
        report.write(Path(args.out), report.render(results))
        print(f"bench: wrote {args.out} from {args.render}")
        return
    load.ensure_wrk()
    command = "make bench" + (f" BENCH_ARGS='{' '.join(argv or sys.argv[1:])}'" if (argv or sys.argv[1:]) else "")
    tmp = Path(tempfile.mkdtemp(prefix="chatsite-bench-"))
    db = servers.BenchDatabase(args.database)
    print(f"bench: database {db.name}, scratch {tmp}", flush=True)
    db.create()
    redis = llm = None
    started = []
    try:
        redis = servers.BenchRedis(tmp)
        site_env = {
            "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
            "DJANGO_DEBUG": "0",
            "DATABASE_URL": db.url,
            "REDIS_URL": redis.url,
            # Served as behind a TLS-terminating load balancer (wrk sends X-Forwarded-Proto).
            "DJANGO_BEHIND_TLS_PROXY": "1",
            # All the load comes from one address and a few thousand sessions.
            "CHAT_RATE_LIMIT_SESSION": "0",
            "CHAT_RATE_LIMIT_IP": "0",
            "CHAT_RATE_LIMIT_NEW_SESSIONS": "0",
            # And so do the streams held at once (a cap per address, 50 by default).
            "CHAT_MAX_HELD_PER_ADDRESS": "0",
            # Token budgets stay on, so their counting in Redis is measured, but
            # too large to run out during a run.
            "CHAT_DAILY_TOKENS_PER_SESSION": str(10**12),
            "CHAT_DAILY_TOKENS_SITE": str(10**15),
            "CHAT_DAILY_TOKENS_PER_ADDRESS": str(10**15),
            # Figure 4 continues conversations of 1,000 messages, which is the default cap
            # on a conversation (past it, a turn starts a new one: a lost session to wrk).
            "CHAT_CONVERSATION_MAX_MESSAGES": "100000",
        }
        subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
                       cwd=ROOT, env={**os.environ, **site_env}, check=True)
        os.environ.update(site_env, DJANGO_SETTINGS_MODULE="chatsite.settings")
        import django

        django.setup()
        from . import seed

        ids = seed.conversations(args.sessions, 2, tmp / "sessions.txt")
        pool = load.Sessions(ids, tmp)
        print(f"bench: {len(ids)} sessions seeded", flush=True)

        llm = servers.StandInLLM()
        site_env.update({
            "OPENAI_API_KEY": "bench-key",
            "OPENAI_BASE_URL": llm.url,
            "OPENAI_MODEL": "fake-model",
        })
        bench = Bench(args, db, redis, llm, site_env, tmp, pool)
        results = {"machine": servers.machine_description(), "command": command,
                   "procfile": servers.procfile_web_command(), "args": {
                       k: sorted(v) if isinstance(v, set) else v for k, v in vars(args).items()}}
        try:
            bench.run_all(started, results)
        except Exception:
            _save(results, args, write_doc=False)  # what was measured before the failure is kept
            raise
    finally:
        for server in started:
            server.stop()
        if llm:
            llm.stop()
        if redis:
            redis.stop()
        if not args.keep_database:
            from django.db import connections

            connections.close_all()
            db.drop()

    _save(results, args, write_doc=True)


def _save(results: dict, args, write_doc: bool) -> None:
    results_dir = ROOT / "bench" / "results"
    results_dir.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (results_dir / f"{stamp}.json").write_text(json.dumps(results, indent=1, default=_json))
    print(f"bench: bench/results/{stamp}.json")
    if not write_doc:
        return
    text = report.render(results)
    print(text)
    if args.out != "-":
        report.write(Path(args.out), text)
        print(f"bench: wrote {args.out} and bench/results/{stamp}.json")


def _json(value):
    if dataclasses.is_dataclass(value):
        return {**dataclasses.asdict(value), "ok": value.ok, "errors": value.errors,
                "turns_per_second": value.turns_per_second}
    raise TypeError(type(value))


class Bench:
    def __init__(self, args, db, redis, llm, site_env, tmp, pool):
        self.args, self.db, self.redis, self.llm = args, db, redis, llm
        self.site_env, self.tmp, self.pool = site_env, tmp, pool

    def site(self, started, name="site", tree: Path = ROOT, worker_class=None, **env) -> servers.WebServer:
        server = servers.WebServer(name, {**self.site_env, **env}, self.tmp / f"{name}.log".replace(" ", "-"),
                                   tree=tree, worker_class=worker_class)
        started.append(server)
        return server

    def anchor(self, started, delay: float) -> servers.WebServer:
        env = {"DJANGO_SETTINGS_MODULE": "bench.anchor", "BENCH_ANCHOR_DELAY": str(delay)}
        server = servers.WebServer("bare", env, self.tmp / "bare.log", app="bench.anchor:application")
        started.append(server)
        return server

    def minimal(self, started, llm: str) -> servers.WebServer:
        env = {**{k: v for k, v in self.site_env.items() if not k.startswith("DJANGO_")},
               "DJANGO_SETTINGS_MODULE": "bench.minimal", "BENCH_MINIMAL_LLM": llm}
        name = "minimal" if llm == "openai" else f"minimal-{llm}"
        server = servers.WebServer(name, env, self.tmp / f"{name}.log", app="bench.minimal:application")
        started.append(server)
        return server

    def contenders(self, started, site, delay: float) -> list[tuple[str, object]]:
        """The site, its variants (--compare), the minimal turn with each LLM client, and the bare view,
        each as (name, a function that starts it); the site is running already."""
        found = [("site", lambda: site)]
        for name, tree, worker_class in self.variants():
            found.append((name, lambda n=name, t=tree, w=worker_class: self.site(started, n, t, w)))
        found += [("minimal", lambda: self.minimal(started, "openai")),
                  ("minimal-site", lambda: self.minimal(started, "site")),
                  ("minimal-httpx", lambda: self.minimal(started, "httpx")),
                  ("bare", lambda: self.anchor(started, delay))]
        return found

    def variants(self) -> list[tuple[str, Path, str | None]]:
        """--compare: "h11" is the site on asyncio + h11 (uvicorn's UvicornH11Worker); anything else a
        git revision, exported to a scratch directory and served from there with this venv."""
        found = []
        for ref in filter(None, self.args.compare.split(",")):
            if ref == "h11":
                found.append(("site-h11", ROOT, "uvicorn_worker.UvicornH11Worker"))
                continue
            tree = self.tmp / f"tree-{ref}"
            if not tree.exists():
                tree.mkdir()
                archive = subprocess.run(["git", "archive", ref], cwd=ROOT, check=True, capture_output=True).stdout
                subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
            found.append((f"site@{ref}", tree, None))
        return found

    def stop(self, started, servers_) -> None:
        for _, server in servers_:
            started.remove(server)
            server.stop()

    def cpu(self, server: servers.WebServer, with_backends: bool) -> dict:
        readers = {"workers": server.cpu_seconds}
        if with_backends:
            readers["llm"] = lambda: servers.cpu_seconds(self.llm.pid)
            readers["redis"] = lambda: servers.cpu_seconds(self.redis.process.pid)
            readers["postgres"] = self.db.cpu_seconds
        return readers

    def probes(self, server: servers.WebServer, with_db: bool) -> dict:
        probes = {
            "worker_rss_mib": lambda: max(servers.rss_kib(pid) for pid in server.workers()) / 1024,
            "workers": lambda: len(server.workers()),
            "worker_threads": lambda: max(servers.threads(pid) for pid in server.workers()),
        }
        if with_db:
            probes["pg_connections"] = lambda: len(self.db.backends())
            probes["pg_busy"] = lambda: sum(1 for _, state in self.db.backends() if state != "idle")
        return probes

    def alternate(self, name, pairs, runner) -> list:
        """Runs A B A B...: `pairs` is [(label, server), ...] in the order of one round."""
        runs = []
        for round_ in range(self.args.rounds):
            for label, server in pairs:
                run = runner(f"{label} #{round_ + 1}", server)
                print(f"bench: figure {name}: {run.label}: {run.turns_per_second:.0f} turns/s, "
                      f"p50 {run.latency_ms['p50']:.1f} ms, p99 {run.latency_ms['p99']:.1f} ms, "
                      f"errors {run.errors}, worker CPU {run.cpu_seconds['workers'] * 1000 / max(run.ok, 1):.2f} "
                      f"ms/turn", flush=True)
                runs.append(run)
        return runs

    def run_all(self, started, results: dict) -> None:
        """Runs the figures of --only, each adding its results to `results` as it ends."""
        args, pool = self.args, self.pool
        per_connection = 10  # sessions per connection in a run, so none waits for a free one
        site = self.site(started)
        if "1" in args.only:
            self.llm.set_delay(0)
            servers_ = [(name, start()) for name, start in self.contenders(started, site, 0)]
            for _, server in servers_:  # warm up: pools, imports, caches
                pool.wrk("warm-up", server.url, args.connections * per_connection, args.connections, 2)
            results["figure1"] = self.alternate("1", servers_, lambda label, s: pool.wrk(
                label, s.url, args.connections * per_connection, args.connections, args.seconds,
                cpu=self.cpu(s, True), settle=s.cpu_seconds))
            self.stop(started, servers_[1:])

        if "2" in args.only or "5" in args.only:
            self.llm.set_delay(args.delay)

            def held(label, start):
                # Each contender runs alone, started afresh: under held load every one of them
                # fills its connection pools, and together they would pass PostgreSQL's
                # max_connections.
                server = start()
                self.llm.set_delay(args.delay)  # which also empties the fake LLM's request log
                pool.wrk("warm-up", server.url, args.held * 2, args.held, args.delay * 2, timeout=60)
                # A turn slower than wrk's timeout would go unmeasured: 60 s is past any turn.
                run = pool.wrk(label, server.url, args.held * 2, args.held, args.held_seconds, timeout=60,
                               cpu=self.cpu(server, server is site), probes=self.probes(server, server is site),
                               settle=server.cpu_seconds)
                if server is not site:
                    self.stop(started, [(label, server)])
                return run

            results["figure2"] = self.alternate("2", self.contenders(started, site, args.delay), held)
            results["figure2_ideal"] = args.held / args.delay
            results["pool_bound"] = {"workers": len(site.workers()),
                                     "pool_max_size": int(os.environ.get("DATABASE_POOL_MAX_SIZE", "10"))}

        if "stream" in args.only:
            results["stream"] = self.streamed(started, site)

        if "crowd" in args.only:
            results["crowd"] = self.crowd(started)

        if "overload" in args.only:
            results["overload"] = self.overload(started, site)

        if "3" in args.only:
            results["figure3"] = self.figure3(started)

        if "4" in args.only:
            results["figure4"] = self.figure4(started, site)

        if "scale" in args.only:
            results["scale"] = self.scale_out(started, site)

    def streamed(self, started, site) -> dict:
        """The streamed turn (Accept: text/event-stream, driven by bench/stream.py) against the minimal
        streamed turn (bench/minimal.py called like the site): instant LLM at figure 1's connections,
        one stream at a time and figure 2's held streams on its LLM delay, each alternated."""
        args, pool = self.args, self.pool
        contenders = [("site", lambda: site), ("minimal-site", lambda: self.minimal(started, "site"))]
        results = {}

        def alternate(name, connections, delay, seconds, fresh: bool):
            servers_ = [] if fresh else [(label, start()) for label, start in contenders]
            runs = []
            for round_ in range(args.rounds):
                for label, start in contenders:
                    server = start() if fresh else dict(servers_)[label]
                    self.llm.set_delay(delay)
                    pool.wrk("warm-up", server.url, connections * 2, connections, max(2, delay * 2),
                             driver=load.stream)
                    run = pool.wrk(f"{label} #{round_ + 1}", server.url, connections * 2, connections, seconds,
                                   driver=load.stream, cpu=self.cpu(server, server is site),
                                   probes=self.probes(server, False), settle=server.cpu_seconds)
                    stream = run.stream
                    print(f"bench: stream {name}: {run.label}: {run.turns_per_second:.0f} turns/s, errors "
                          f"{run.errors}, worker CPU {run.cpu_seconds['workers'] * 1000 / max(run.ok, 1):.2f} "
                          f"ms/turn, TTFT added p50 {stream['ttft_added_ms']['p50']:.1f} p99 "
                          f"{stream['ttft_added_ms']['p99']:.1f} ms, stall p99 {stream['stall_ms']['p99']:.1f} ms, "
                          f"client's own lag p99 {stream['client_lag_ms']['p99']:.1f} ms, "
                          f"{stream['pieces_per_turn']:.1f} pieces a turn", flush=True)
                    runs.append(run)
                    if fresh and server is not site:
                        self.stop(started, [(label, server)])
            if not fresh:
                self.stop(started, servers_[1:])
            return runs

        results["instant"] = alternate("instant", args.connections, 0, args.seconds, fresh=False)
        results["one"] = alternate("one", 1, args.delay, args.held_seconds, fresh=False)
        results["held"] = alternate("held", args.held, args.delay, args.held_seconds, fresh=True)
        return results

    def crowd(self, started) -> dict:
        """One machine's site (the Procfile's workers) holding --pages pages waiting for a staff reply
        (bench/crowd.py) and --held streams at once on figure 2's LLM delay, /healthz probed all along;
        the workers' memory before, with the pages, and with the streams too. The caps on held
        requests and connections are off: their defaults (per worker) are below these numbers."""
        args = self.args
        site = self.site(started, "crowd", CHAT_MAX_HELD="0", CHAT_MAX_HELD_PER_ADDRESS="0",
                         CHAT_MAX_CONNECTIONS="0", CHAT_UPDATES_WAIT=str(args.crowd_wait))
        rss = lambda: sum(servers.rss_kib(pid) for pid in site.workers())  # noqa: E731
        self.llm.set_delay(args.delay)
        self.pool.wrk("warm-up", site.url, 200, 100, args.delay * 2, driver=load.stream)
        load.wait_until_idle(site.cpu_seconds)
        result: dict = {"pages": args.pages, "streams": args.held, "workers": len(site.workers()),
                        "wait": args.crowd_wait}
        with load.HealthProbe(site.url) as probe:
            time.sleep(5)
            result["rss_before_kib"] = rss()
            result["health_idle"] = probe.summary()
            sessions = self.pool.take(args.pages)
            pages = subprocess.Popen([sys.executable, "-m", "bench.crowd", str(site.port), str(sessions)],
                                     cwd=ROOT, stdout=subprocess.PIPE, text=True)
            try:
                opened = pages.stdout.readline().strip()
                if not opened.startswith("OPEN"):
                    raise RuntimeError(f"bench.crowd did not open its pages: {opened!r}")
                # Until every page's first poll is in and waits: the workers' CPU settles.
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    before = site.cpu_seconds()
                    time.sleep(2)
                    if site.cpu_seconds() - before < 0.2:
                        break
                result["rss_pages_kib"] = rss()
                probe.reset()
                cpu_before = site.cpu_seconds()
                time.sleep(args.held_seconds)
                result["pages_cpu_cores"] = (site.cpu_seconds() - cpu_before) / args.held_seconds
                result["health_pages"] = probe.summary()
                probe.reset()
                self.llm.set_delay(args.delay)
                run = self.pool.wrk("streams", site.url, args.held * 2, args.held, args.held_seconds,
                                    driver=load.stream, cpu=self.cpu(site, False),
                                    probes={"rss_kib": rss}, settle=None)
                result["health_streams"] = probe.summary()
                result["streams_run"] = run
                result["rss_streams_peak_kib"] = run.peaks["rss_kib"]
                print(f"bench: crowd: {args.pages} pages + {args.held} streams: {run.turns_per_second:.0f} turns/s, "
                      f"errors {run.errors}, /healthz p99 {result['health_streams']['p99_ms']:.0f} ms, "
                      f"RSS {result['rss_before_kib'] // 1024} -> {result['rss_pages_kib'] // 1024} -> "
                      f"{result['rss_streams_peak_kib'] / 1024:.0f} MiB", flush=True)
            finally:
                pages.terminate()
                out, _ = pages.communicate(timeout=60)
            line = next((row for row in out.splitlines() if row.startswith("BENCH ")), "BENCH {}")
            result["pages_driver"] = json.loads(line.removeprefix("BENCH "))
        started.remove(site)
        site.stop()
        return result

    def figure3(self, started) -> dict:
        """SQL statements, PostgreSQL round trips and Redis commands of one turn, read from outside."""
        from . import seed

        self.llm.set_delay(0)
        proxy = wire.WireLog("127.0.0.1", int(self.db.url.rsplit(":", 1)[1].split("/")[0]))
        site = self.site(started, DATABASE_URL=self.db.url_via(proxy.port), WEB_CONCURRENCY="1")
        ids = seed.conversations(40, 2, self.tmp / "figure3.txt", cached=False)
        for session in ids[:10]:  # warm up: the pool's connections are opened and set up here
            site.post({"message": "warm up", "sessionId": session})

        def measure(sessions):
            proxy.clear()
            redis_before = self.redis.command_calls()
            for session in sessions:
                status, body = site.post({"message": "What is your return policy?", "sessionId": session})
                assert status == 200 and not body["newSession"], (status, body)
            redis_after = self.redis.command_calls()
            summary = wire.summarize(proxy.snapshot())
            n = len(sessions)
            return {
                "turns": n,
                "sql_per_turn": len(summary["statements"]) / n,
                "transaction_control_per_turn": len(summary["transaction_control"]) / n,
                "health_checks_per_turn": len(summary["health_checks"]) / n,
                "round_trips_per_turn": summary["round_trips"] / n,
                "statements_of_one_turn": summary["statements"][: len(summary["statements"]) // n],
                "transaction_control_of_one_turn":
                    summary["transaction_control"][: len(summary["transaction_control"]) // n],
                "redis_per_turn": {cmd: (redis_after.get(cmd, 0) - redis_before.get(cmd, 0)) / n
                                   for cmd in redis_after
                                   if redis_after.get(cmd, 0) != redis_before.get(cmd, 0)},
            }

        fresh = ids[10:]
        result = {
            # The first turn of an existing session in this process: Redis does not know it yet.
            "cold": measure(fresh),
            # Its next turn: the steady state of a returning session.
            "warm": measure(fresh),
        }
        started.remove(site)
        site.stop()
        return result

    def figure4(self, started, site) -> dict:
        """A turn one at a time (one connection, instant LLM): on 1 message of history and on 1,000,
        and the minimal turn on 1 message."""
        from . import seed

        self.llm.set_delay(0)
        minimal = self.minimal(started, "openai")
        seconds = 3 if self.args.quick else 5
        # Enough 1-message conversations that each is used once (a turn takes well over 2 ms here).
        fresh = 500 * seconds
        short = load.Sessions(seed.conversations(fresh * self.args.rounds * 2, 1, self.tmp / "short.txt"),
                              self.tmp)
        long_ = load.Sessions(seed.conversations(30, 1000, self.tmp / "long.txt"), self.tmp)
        long_.wrk("warm-up", site.url, 20, 1, 2, threads=1)
        short.wrk("warm-up", minimal.url, 20, 1, 2, threads=1)
        runs = []
        for round_ in range(self.args.rounds):
            for label, server, sessions, count in (("1 message", site, short, fresh),
                                                    ("1,000 messages", site, long_, 20),
                                                    ("minimal, 1 message", minimal, short, fresh)):
                run = sessions.wrk(f"{label} #{round_ + 1}", server.url, count, 1, seconds, threads=1,
                                   cpu={"workers": server.cpu_seconds}, settle=server.cpu_seconds)
                print(f"bench: figure 4: {run.label}: mean {run.latency_ms['mean']:.2f} ms, "
                      f"p50 {run.latency_ms['p50']:.2f} ms, errors {run.errors}", flush=True)
                runs.append(run)
        started.remove(minimal)
        minimal.stop()
        return {"runs": runs, "seconds": seconds}

    def overload(self, started, site) -> dict:
        """More conversations held than the machine can serve: the site and the minimal turn
        at rising numbers of connections, LLM delay as figure 2. chat.lua honours Retry-After."""
        args = self.args
        self.llm.set_delay(args.delay)
        minimal = self.minimal(started, "openai")
        levels = [max(10, args.held * share // 10) for share in (1, 3, 10, 20)]
        runs = []
        for connections in levels:
            for label, server in (("site", site), ("minimal", minimal)):
                self.llm.set_delay(args.delay)
                run = self.pool.wrk(f"{label} {connections}", server.url, connections * 2, connections,
                                    args.held_seconds, timeout=60, cpu={"workers": server.cpu_seconds},
                                    probes={"worker_threads": lambda s=server: max(
                                        servers.threads(pid) for pid in s.workers())},
                                    settle=server.cpu_seconds)
                print(f"bench: overload: {run.label}: {run.turns_per_second:.0f} turns/s, "
                      f"p50 {run.latency_ms['p50']:.0f} ms, p99 {run.latency_ms['p99']:.0f} ms, "
                      f"statuses {run.statuses}, errors {run.errors}", flush=True)
                runs.append(run)
        started.remove(minimal)
        minimal.stop()
        return {"runs": runs, "levels": levels}

    def scale_out(self, started, site) -> dict:
        """Two instances of the site on one PostgreSQL and Redis against one; sessions cross between them."""
        args = self.args
        self.llm.set_delay(0)
        second = self.site(started)
        count = args.connections * 10
        half = args.connections // 2
        self.pool.wrk("warm-up", second.url, count, args.connections, 2)
        # Sessions last answered by each instance; each two-instance run sends them to the other one.
        last_on = {site.url: self.pool.take(count // 2), second.url: self.pool.take(count // 2)}
        runs = []
        for round_ in range(args.rounds):
            runs.append(self.pool.wrk(f"one #{round_ + 1}", site.url, count, args.connections, args.seconds,
                                      settle=site.cpu_seconds))
            load.wait_until_idle(lambda: site.cpu_seconds() + second.cpu_seconds())
            jobs = []
            with ThreadPoolExecutor(2) as executor:
                for here, there in ((site, second), (second, site)):
                    free = self.tmp / f"scale-{round_}-{there.port}.free"
                    jobs.append((there.url, free, executor.submit(
                        load.wrk, f"two #{round_ + 1} ({there.name} :{there.port})", there.url,
                        last_on[here.url], half, args.seconds, free_out=free)))
            for url, free, job in jobs:
                runs.append(job.result())
                last_on[url] = free
            two = runs[-2:]
            print(f"bench: scale-out round {round_ + 1}: one {runs[-3].turns_per_second:.0f} turns/s, "
                  f"two {sum(r.turns_per_second for r in two):.0f} turns/s, "
                  f"sessions not found {sum(r.lost for r in two)}, errors {sum(r.errors for r in two)}",
                  flush=True)
        started.remove(second)
        second.stop()
        return {"runs": runs}

if __name__ == "__main__":
    main()
