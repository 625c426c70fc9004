"""Structured logs: one JSON object a line, each carrying the request id.

Session ids work like passwords, so they never go into a log: code that needs
to tell sessions apart logs sessions.short_hash(session_id).
"""

import contextvars
import json
import logging
import time

# Set by RequestLogMiddleware; contextvars follow the request into the worker
# threads that sync_to_async runs database work in.
request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


class JsonFormatter(logging.Formatter):
    # Attributes every LogRecord has; anything else was passed in `extra` and is logged too.
    STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": request_id.get(),
        }
        for key, value in vars(record).items():
            if key not in self.STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)
