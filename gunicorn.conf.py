"""gunicorn's settings file, which gunicorn reads from the directory it starts in: the Procfile's
`web` command, `make run` and the Docker image all start it here.

It holds only what the command line cannot say: the directory where each worker writes its
Prometheus counts (conversations/metrics.py), so that a scrape, which lands on one worker,
reports the whole site. PROMETHEUS_MULTIPROC_DIR if set (emptied when the site starts, as
counts of a past run would be added to this one's), else a new temporary directory,
removed when the site stops. A worker that exits has its live gauges dropped; its counters
stay, so that a site's totals never go backwards while it runs.
"""

import os
import shutil
import tempfile
from pathlib import Path

# Set here, when gunicorn reads this file, before it starts a worker. prometheus-client reads
# it once, when it is first imported: so not here, where the workers would inherit it unset.
# The one it made is named in a variable of its own: gunicorn reads this file again on a reload
# (SIGHUP), when PROMETHEUS_MULTIPROC_DIR is set already.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="chatsite-metrics-")
    os.environ["CHATSITE_METRICS_TEMPORARY_DIR"] = os.environ["PROMETHEUS_MULTIPROC_DIR"]


def on_starting(server):
    directory = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink()


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    if made := os.environ.get("CHATSITE_METRICS_TEMPORARY_DIR"):
        shutil.rmtree(made, ignore_errors=True)
