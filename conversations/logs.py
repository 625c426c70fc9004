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
    """One JSON object a line, whatever the record holds: newlines, U+2028, control characters
    and every other non-ASCII character in the message, its arguments, `extra` fields or the
    exception's text are escaped (ensure_ascii), so that nothing logged can end the line or
    start a line that looks like a record. A record that cannot be formatted as it is (a
    message whose arguments do not fit it, a value that is no JSON and has no str()) is still
    one line, with what could be read of it."""

    # Attributes every LogRecord has; anything else was passed in `extra` and is logged too.
    STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": _message(record),
            "request_id": request_id.get(),
        }
        for key, value in vars(record).items():
            if key not in self.STANDARD and not key.startswith("_"):
                entry[str(key)] = value
        if record.exc_info:
            entry["exception"] = _safely(self.formatException, record.exc_info)
        if record.stack_info:
            entry["stack"] = record.stack_info
        try:
            return json.dumps(entry, default=_text, ensure_ascii=True)
        except (TypeError, ValueError, RecursionError):  # a key that is no string, a circular value
            return json.dumps({key: value if isinstance(value, str | int | float | bool | None) else _text(value)
                               for key, value in entry.items()}, ensure_ascii=True)


def _message(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except Exception:  # noqa: BLE001 - arguments that do not fit the message: log both as they are
        return f"{_text(record.msg)} {_text(record.args)}"


def _text(value: object) -> str:
    return _safely(str, value)


def _safely(func, value) -> str:
    try:
        return func(value)
    except Exception:  # noqa: BLE001 - a value whose str() fails is named by its type
        return f"<unprintable {type(value).__name__}>"
