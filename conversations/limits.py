"""Abuse and cost limits: request rates and daily token budgets, counted in Redis.

Rates are fixed windows (`20/m`: at most 20 in each clock minute), counted in
Redis so that every worker shares them. The decision for when Redis is down (or
not configured): count in this process instead. Each worker then enforces the
limit on its own, so a client may get up to WEB_CONCURRENCY times the limit for
as long as Redis is away, but nobody is blocked for nothing and nothing goes
unlimited.

Budgets count LLM tokens per session and for the whole site per UTC day. They
are checked before the LLM is called and spent after it answered; the offline
responder costs nothing and is not counted.
"""

import hashlib
import ipaddress
import logging
import re
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from django.conf import settings
from django.core.cache import cache

from . import cache_guard
from .errors import ApiError

logger = logging.getLogger(__name__)

RATE = re.compile(r"(\d+)\s*/\s*(\d*)\s*([smhd])")
PERIOD_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class Limited(ApiError):
    """Over a limit; `retry_after` is the number of seconds until it lifts."""

    def __init__(self, code: str, message: str, retry_after: int, status: int = 429):
        super().__init__(status, code, message, retry_after=retry_after)


@dataclass(frozen=True)
class Rate:
    limit: int
    seconds: int


def parse_rate(value: str) -> Rate | None:
    """`"20/m"` -> Rate(20, 60); `"0"` or `""` -> None (no limit); `"5/10s"` is 5 per 10 seconds."""
    value = value.strip()
    if value in {"", "0"}:
        return None
    match = RATE.fullmatch(value)
    if not match:
        raise ValueError(f"not a rate like '20/m' or '10/h': {value!r}")
    limit, count, unit = match.groups()
    if int(limit) == 0:
        return None
    return Rate(int(limit), int(count or 1) * PERIOD_SECONDS[unit])


def client_ip(request) -> str:
    """REMOTE_ADDR, unless it is a trusted proxy: then the nearest untrusted X-Forwarded-For address."""
    remote = request.META.get("REMOTE_ADDR", "")
    if not _trusted_proxy(remote):
        return remote
    forwarded = [a.strip() for a in request.headers.get("X-Forwarded-For", "").split(",") if a.strip()]
    for address in reversed(forwarded):
        if not _trusted_proxy(address):
            return address
    return remote


def _trusted_proxy(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(net, strict=False) for net in settings.CHAT_TRUSTED_PROXIES)


def _hashed(session_id: uuid.UUID) -> str:
    return hashlib.sha256(session_id.bytes).hexdigest()[:16]


# --- Counting -------------------------------------------------------------------

_local_counts: dict[str, tuple[int, float]] = {}
_local_lock = threading.Lock()


def _uses_redis() -> bool:
    return settings.CACHES["default"]["BACKEND"].startswith("django_redis")


def _add(keys: list[str], amount: int, ttl: int) -> list[int]:
    """Add `amount` to each counter in `keys` (created with `ttl` seconds to live), in one
    round trip; their new totals."""
    if _uses_redis() and cache_guard.available():
        try:
            pipe = cache.client.get_client(write=True).pipeline(transaction=False)
            for key in keys:
                full_key = cache.client.make_key(key)
                pipe.incrby(full_key, amount)
                pipe.expire(full_key, ttl, nx=True)
            return [int(total) for total in pipe.execute()[::2]]
        except Exception as error:  # noqa: BLE001 - any Redis failure: count locally
            cache_guard.failed("counter", error)
    return [_add_locally(key, amount, ttl) for key in keys]


def _add_locally(key: str, amount: int, ttl: int) -> int:
    now = time.monotonic()
    with _local_lock:
        if len(_local_counts) > 100_000:  # forget expired counters now and then
            for stale in [k for k, (_, expires) in _local_counts.items() if expires <= now]:
                del _local_counts[stale]
        count, expires = _local_counts.get(key, (0, now + ttl))
        if expires <= now:
            count, expires = 0, now + ttl
        _local_counts[key] = (count + amount, expires)
        return count + amount


def _get(keys: list[str]) -> list[int]:
    if _uses_redis() and cache_guard.available():
        try:
            client = cache.client.get_client(write=False)
            return [int(v or 0) for v in client.mget([cache.client.make_key(k) for k in keys])]
        except Exception as error:  # noqa: BLE001
            cache_guard.failed("counter read", error)
    now = time.monotonic()
    with _local_lock:
        return [count if expires > now else 0
                for count, expires in (_local_counts.get(k, (0, now)) for k in keys)]


def reset_local_counts() -> None:
    with _local_lock:
        _local_counts.clear()


# --- Rates ----------------------------------------------------------------------

def _hit(kind: str, identity: str, setting: str) -> None:
    rate = parse_rate(getattr(settings, setting))
    if rate is None:
        return
    now = time.time()
    window = int(now // rate.seconds)
    [count] = _add([f"rate:{kind}:{identity}:{window}"], 1, rate.seconds)
    if count > rate.limit:
        retry_after = int((window + 1) * rate.seconds - now) + 1
        raise Limited("rate_limited", f"Too many requests; try again in {retry_after} s.", retry_after)


def check_turn(ip: str, session_id: uuid.UUID | None) -> None:
    """Count a turn against the client address and, when it names one, the session."""
    _hit("ip", ip, "CHAT_RATE_LIMIT_IP")
    if session_id is not None:
        _hit("session", _hashed(session_id), "CHAT_RATE_LIMIT_SESSION")


def check_new_session(ip: str) -> None:
    _hit("new-session", ip, "CHAT_RATE_LIMIT_NEW_SESSIONS")


# --- Budgets --------------------------------------------------------------------

def _day() -> str:
    return datetime.now(UTC).strftime("%Y%m%d")


def _budget_keys(session_id: uuid.UUID) -> list[str]:
    day = _day()
    return [f"tokens:session:{_hashed(session_id)}:{day}", f"tokens:site:{day}"]


def _seconds_to_midnight() -> int:
    now = time.time()
    return int(86400 - now % 86400) + 1


def check_budget(session_id: uuid.UUID | None) -> None:
    """Refuse a turn once the session's or the site's tokens for today are spent."""
    per_session, per_site = settings.CHAT_DAILY_TOKENS_PER_SESSION, settings.CHAT_DAILY_TOKENS_SITE
    if not (per_session or per_site) or not settings.OPENAI_API_KEY:
        return
    spent_session, spent_site = _get(_budget_keys(session_id or uuid.UUID(int=0)))
    if per_site and spent_site >= per_site:
        raise Limited("budget_exhausted", "The assistant has answered all it can for today; "
                      "please try again tomorrow.", _seconds_to_midnight(), status=503)
    if per_session and session_id is not None and spent_session >= per_session:
        raise Limited("budget_exhausted", "This conversation has used today's allowance; "
                      "please try again tomorrow.", _seconds_to_midnight())


def spend(session_id: uuid.UUID, tokens: int) -> None:
    if tokens <= 0:
        return
    _add(_budget_keys(session_id), tokens, 2 * 86400)
