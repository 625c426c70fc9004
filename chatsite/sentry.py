"""Error reports to Sentry (or any Sentry-compatible service), when SENTRY_DSN is set.

A session id works like a password: whoever has it can read and continue the
conversation. It reaches the site in the JSON body, the X-Session-Id header,
and from there local variables, exception messages, SQL and log lines; so every
event and breadcrumb is scrubbed of anything shaped like a UUID before it leaves
the process, wherever in the event it sits. Request bodies (the customers' own
words), prompts and replies, and personal data (cookies, addresses, users) are
not collected at all.
"""

import re
from typing import TYPE_CHECKING, Any, cast

import sentry_sdk
from sentry_sdk.integrations.django import DjangoIntegration

if TYPE_CHECKING:
    from sentry_sdk._types import Breadcrumb, BreadcrumbHint, Event, Hint

FILTERED = "[Filtered]"
# A UUID in any spelling a client or the code may give it: canonical, upper
# case, in braces, or as 32 bare hex digits (uuid.hex); not the inside of a
# longer run of hex digits (a commit id, a hash).
UUID_LIKE = re.compile(
    r"(?<![0-9a-f])[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}(?![0-9a-f])",
    re.IGNORECASE,
)
# Sentry's own ids, which are UUIDs or hex too and must reach it as they are.
SENTRY_IDS = {"event_id", "trace_id", "span_id", "parent_span_id", "sid", "profile_id", "replay_id",
              "release", "dist"}
SESSION_HEADERS = {"x-session-id"}


def scrub(value: Any) -> Any:
    """`value` with every UUID-shaped string in it (at any depth) replaced by [Filtered]."""
    if isinstance(value, str):
        return UUID_LIKE.sub(FILTERED, value)
    if isinstance(value, dict):
        return {
            key: item if key in SENTRY_IDS
            else FILTERED if isinstance(key, str) and key.lower() in SESSION_HEADERS
            else scrub(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [scrub(item) for item in value]
    return value


def before_send(event: "Event", hint: "Hint") -> "Event":
    return cast("Event", scrub(event))


def before_breadcrumb(crumb: "Breadcrumb", hint: "BreadcrumbHint") -> "Breadcrumb":
    return cast("Breadcrumb", scrub(crumb))


# What the SDK collects by itself (sentry-sdk's data_collection), before the
# scrubbing above: no bodies (the customers' words, prompts and replies), no
# cookies, no user, no SQL parameters; headers and query strings minus the
# SDK's sensitive names (which include "session"); local variables, scrubbed,
# because a traceback without them rarely says enough.
DATA_COLLECTION = {
    "user_info": False,
    "cookies": {"mode": "off"},
    "http_headers": {"request": {"mode": "denylist", "terms": ["forwarded", "-ip", "remote-", "via", "-user"]}},
    "http_bodies": [],
    "url_query_params": {"mode": "denylist"},
    "gen_ai": {"inputs": False, "outputs": False},
    "database_query_data": False,
    "queues": False,
    "stack_frame_variables": True,
}


def init(dsn: str, environment: str, **options: Any) -> None:
    """sentry_sdk.init with the settings above; `options` may add or replace any of them."""
    sentry_sdk.init(**{
        "dsn": dsn,
        "environment": environment,
        "integrations": [DjangoIntegration()],
        "data_collection": DATA_COLLECTION,
        "before_send": before_send,
        "before_send_transaction": before_send,
        "before_breadcrumb": before_breadcrumb,
        **options,
    })
