"""The site and its services as processes of their own, for the tests and bench/.

`Site` runs the Procfile's `web` command exactly as a platform would (gunicorn
with uvicorn workers), only on 127.0.0.1 and a free port; `RedisServer` is a
redis-server that can be stopped and started again, to inject a Redis outage.
"""

from __future__ import annotations

import http.client
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# What the site reads to find its database, cache and worker count: never taken
# from the environment the tests or bench run in, only from what they pass.
SITE_CONFIG = {"DATABASE_URL", "REDIS_URL", "WEB_CONCURRENCY"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with status {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on port {port} within {timeout} s")


def stop(process: subprocess.Popen | None, timeout: float = 15) -> None:
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# How long a site may take to serve: a second or two on an idle machine, but a worker's import of
# the site took 27 s at a load of 12 on two cores (tests run beside other work).
SITE_START_TIMEOUT = 90


def procfile_command(name: str) -> str:
    """The command of a Procfile process type (`web`, `release`)."""
    line = next(line for line in (ROOT / "Procfile").read_text().splitlines() if line.startswith(f"{name}:"))
    return line.removeprefix(f"{name}:").strip()


def procfile_web_command() -> str:
    # Same command, but reachable from this machine only.
    return procfile_command("web").replace("0.0.0.0", "127.0.0.1")


class Site:
    """The Procfile's web command in a subprocess: gunicorn's master and its uvicorn workers.

    `env` is the site's configuration (DATABASE_URL, REDIS_URL, ... as a platform
    sets them); one worker unless it says WEB_CONCURRENCY. `app` replaces the ASGI
    application (bench/'s anchor). Output goes to `log_path` (a new temporary
    file if none): `log()` reads it.
    """

    def __init__(self, env: dict[str, str], log_path: Path | None = None, app: str | None = None,
                 name: str = "site"):
        self.name = name
        self.env = env
        self.app = app
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path or Path(tempfile.mkstemp(prefix=f"{name}-", suffix=".log")[1])
        self.log_from = 0  # log() reads from here (mark())
        self.process: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        command = procfile_web_command()
        if self.app:
            command = command.replace("chatsite.asgi:application", self.app)
        base = {k: v for k, v in os.environ.items() if k not in SITE_CONFIG}
        with self.log_path.open("a") as log:
            self.process = subprocess.Popen(
                ["bash", "-c", "exec " + command],
                cwd=ROOT,
                env={**base, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
                     "PORT": str(self.port), "WEB_CONCURRENCY": "1", **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_for_port(self.port, self.process, self.name, SITE_START_TIMEOUT)
            self._wait_for_a_worker()
        except RuntimeError as error:
            self.stop()
            raise RuntimeError(f"{error}:\n{self.log()[-4000:]}") from None

    def _wait_for_a_worker(self, timeout: float = SITE_START_TIMEOUT) -> None:
        # The master listens before its workers have imported the app; any
        # HTTP answer at all (405, 404, a redirect) means a worker is serving.
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with status {self.process.returncode}")
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            try:
                connection.request("GET", "/api/chat")
                connection.getresponse().read()
                return
            except OSError:
                time.sleep(0.1)
            finally:
                connection.close()
        raise RuntimeError(f"{self.name} did not answer within {timeout} s")

    @property
    def pid(self) -> int:
        """gunicorn's master."""
        assert self.process is not None, f"{self.name} is not running"
        return self.process.pid

    def mark(self) -> None:
        """From now on log() reads only what the site writes after this call (a test's own part of a
        site shared by many tests)."""
        self.log_from = self.log_path.stat().st_size if self.log_path.exists() else 0

    def log(self) -> str:
        with self.log_path.open("rb") as log:
            log.seek(self.log_from)
            return log.read().decode(errors="replace")

    def stop(self) -> None:
        process, self.process = self.process, None
        stop(process)


class RedisServer:
    """A redis-server of the caller's own on a free port, which may be stopped and started again."""

    def __init__(self, directory: Path):
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.dir = directory
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with status {self.process.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        process, self.process = self.process, None
        stop(process, timeout=10)
