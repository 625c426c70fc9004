"""Connections against the served site: held requests capped, slow and idle connections closed,
a flood of connections that never finish a request kept from the load balancer's check
(chatsite/worker.py, chatsite/asgi.py)."""

import json
import os
import select
import socket
import subprocess
import sys
import threading
import time
from contextlib import closing
from pathlib import Path

import pytest
from django.db import connection

from conversations.models import Conversation
from devtools.processes import ROOT, Site

from .client import SiteClient
from .helpers import need, site_env


@pytest.fixture
def capped_site(django_db_setup, django_db_blocker, fake_llm_server, postgres, llm):
    """A worker that holds at most 5 long polls and streams, 3 from one address, behind a trusted
    proxy on 127.0.0.1 (so that X-Forwarded-For says who the client is)."""
    with django_db_blocker.unblock():
        need(connection.vendor == "postgresql", "PostgreSQL (set DATABASE_URL)")
        env = site_env(fake_llm_server, CHAT_TRUSTED_PROXIES="127.0.0.1/32", CHAT_MAX_HELD_PER_ADDRESS="3",
                       CHAT_MAX_HELD="5", CHAT_UPDATES_WAIT="30", CHAT_LLM_DEADLINE="30")
    site = Site(env, name="capped-site")
    yield site
    site.stop()


@pytest.fixture(scope="module")
def impatient_site(django_db_setup, django_db_blocker, fake_llm_server):
    """A worker that gives a request's head and its body one second each."""
    with django_db_blocker.unblock():
        need(connection.vendor == "postgresql", "PostgreSQL (set DATABASE_URL)")
        env = site_env(fake_llm_server, CHAT_HEADER_TIMEOUT="1", CHAT_BODY_TIMEOUT="1")
    site = Site(env, name="impatient-site")
    yield site
    site.stop()


def conversation(site) -> tuple[str, int]:
    """A new conversation's session id and the seq of its latest message."""
    api = SiteClient(site)
    session_id = api.chat("Hi").ok()["sessionId"]
    return session_id, max(m["seq"] for m in api.history(session_id).ok()["messages"])


def long_poll(site, session_id: str, after: int, address: str):
    """GET /api/updates from `address`, sent and not read: it waits on the server."""
    held = SiteClient(site).connect(timeout=30)
    held.request("GET", f"/api/updates?after={after}&state=assistant",
                 headers={"X-Session-Id": session_id, "X-Forwarded-For": address})
    return held


def stream(site, message: str, address: str):
    """A streamed turn from `address`, its answer's head read (it is being served), its body not."""
    held = SiteClient(site).connect(timeout=30)
    held.request("POST", "/api/chat", body=json.dumps({"message": message}),
                 headers={"Content-Type": "application/json", "Accept": "text/event-stream",
                          "X-Forwarded-For": address})
    return held, held.getresponse()


def answered(connections, within: float) -> list:
    """The connections that have an answer (or were closed) within `within` seconds."""
    ready, _, _ = select.select([held.sock for held in connections], [], [], within)
    return [held for held in connections if held.sock in ready]


def refusal(held) -> tuple[int, dict, str | None]:
    response = held.getresponse()
    return response.status, json.loads(response.read()), response.getheader("Retry-After")


def test_long_polls_and_streams_past_an_address_cap_are_refused_while_others_are_served(capped_site):
    session_id, latest = conversation(capped_site)
    polls = [long_poll(capped_site, session_id, latest, "203.0.113.5") for _ in range(4)]
    try:
        refused = answered(polls, within=10)
        assert len(refused) == 1, "one of four polls from one address is refused at once"
        assert refusal(refused[0]) == (429, {"error": {
            "code": "too_many_connections",
            "message": "Too many open connections from your address; try again in a few seconds."}}, "5")
        assert answered([p for p in polls if p not in refused], within=1) == []  # the other three wait

        streamed = SiteClient(capped_site).chat("Hello", stream=True, headers={"X-Forwarded-For": "203.0.113.5"})
        assert streamed.status == 429 and streamed.body["error"]["code"] == "too_many_connections"
        assert streamed.headers["Content-Type"] == "application/json"

        # Another address is served: its poll, its stream, and a plain turn from the full address too.
        other = SiteClient(capped_site)
        assert other.updates(session_id, after=-1).ok()["messages"]
        assert other.chat("Hello", stream=True, headers={"X-Forwarded-For": "198.51.100.23"}).status == 200
        assert other.chat("Hello", headers={"X-Forwarded-For": "203.0.113.5"}).status == 200
    finally:
        for poll in polls:
            poll.close()


def test_held_requests_past_the_worker_cap_are_refused_and_the_place_comes_back(capped_site, llm):
    session_id, latest = conversation(capped_site)
    polls = [long_poll(capped_site, session_id, latest, "203.0.113.5") for _ in range(3)]
    llm.control("ok", delay=20)
    turn, head = stream(capped_site, "Tell me about returns", "198.51.100.23")  # held by the LLM
    polls.append(long_poll(capped_site, session_id, latest, "198.51.100.24"))  # the fifth
    try:
        assert head.status == 200
        assert answered(polls, within=1) == []
        late = long_poll(capped_site, session_id, latest, "192.0.2.77")
        assert answered([late], within=10) == [late]
        assert refusal(late) == (503, {"error": {
            "code": "overloaded", "message": "The site is busy right now; try again in a few seconds."}}, "5")
        api = SiteClient(capped_site)
        assert api.chat("Hello", stream=True, headers={"X-Forwarded-For": "192.0.2.77"}).status == 503
        assert api.health().status == 200

        polls.pop().close()  # a page goes away: its place is free again
        deadline = time.monotonic() + 10
        while True:
            again = long_poll(capped_site, session_id, latest, "192.0.2.77")
            if not answered([again], within=1):
                break  # held, not refused
            assert refusal(again)[0] == 503 and time.monotonic() < deadline
        again.close()
    finally:
        llm.control("ok")
        turn.close()
        for poll in polls:
            poll.close()


def test_turns_whose_question_never_arrives_whole_hold_no_place(live_site, fake_llm_server):
    """Half-sent turns are not turns in flight, nor held streams: they cannot fill the caps that
    protect the worker from real turns (until the body timeout, 30 s, would close them)."""
    site = Site(site_env(fake_llm_server, CHAT_MAX_TURNS_IN_FLIGHT="2", CHAT_MAX_HELD_PER_ADDRESS="1"),
                name="turn-capped-site")
    half_sent = []
    try:
        for accept in ["text/event-stream", "application/json", "application/json"]:
            sock = connect(site)
            sock.sendall(b"POST /api/chat HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                         b"Accept: " + accept.encode() + b"\r\nContent-Length: 100\r\n\r\n{\"message\": ")
            half_sent.append(sock)
        api = SiteClient(site)
        api.health()  # the half-sent requests were read as far as they go: the worker took them in order
        assert api.chat("Where is my parcel?").status == 200
        assert api.chat("And my refund?", stream=True).status == 200
    finally:
        for sock in half_sent:
            sock.close()
        site.stop()


def closed_within(sock: socket.socket, seconds: float) -> bytes | None:
    """What the site sent before it closed the connection, or None if it did not close it in time."""
    sock.settimeout(seconds)
    received = b""
    try:
        while chunk := sock.recv(4096):
            received += chunk
    except TimeoutError:
        return None
    return received


def connect(site) -> socket.socket:
    return socket.create_connection(("127.0.0.1", site.port), timeout=10)


REQUEST_TIMEOUT = {"error": {"code": "request_timeout", "message": "The request did not arrive in time; send it again."}}


def test_a_connection_that_sends_nothing_is_closed(impatient_site):
    with closing(connect(impatient_site)) as sock:
        assert closed_within(sock, 15) == b""


def test_a_request_head_trickled_in_is_answered_408_and_closed(impatient_site):
    """A byte at a time, each well within any per-read timeout: the whole head has a deadline."""
    with closing(connect(impatient_site)) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        deadline = time.monotonic() + 15
        answer = None
        while answer is None and time.monotonic() < deadline:
            try:
                sock.sendall(b"X")
            except OSError:  # closed under our feet: read what came
                pass
            answer = closed_within(sock, 0.2)
        assert answer is not None, "still open after 15 s"
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408 ") and json.loads(body) == REQUEST_TIMEOUT


def test_a_request_body_that_stops_is_answered_408_and_closed(impatient_site, postgres):
    with closing(connect(impatient_site)) as sock:
        sock.sendall(b"POST /api/chat HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{\"message\": ")
        answer = closed_within(sock, 15)
    assert answer is not None, "still open after 15 s"
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 ") and json.loads(body) == REQUEST_TIMEOUT
    assert not Conversation.objects.exists()


def test_a_kept_alive_connection_waits_for_its_next_request_longer_than_the_header_timeout(impatient_site):
    """Between requests the keep-alive timeout (75 s, for load balancers that reuse connections)
    applies, not the head's."""
    held = SiteClient(impatient_site).connect()
    try:
        for _ in range(3):
            held.request("GET", "/healthz")
            response = held.getresponse()
            response.read()
            assert response.status == 200
            time.sleep(2)
    finally:
        held.close()


# --- A flood of connections that never finish a request ---------------------------------------


def worker_sockets(master: int) -> dict[int, int]:
    """Each gunicorn worker's open sockets."""
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    counts = {}
    for pid in map(int, children):
        fds = Path(f"/proc/{pid}/fd")
        counts[pid] = sum(1 for fd in fds.iterdir() if _link(fd).startswith("socket:"))
    return counts


def _link(fd: Path) -> str:
    try:
        return os.readlink(fd)
    except FileNotFoundError:  # closed meanwhile
        return ""


def test_twenty_thousand_idle_and_half_sent_connections_leave_health_at_200_within_a_second(
        postgres, fake_llm_server):
    """Two workers, the caps at their defaults; 20,000 connections from four addresses that send
    nothing, half a head, or a head and half a body, while the load balancer asks /healthz."""
    need(connection.vendor == "postgresql", "PostgreSQL (set DATABASE_URL)")
    need(sys.platform == "linux", "Linux (127.0.0.2-5 on loopback, /proc)")
    site = Site(site_env(fake_llm_server, WEB_CONCURRENCY="2", CHAT_UPDATES_WAIT="120"), name="flooded-site")
    session_id, latest = conversation(site)
    # A customer's long poll, waiting throughout: a request that has arrived is never pushed out.
    waiting = [long_poll(site, session_id, latest, "203.0.113.5") for _ in range(2)]
    probes: list[tuple[float, float, int | str]] = []  # (when, how long, status)
    stop = threading.Event()
    begun = 0.0  # when the probes start

    def probe():
        api = SiteClient(site, timeout=10)
        while not stop.is_set():
            started = time.monotonic()
            try:
                status: int | str = api.health().status
            except OSError as error:
                status = repr(error)
            probes.append((started - begun, time.monotonic() - started, status))
            stop.wait(0.1)

    floods = []
    prober = threading.Thread(target=probe)
    try:
        # The four processes start (a fork of this large process each) before the probes do: the
        # figure is the site's, not this process's.
        for source, mode in [("127.0.0.2", "idle"), ("127.0.0.3", "head"), ("127.0.0.4", "body"),
                             ("127.0.0.5", "idle")]:
            floods.append(subprocess.Popen(
                [sys.executable, "-m", "conversations.tests.flood", str(site.port), source, "5000", mode],
                cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
        for flood in floods:
            assert flood.stdout is not None and flood.stdout.readline() == "ready\n"
        begun = time.monotonic()
        prober.start()
        time.sleep(0.3)  # a few probes before the flood
        for flood in floods:
            assert flood.stdin is not None
            flood.stdin.write("go\n")
            flood.stdin.flush()
        opened = 0
        for flood in floods:
            assert flood.stdout is not None
            report = flood.stdout.readline().split()  # "opened N failed M", once all are open
            opened += int(report[1])
        time.sleep(3)  # the last ones are accepted and waiting
        held = worker_sockets(site.pid)
        pushed_out = answered(waiting, within=0)
        print(f"flood opened at {time.monotonic() - begun - 3:.1f} s")
    finally:
        stop.set()
        prober.join()
        for flood in floods:
            flood.communicate(timeout=60)
        for poll in waiting:
            poll.close()
        site.stop()

    print(f"{opened} connections opened; {len(probes)} probes, the slowest {max(s for _, s, _ in probes):.3f} s; "
          f"sockets per worker {held}")
    assert opened >= 19_000, f"only {opened} connections were opened"
    assert pushed_out == []
    # CHAT_MAX_CONNECTIONS (4000) each, and a few of the worker's own (database, Redis, LLM).
    assert len(held) == 2 and all(count <= 4100 for count in held.values()), held
    slow = [(round(at, 1), round(seconds, 2), status) for at, seconds, status in probes
            if status != 200 or seconds >= 1]
    assert len(probes) > 20 and not slow, f"{len(slow)} of {len(probes)} probes: {slow[:10]}"
