"""Driving a server with wrk and chat.lua, and what a run measured."""

import itertools
import json
import resource
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from . import servers

SCRIPT = Path(__file__).resolve().parent / "chat.lua"


def ensure_wrk() -> None:
    """Install Debian's wrk when it is missing and we may (root with apt-get), as `make chromium` does."""
    if shutil.which("wrk"):
        return
    if shutil.which("apt-get") and servers.os.geteuid() == 0:
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True,
                       env={**servers.os.environ, "DEBIAN_FRONTEND": "noninteractive"},
                       stdout=subprocess.DEVNULL)
    if not shutil.which("wrk"):
        raise SystemExit("the benchmark needs wrk: sudo apt-get install wrk")


@dataclass
class Run:
    """One wrk run against one server."""

    label: str
    seconds: float
    requests: int
    statuses: dict[str, int]
    lost: int
    starved: int
    socket_errors: dict[str, int]
    latency_ms: dict[str, float]
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    peaks: dict[str, float] = field(default_factory=dict)
    # bench/stream.py's: time to first token, what the server added to it, stalls.
    stream: dict = field(default_factory=dict)

    @property
    def ok(self) -> int:
        return sum(n for status, n in self.statuses.items() if status.startswith("2"))

    @property
    def errors(self) -> int:
        """Everything that is not a completed turn: non-2xx, socket errors, timeouts, lost sessions."""
        socket_errors = sum(n for kind, n in self.socket_errors.items() if kind != "status")
        return self.requests - self.ok + socket_errors + self.lost

    @property
    def turns_per_second(self) -> float:
        return self.ok / self.seconds


class _Background:
    """`tick()` in a thread of its own while the `with` block runs; `tick` returns the seconds until
    the next one."""

    def __init__(self):
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._stop.wait(self.tick())

    def tick(self) -> float:
        raise NotImplementedError


class Sampler(_Background):
    """Samples, every `interval` s while a run lasts, the values that `probes` return; keeps each peak."""

    def __init__(self, probes: dict, interval: float = 0.5):
        super().__init__()
        self.probes = probes
        self.interval = interval
        self.peaks: dict[str, float] = {name: 0 for name in probes}

    def tick(self) -> float:
        for name, probe in self.probes.items():
            try:
                self.peaks[name] = max(self.peaks[name], probe())
            except Exception:  # noqa: BLE001 - a probe that fails once (a process gone) is skipped
                pass
        return self.interval


class Sessions:
    """Session ids with no turn in flight, handed out to one run at a time.

    A run takes some and gives back those it did not leave with a turn cut off
    at its end (chat.lua's FREE_FILE); those are never used again.
    """

    def __init__(self, ids: list[str], scratch: Path):
        self.ids = deque(ids)
        self.scratch = scratch
        self._files = itertools.count()

    def take(self, count: int) -> Path:
        if len(self.ids) < count:
            raise RuntimeError(f"{count} sessions wanted, {len(self.ids)} left: seed more (--sessions)")
        path = self.scratch / f"run-{next(self._files)}.txt"
        path.write_text("\n".join(self.ids.popleft() for _ in range(count)) + "\n")
        return path

    def give_back(self, path: Path) -> None:
        self.ids.extend(path.read_text().split())

    def wrk(self, label: str, url: str, count: int, connections: int, seconds: float, driver=None,
            **options) -> "Run":
        """A wrk run over `count` of the sessions (or `driver`'s: `stream`, bench/stream.py's)."""
        path = self.take(count)
        free = path.with_suffix(".free")
        run = (driver or wrk)(label, url, path, connections, seconds, free_out=free, **options)
        self.give_back(free)
        return run


class HealthProbe(_Background):
    """GET /healthz every `interval` s on a new connection each time, as a load balancer does, in a
    thread while the block runs; summary() gives the latencies since the start or the last reset()."""

    def __init__(self, url: str, interval: float = 0.1):
        super().__init__()
        self.url, self.interval = url + "/healthz", interval
        self.latencies: list[float] = []
        self.failures = 0

    def tick(self) -> float:
        started = time.monotonic()
        try:
            request = urllib.request.Request(self.url, headers=servers.HEADERS)
            with urllib.request.urlopen(request, timeout=30) as response:
                response.read()
                ok = response.status == 200
        except (OSError, urllib.error.URLError):
            ok = False
        elapsed = time.monotonic() - started
        self.latencies.append(elapsed)
        self.failures += not ok
        return max(0.0, self.interval - elapsed)

    def reset(self) -> None:
        self.latencies, self.failures = [], 0

    def summary(self) -> dict:
        found = sorted(self.latencies)
        at = lambda share: 1000 * found[min(len(found) - 1, int(share * len(found)))] if found else 0.0  # noqa: E731
        return {"probes": len(found), "failures": self.failures, "p50_ms": at(0.5), "p99_ms": at(0.99),
                "max_ms": 1000 * found[-1] if found else 0.0}


def wait_until_idle(cpu_seconds, limit: float = 15) -> None:
    """Wait (at most `limit` s) until a server is idle: the turns a previous run cut off have ended."""
    deadline = time.monotonic() + limit
    last = cpu_seconds()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = cpu_seconds()
        if now - last < 0.5 * 0.05:  # under 5% of a core
            return
        last = now


def wrk(
    label: str,
    url: str,
    sessions_file: Path,
    connections: int,
    seconds: float,
    threads: int = 2,
    stop_after: int = 0,
    timeout: float = 10,
    cpu: dict | None = None,
    probes: dict | None = None,
    free_out: Path | None = None,
    settle=None,
) -> Run:
    """Run wrk against url/api/chat; `cpu` maps names to functions giving CPU seconds, read around the run."""
    threads = min(threads, connections)
    command = [
        "wrk", "-t", str(threads), "-c", str(connections), "-d", f"{max(1, round(seconds))}s",
        "--timeout", f"{max(1, round(timeout))}s", "-s", str(SCRIPT), url + "/api/chat",
        "--", str(sessions_file), str(threads), str(stop_after), str(free_out or ""),
    ]
    return measure(label, command, seconds, timeout, cpu, probes, settle)


def stream(
    label: str,
    url: str,
    sessions_file: Path,
    connections: int,
    seconds: float,
    timeout: float = 60,
    cpu: dict | None = None,
    probes: dict | None = None,
    free_out: Path | None = None,
    settle=None,
) -> Run:
    """Streamed turns (bench/stream.py) against url/api/chat, measured as `wrk` measures."""
    command = [sys.executable, "-m", "bench.stream", url, str(sessions_file), str(connections),
               str(seconds), str(free_out or ""), str(timeout)]
    return measure(label, command, seconds, timeout, cpu, probes, settle)


def measure(label: str, command: list[str], seconds: float, timeout: float, cpu: dict | None,
            probes: dict | None, settle) -> Run:
    """Run a load driver that prints "BENCH {json}" (chat.lua's shape), with CPU read around it."""
    if settle:
        wait_until_idle(settle)
    cpu = dict(cpu or {})
    cpu["machine"] = lambda: servers.machine_cpu_seconds()[0]
    # The driver's own CPU (wrk's or bench.stream's): the only child reaped during the run.
    cpu["wrk"] = lambda: sum(resource.getrusage(resource.RUSAGE_CHILDREN)[:2])
    before = {name: read() for name, read in cpu.items()}
    started = time.monotonic()
    with Sampler(probes or {}) as sampler:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   cwd=servers.ROOT)
        out, err = process.communicate(timeout=seconds + timeout + 60)
    elapsed = time.monotonic() - started
    used = {name: read() - before[name] for name, read in cpu.items()}
    line = next((row for row in out.splitlines() if row.startswith("BENCH ")), None)
    if process.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({process.returncode}):\n{out}\n{err}")
    data = json.loads(line.removeprefix("BENCH "))
    used["machine"] = used["machine"] / elapsed  # busy cores on average, everything on the machine
    return Run(
        label=label,
        seconds=data["duration_us"] / 1e6,
        requests=data["requests"],
        statuses=data["statuses"],
        lost=data["lost"],
        starved=data["starved"],
        socket_errors=data["errors"],
        latency_ms={k: v / 1000 for k, v in data["latency_us"].items()},
        cpu_seconds=used,
        peaks=dict(sampler.peaks),
        stream=data.get("stream", {}),
    )
