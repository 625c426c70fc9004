"""Abuse and cost limits: request rates, daily token budgets, and whether the LLM is up.

Rates are fixed windows (`20/m`: at most 20 in each clock minute), counted in
Redis so that every worker shares them. The decision for when Redis is down (or
not configured): count in this process instead. Each worker then enforces the
limit on its own, so a client may get up to WEB_CONCURRENCY times the limit for
as long as Redis is away, but nobody is blocked for nothing and nothing goes
unlimited.

A client address is counted by the network a customer controls: an IPv4
address as it is, an IPv6 address by its /64 (one home or one server gets a
whole /64, so counting single IPv6 addresses would give one client 2**64 of
them). Redis sees no address and no session id: keys carry a keyed hash of them
(`salted_hmac`, keyed by the SECRET_KEY).

Budgets count LLM tokens per UTC day for the whole site, per client address and
per session. They are checked before the LLM is called and spent after it
answered. A spent budget is no error for the customer: `check_budget` says the
LLM may not be used, and the turn is answered by the offline responder from the
FAQ, marked as such (llm.ReplyStream(offline=True)). The offline responder costs
nothing and is not counted. So one address can no longer spend the site's whole
day, and when the site's day is spent every customer still gets an answer.

While the LLM is down (llm.py's circuit breaker), `admit` says so too, from the
flag read in the same round trip, and lets one turn a while probe it.

The same windows cap the emails to staff when customers ask for a person, per
client address and for the site each hour (`handoff_email_windows`, handoff.py).
"""

import functools
import ipaddress
import logging
import re
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from asgiref.sync import async_to_sync
from django.conf import settings
from django.utils.crypto import salted_hmac
from django.utils.translation import gettext as _

from . import llm, metrics, sessions, shared_state
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


# --- Client addresses -----------------------------------------------------------

def client_ip(request) -> str:
    """REMOTE_ADDR, unless it is a trusted proxy: then the nearest untrusted X-Forwarded-For address.

    An entry the proxies wrote that is not an address (a misconfigured proxy)
    is not believed: REMOTE_ADDR counts then.
    """
    remote = request.META.get("REMOTE_ADDR", "")
    if not _trusted_proxy(remote):
        return remote
    forwarded = [a.strip() for a in request.headers.get("X-Forwarded-For", "").split(",") if a.strip()]
    for address in reversed(forwarded):
        if not _trusted_proxy(address):
            return str(_parse_address(address) or remote)
    return remote


def address_group(address: str) -> str:
    """What per-address limits count by: an IPv4 address as it is, an IPv6 address as the
    first address of its /64 (still an address, so that django-axes can store it)."""
    ip = _parse_address(address)
    if ip is None:
        return address
    if ip.version == 6:
        if ip.ipv4_mapped:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)).network_address)
    return str(ip)


def client_address(request) -> str | None:
    """The client's address group (see address_group): django-axes counts staff logins by it
    (AXES_CLIENT_IP_CALLABLE), so a spoofed X-Forwarded-For or a fresh IPv6 address escapes no
    lock. None when there is no address (a Unix socket), which axes stores as unknown."""
    return address_group(client_ip(request)) or None


def _parse_address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An address, also as some proxies write it with a port: "203.0.113.5:4711", "[2001:db8::1]:443"."""
    text = text.strip()
    if text.startswith("[") and "]" in text:
        text = text[1:text.index("]")]
    elif text.count(":") == 1:
        text = text.split(":")[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


@functools.lru_cache(maxsize=4)
def _networks(trusted: tuple[str, ...]) -> tuple:
    return tuple(ipaddress.ip_network(net, strict=False) for net in trusted)


def _trusted_proxy(address: str) -> bool:
    ip = _parse_address(address)
    if ip is None:
        return False
    return any(ip in net for net in _networks(tuple(settings.CHAT_TRUSTED_PROXIES)))


def _hashed(value: object) -> str:
    """A keyed hash: Redis keys name no address and no session id, and an IPv4 address cannot
    be found again by hashing all 2**32 of them without the SECRET_KEY."""
    return salted_hmac("chatsite.limits", str(value)).hexdigest()[:20]


# --- Rates ----------------------------------------------------------------------

@dataclass(frozen=True)
class Window:
    """The current window of one rate: its counter's key, and when it ends."""

    key: str
    rate: Rate
    retry_after: int

    def allows(self, count: int) -> bool:
        """Whether `count` hits in this window are within the rate."""
        return count <= self.rate.limit

    def check(self, count: int) -> None:
        """Raise Limited if `count` hits in this window are over the rate."""
        if not self.allows(count):
            metrics.REFUSALS.labels("rate_limit_" + self.key.split(":")[1]).inc()
            message = _("Too many requests; try again in %(seconds)d s.") % {"seconds": self.retry_after}
            raise Limited("rate_limited", message, self.retry_after)

    @property
    def counter(self) -> tuple[str, int, int]:
        """One hit, as Gateway.round_trip counts it."""
        return self.key, 1, self.rate.seconds


def _window(kind: str, identity: object, setting: str) -> Window | None:
    return window_of(kind, identity, parse_rate(getattr(settings, setting)))


def window_of(kind: str, identity: object, rate: Rate | None) -> Window | None:
    """The current window of `rate` for `identity` (a client address group, a session, "site"):
    counted under a key that names `kind` and a keyed hash of `identity`. None: no limit."""
    if rate is None:
        return None
    now = time.time()
    window = int(now // rate.seconds)
    return Window(f"rate:{kind}:{_hashed(identity)}:{window}", rate, int((window + 1) * rate.seconds - now) + 1)


def turn_windows(ip: str, session_id: uuid.UUID | None) -> list[Window]:
    """The rate windows a turn counts against: the client address (its /64 for IPv6) and,
    when it names one, the session."""
    windows = [_window("ip", address_group(ip), "CHAT_RATE_LIMIT_IP")]
    if session_id is not None:
        windows.append(_window("session", session_id, "CHAT_RATE_LIMIT_SESSION"))
    return [window for window in windows if window is not None]


# --- Handoff emails -------------------------------------------------------------

def handoff_email_windows(ip: str) -> list[Window]:
    """The clock hour's windows a handoff email counts against, in the order to count them: the
    client address (its /64 for IPv6), then the whole site (handoff.py)."""
    caps = [("handoff-email-address", address_group(ip), settings.CHAT_HANDOFF_EMAILS_PER_ADDRESS),
            ("handoff-email-site", "site", settings.CHAT_HANDOFF_EMAILS_PER_HOUR)]
    windows = [window_of(kind, identity, Rate(cap, 3600) if cap > 0 else None) for kind, identity, cap in caps]
    return [window for window in windows if window is not None]


# --- Device links ---------------------------------------------------------------

def join_windows(ip: str) -> list[Window]:
    """The windows a refused device link or code counts against (devices.py): the client address
    (its /64 for IPv6), and the whole site, which no number of addresses gets past."""
    windows = [_window("join-ip", address_group(ip), "CHAT_DEVICE_JOIN_FAILURES_IP"),
               _window("join-site", "site", "CHAT_DEVICE_JOIN_FAILURES_SITE")]
    return [window for window in windows if window is not None]


# --- Budgets --------------------------------------------------------------------

# Budget counters outlive their day by one, whatever the time zone of whoever reads them.
BUDGET_SECONDS = 2 * 86400


def _day() -> str:
    return datetime.now(UTC).strftime("%Y%m%d")


def budget_keys(session_id: uuid.UUID | None, ip: str) -> list[str]:
    day = _day()
    return [
        f"tokens:session:{_hashed(session_id or uuid.UUID(int=0))}:{day}",
        f"tokens:address:{_hashed(address_group(ip))}:{day}",
        f"tokens:site:{day}",
    ]


def budgets_left(session_id: uuid.UUID | None, spent: list[int | None]) -> bool:
    """Whether none of the budgets (budget_keys, in their order) is spent, given what they used today."""
    budgets = [settings.CHAT_DAILY_TOKENS_PER_SESSION if session_id is not None else 0,
               settings.CHAT_DAILY_TOKENS_PER_ADDRESS, settings.CHAT_DAILY_TOKENS_SITE]
    for name, budget, used in zip(("session", "address", "site"), budgets, spent, strict=True):
        if budget and (used or 0) >= budget:
            metrics.BUDGET_SPENT.labels(name).inc()
            logger.info("budget spent, answering offline", extra={"budget": name})
            return False
    return True


# --- Admitting a turn, and settling it ------------------------------------------


@dataclass
class Admission:
    # The conversation id cached for the session (None: not cached, or no session).
    conversation_id: int | None
    # Whether the turn may call the LLM; else the offline responder answers it.
    use_llm: bool


async def admit(gateway: shared_state.Gateway, ip: str, session_id: uuid.UUID | None) -> Admission:
    """Count a turn against its rates and read what it needs to start, in one round trip: the
    session's cached conversation, the budgets spent today and whether the LLM is down.
    Raises Limited when a rate is over."""
    windows = turn_windows(ip, session_id)
    cached = [sessions.cache_key(session_id)] if session_id is not None else []
    found = await gateway.round_trip(
        counters=[(window.key, 1, window.rate.seconds) for window in windows],
        reads=[*cached, *budget_keys(session_id, ip), llm.DOWN],
    )
    for window, count in zip(windows, found, strict=False):
        window.check(count)
    read = found[len(windows):]
    conversation_id = read.pop(0) if cached else None
    *spent, down = read
    return Admission(conversation_id, await _may_use_llm(gateway, session_id, spent, down))


async def admit_new_session(gateway: shared_state.Gateway, ip: str) -> None:
    """Count a new conversation against the address's rate of new sessions."""
    if (window := _window("new-session", address_group(ip), "CHAT_RATE_LIMIT_NEW_SESSIONS")) is not None:
        [count] = await gateway.round_trip(counters=[(window.key, 1, window.rate.seconds)])
        window.check(count)


async def _may_use_llm(gateway: shared_state.Gateway, session_id: uuid.UUID | None, spent: list[int | None],
                       down: int | None) -> bool:
    if not settings.OPENAI_API_KEY:
        return True  # the offline responder answers anyway
    if not budgets_left(session_id, spent):
        return False
    if llm.is_down(down):
        [probes] = await gateway.round_trip(claims=[(llm.PROBE, 1, llm.PROBE_SECONDS)])
        if probes:
            logger.info("the LLM is down; this turn probes it")
        return probes
    return True


async def settle(gateway: shared_state.Gateway, session_id: uuid.UUID, ip: str, tokens: int,
                 changed: list[tuple[str, int, int]]) -> None:
    """After a turn, in one round trip: its tokens spent against the budgets, and `changed`, the
    values that tell waiting pages to look (updates.py)."""
    counters = [(name, tokens, BUDGET_SECONDS) for name in budget_keys(session_id, ip)] if tokens > 0 else []
    metrics.TOKENS_SPENT.inc(max(tokens, 0))
    await gateway.round_trip(counters=counters, values=changed)


def spend(session_id: uuid.UUID, tokens: int, ip: str = "") -> None:
    """Count `tokens` against the session's, the client address's and the site's budgets
    (for callers outside a turn, in a thread)."""
    if tokens > 0:
        async_to_sync(settle)(shared_state.Gateway(), session_id, ip, tokens, [])


def reset_local_counts() -> None:
    shared_state.reset()
    llm.reset_health()
