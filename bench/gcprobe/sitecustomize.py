"""Every garbage collection of the site's workers, timed: a development probe for bench runs.

    rm -f /tmp/gcprobe.*; PYTHONPATH=bench/gcprobe .venv/bin/python -m bench --only stream --rounds 1
    awk '{n[$2]++; s[$2]+=$4; if ($4>m[$2]) m[$2]=$4} END {for (g in n) print g, n[g], s[g], m[g]}' /tmp/gcprobe.*

Python imports `sitecustomize` at start from its path, and the bench passes PYTHONPATH on to the
servers it starts. In the site's gunicorn processes (its workers, and the master) this adds a gc
callback that appends one line per collection to /tmp/gcprobe.<pid>: the time, the generation, the
CPU it took the process's thread (ms), its wall time (ms) and what it freed. Python's own
collections are in it too, which the site's metric (chat_gc_pause_seconds: the collections
chatsite/collector.py runs) does not see. Other processes with it on their path log nothing.
"""

import gc
import os
import sys
import time

if "chatsite.asgi:application" in " ".join(sys.argv):
    _started: list[float] = [0.0, 0.0]

    def _timed(phase: str, info: dict) -> None:
        if phase == "start":
            _started[:] = [time.thread_time(), time.perf_counter()]
            return
        cpu, wall = (time.thread_time() - _started[0]) * 1000, (time.perf_counter() - _started[1]) * 1000
        with open(f"/tmp/gcprobe.{os.getpid()}", "a") as log:
            log.write(f"{time.time():.3f} gen{info['generation']} cpu {cpu:.1f} wall {wall:.1f} "
                      f"collected {info['collected']}\n")

    gc.callbacks.append(_timed)
