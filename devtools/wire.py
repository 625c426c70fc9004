"""A PostgreSQL proxy that records what the site sends: every statement and every round trip (bench/, tests).

Counting from outside the site sees what Django's query log does not: BEGIN,
COMMIT and whatever a connection pool or a connection's setup sends. It reads
the frontend protocol only (messages are a type byte and a length); the
server's answers pass through untouched.
"""

import asyncio
import struct
import threading

SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104


class WireLog:
    """Listens on 127.0.0.1:port and forwards to PostgreSQL at target; `events` is what clients sent."""

    def __init__(self, target_host: str, target_port: int):
        self.target = (target_host, target_port)
        # ("query", sql) for each statement run; ("parse", sql) for each parsed for one run and
        # ("prepare", sql) for each prepared on a connection (parsed once for many runs);
        # ("sync", "") for each extended-protocol round trip.
        self.events: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self.port = 0
        threading.Thread(target=self._run, daemon=True).start()
        self._ready.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._client, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    def clear(self) -> None:
        with self._lock:
            self.events.clear()

    def snapshot(self) -> list[tuple[str, str]]:
        with self._lock:
            return list(self.events)

    def _record(self, kind: str, sql: str = "") -> None:
        with self._lock:
            self.events.append((kind, sql))

    async def _client(self, client_reader, client_writer) -> None:
        server_reader, server_writer = await asyncio.open_connection(*self.target)
        back = asyncio.ensure_future(_pipe(server_reader, client_writer))
        try:
            await self._frontend(client_reader, server_writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            server_writer.close()
            back.cancel()
            client_writer.close()

    async def _frontend(self, reader, writer) -> None:
        # Startup: untyped messages (length, code), perhaps an SSL/GSS request first.
        while True:
            head = await reader.readexactly(8)
            length, code = struct.unpack("!ii", head)
            writer.write(head + await reader.readexactly(length - 8))
            await writer.drain()
            if code not in (SSL_REQUEST, GSSENC_REQUEST):
                break
        statements: dict[bytes, str] = {}  # this connection's, by name (b"": the unnamed one)
        while True:
            head = await reader.readexactly(5)
            kind, length = head[:1], struct.unpack("!i", head[1:])[0]
            body = await reader.readexactly(length - 4)
            if kind == b"Q":  # simple query: one round trip
                self._record("query", body.rstrip(b"\0").decode(errors="replace"))
                self._record("sync")
            elif kind == b"P":  # parse: name\0 query\0 ... (named: a statement prepared)
                name, query = body.split(b"\0", 2)[:2]
                statements[name] = query.decode(errors="replace")
                self._record("prepare" if name else "parse", statements[name])
            elif kind == b"B":  # bind: portal\0 statement\0 ...: a statement run, prepared or not
                self._record("query", statements.get(body.split(b"\0", 2)[1], ""))
            elif kind == b"S":  # sync: the client waits for the server
                self._record("sync")
            writer.write(head + body)
            await writer.drain()


async def _pipe(reader, writer) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


TRANSACTION_CONTROL = {"BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE"}


def summarize(events: list[tuple[str, str]]) -> dict:
    """The statements sent, sorted: SQL proper, transaction control, and the pool's health checks
    (psycopg_pool's check_connection sends an empty query each time it hands out a connection)."""
    sent = [sql for kind, sql in events if kind == "query"]
    return {
        "statements": [s for s in sent if s.strip() and s.split()[0].upper() not in TRANSACTION_CONTROL],
        "transaction_control": [s for s in sent if s.strip() and s.split()[0].upper() in TRANSACTION_CONTROL],
        "health_checks": [s for s in sent if not s.strip()],
        "round_trips": sum(1 for kind, _ in events if kind == "sync"),
    }
