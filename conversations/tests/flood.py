"""Many connections to a site from one source address that never finish a request: a process
of its own, so that its sockets count against its own file descriptor limit, not the tests'.

    python -m conversations.tests.flood PORT SOURCE COUNT MODE

MODE is what each connection sends: `idle` nothing, `head` half a request head, `body` a whole
head and half its body. It sets its own limits and priority, prints `ready`, and waits for a line
on its standard input before it opens any (so that starting it costs the site nothing while the
test measures). It prints `opened N failed M` once all are open, then keeps them until its
standard input closes.
"""

import os
import resource
import socket
import sys

SENT = {
    "idle": b"",
    "head": b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ",
    "body": (b"POST /api/chat HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
             b"Content-Length: 100\r\n\r\n{\"message\": "),
}


def main(port: int, source: str, count: int, mode: str) -> None:
    # Room for its sockets, and a lower priority: on this machine its CPU is the site's (an
    # attacker's CPU is not).
    resource.setrlimit(resource.RLIMIT_NOFILE, (count + 100, count + 100))
    os.nice(10)
    print("ready", flush=True)
    sys.stdin.readline()
    held, failed = [], 0
    for _ in range(count):
        sock = socket.socket()
        try:
            sock.bind((source, 0))
            sock.settimeout(10)
            sock.connect(("127.0.0.1", port))
            if SENT[mode]:
                sock.sendall(SENT[mode])
        except OSError:
            sock.close()
            failed += 1
            continue
        held.append(sock)
    print(f"opened {len(held)} failed {failed}", flush=True)
    sys.stdin.read()
    for sock in held:
        sock.close()


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4])
