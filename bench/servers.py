"""The processes of a benchmark run, and what can be read about them from /proc.

Everything listens on 127.0.0.1 only. The bench has a PostgreSQL database of its
own on the machine's server (created and dropped here) and a redis-server of its
own, so it touches no one else's data and Redis command counts are its alone.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import redis

from devtools.fake_llm import FakeLLM
from devtools.processes import (  # noqa: F401 (bench's API)
    ROOT,
    SITE_CONFIG,
    RedisServer,
    Site,
    procfile_web_command,
    wait_for_port,
)

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# As a TLS-terminating load balancer sends them (the site runs with DJANGO_BEHIND_TLS_PROXY=1).
HEADERS = {"X-Forwarded-Proto": "https"}


# --- /proc ------------------------------------------------------------------


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process (not its children)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_kib(pid: int) -> int:
    try:
        match = re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text())
    except OSError:
        return 0
    return int(match.group(1)) if match else 0


def threads(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return 0


def machine_cpu_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, all cores together."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    total = sum(values[:8])
    return (total - idle) / CLOCK_TICKS, total / CLOCK_TICKS


def machine_description() -> str:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"model name\s*:\s*(.*)", cpuinfo)
    mem = re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text())
    os_name = re.search(r'PRETTY_NAME="(.*)"', Path("/etc/os-release").read_text())
    pg = subprocess.run(["psql", "--version"], capture_output=True, text=True).stdout.strip()
    redis = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split()
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.splitlines()
    return (
        f"{os.cpu_count()} cores ({model.group(1) if model else 'unknown CPU'}), "
        f"{int(mem.group(1)) // 1024 // 1024 if mem else '?'} GiB RAM, "
        f"{os_name.group(1) if os_name else 'Linux'}, Python {sys.version.split()[0]}, "
        f"{pg.replace('psql (PostgreSQL) ', 'PostgreSQL ')}, "
        f"Redis {redis[2].removeprefix('v=') if len(redis) > 2 else '?'}, "
        f"{wrk[0].split(' [')[0] if wrk else 'wrk'}"
    )


# --- PostgreSQL ---------------------------------------------------------------


class BenchDatabase:
    """A database of the bench's own on the machine's PostgreSQL, dropped at the end."""

    def __init__(self, url: str):
        parts = urlsplit(url)
        self.name = parts.path.lstrip("/")
        if "bench" not in self.name:
            raise SystemExit(f"refusing to use database {self.name!r}: its name must contain 'bench'")
        self.url = url
        self.maintenance_url = urlunsplit(parts._replace(path="/postgres"))

    def create(self) -> None:
        with psycopg.connect(self.maintenance_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{self.name}"')

    def drop(self) -> None:
        with psycopg.connect(self.maintenance_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    def url_via(self, port: int) -> str:
        """The database's URL through a proxy on 127.0.0.1:port (no TLS, so it can be read)."""
        parts = urlsplit(self.url)
        netloc = parts.netloc.rsplit("@", 1)
        host = f"127.0.0.1:{port}"
        return urlunsplit(parts._replace(
            netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host, query="sslmode=disable"
        ))

    def backends(self) -> list[tuple[int, str]]:
        """(pid, state) of every connection to the bench database but this one."""
        with psycopg.connect(self.maintenance_url, autocommit=True) as conn:
            return conn.execute(
                "SELECT pid, coalesce(state, '') FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                [self.name],
            ).fetchall()

    def cpu_seconds(self) -> float:
        """CPU seconds of the connections' backends so far (a backend gone since is not counted)."""
        return sum(cpu_seconds(pid) for pid, _ in self.backends())


# --- Redis --------------------------------------------------------------------


class BenchRedis(RedisServer):
    """devtools' redis-server, started at once, and the commands it has run."""

    def __init__(self, tmp: Path):
        if shutil.which("redis-server") is None:
            raise SystemExit("the benchmark needs redis-server (apt-get install redis-server)")
        super().__init__(tmp)
        self.start()

    def command_calls(self) -> dict[str, int]:
        """Calls per command since the start (INFO commandstats), the INFO calls themselves left out."""
        with redis.Redis(port=self.port) as client:
            stats = client.info("commandstats")
        return {
            name.removeprefix("cmdstat_"): value["calls"]
            for name, value in stats.items()
            if name != "cmdstat_info"
        }


# --- The fake LLM ---------------------------------------------------------------


class StandInLLM:
    """devtools/fake_llm.py, the OpenAI-compatible stand-in, with a settable delay."""

    def __init__(self):
        self.fake = FakeLLM().start()
        self.url = self.fake.url

    @property
    def pid(self) -> int:
        return self.fake.process.pid

    def set_delay(self, seconds: float) -> None:
        # reset() also empties the request log, which would otherwise grow by every request.
        self.fake.reset()
        # A reply of 20 pieces spread over the delay, as a model streams, each stamped with
        # the time it was sent (bench/stream.py reads the stamps).
        self.fake.control("ok", delay=seconds, chunks=20, stamp=True)

    def stop(self) -> None:
        self.fake.stop()


# --- Web servers ------------------------------------------------------------------


class WebServer(Site):
    """The Procfile's web command (devtools.processes.Site), and what its processes cost.

    Unlike the tests' Site it runs the Procfile's own number of workers unless
    `env` says WEB_CONCURRENCY, and it may serve another tree (an exported
    revision, `--compare`) or use another uvicorn worker class.
    """

    def __init__(self, name: str, env: dict[str, str], log: Path, app: str | None = None,
                 tree: Path = ROOT, worker_class: str | None = None):
        self.tree, self.worker_class = tree, worker_class
        super().__init__(env, log_path=log, app=app, name=name)

    def start(self) -> None:
        web = next(line for line in (self.tree / "Procfile").read_text().splitlines() if line.startswith("web:"))
        command = web.removeprefix("web:").strip().replace("0.0.0.0", "127.0.0.1")
        if self.app:
            command = command.replace("chatsite.asgi:application", self.app)
        if self.worker_class:
            command = re.sub(r"--worker-class \S+", f"--worker-class {self.worker_class}", command)
        base = {k: v for k, v in os.environ.items() if k not in SITE_CONFIG}
        with self.log_path.open("a") as log:
            self.process = subprocess.Popen(
                ["bash", "-c", "exec " + command], cwd=self.tree,
                env={**base, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
                     "PORT": str(self.port), **self.env},
                stdout=log, stderr=subprocess.STDOUT,
            )
        wait_for_port(self.port, self.process, self.name)
        self._wait_for_a_worker()

    def workers(self) -> list[int]:
        return children(self.pid)

    def cpu_seconds(self) -> float:
        return sum(cpu_seconds(pid) for pid in [self.pid, *self.workers()])

    def post(self, body: dict) -> tuple[int, dict]:
        request = urllib.request.Request(
            self.url + "/api/chat", data=json.dumps(body).encode(),
            headers={**HEADERS, "Content-Type": "application/json"}, method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())
