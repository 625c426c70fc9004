"""Open chat pages waiting for a staff reply, in a process of their own: `python -m bench.crowd PORT SESSIONS_FILE`.

Each session of SESSIONS_FILE is one open page (bench/waiting.py's Page: a
keep-alive connection that asks GET /api/updates again as soon as it answers).
Prints "OPEN n" once every page has its connection and its first poll sent, then
keeps them waiting until SIGTERM, and prints "BENCH {json}": polls answered and
pages that failed. Used by `python -m bench`'s "crowd" figure, which also holds
streams and probes /healthz meanwhile.
"""

import asyncio
import json
import resource
import signal
import sys

from .waiting import Page


async def main(port: int, sessions: list[str]) -> dict:
    pages = [Page(session, 0) for session in sessions]
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    tasks = []
    for index, page in enumerate(pages):
        # As a TLS-terminating load balancer sends them (the bench's site runs behind one).
        tasks.append(asyncio.ensure_future(page.run(port, stop, headers="X-Forwarded-Proto: https\r\n")))
        if index % 200 == 199:  # as pages open: not 10,000 SYNs in one burst past the listen backlog
            await asyncio.sleep(0.05)
    await asyncio.sleep(1)
    print(f"OPEN {len(pages)}", flush=True)
    await stop.wait()
    failed = [task.exception() for task in tasks if task.done() and not task.cancelled() and task.exception()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return {"pages": len(pages), "answers": sum(page.answers for page in pages), "failed": len(failed),
            "failure": repr(failed[0])[:300] if failed else ""}


if __name__ == "__main__":
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with open(sys.argv[2]) as f:
        found = f.read().split()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    print("BENCH " + json.dumps(asyncio.run(main(int(sys.argv[1]), found))), flush=True)
