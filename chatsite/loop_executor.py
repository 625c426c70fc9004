"""Django's thread-sensitive calls of the JSON API, run on the event loop's own thread.

Django's ASGI handler runs a few sync calls of its own in every request, all
thread-sensitive (`sync_to_async`'s default): its `request_started` receivers
at the start and `response.close()` (which sends `request_finished`) at the
end. Their receivers are Django's housekeeping of the calling thread's database
connections, queries log, caches and URLconf: on the event loop's thread, where
the API opens none of them (its ORM work runs in conversations/db.py's threads,
each closing its own connection; the turn store talks to PostgreSQL itself),
they find nothing to do. Handed to a thread, as Django does, each was a
hand-off there and back, twice a request: more CPU than the calls themselves
(docs/benchmarks.md).

So the API's requests (chatsite/asgi.py) run in a ThreadSensitiveContext whose
executor is `OnTheLoop`: a thread-sensitive call runs at once, in the calling
thread. The rule that goes with it: **the API runs no blocking sync code
through `sync_to_async(thread_sensitive=True)`** (the ORM would refuse anyway,
with SynchronousOnlyOperation, on a thread with a running event loop); blocking
work goes to a thread with `thread_sensitive=False`, as db.py does.
"""

from concurrent.futures import Executor, Future


class OnTheLoop(Executor):
    """An executor that runs each call at once, in the thread that submits it: one call at a time
    on one thread, as ThreadSensitiveContext(executor=...) asks."""

    def submit(self, fn, /, *args, **kwargs):
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as error:  # noqa: BLE001 - handed to the caller, as a thread's would be
            future.set_exception(error)
        return future
