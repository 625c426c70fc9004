"""Continue on another device, and "Not you?": the browsers (sessions) of one conversation.

A browser with a conversation offers to bring another in: a one-time link
(`/#join=<token>`, and the same as a QR code) and a short code to type. Either
is redeemed once, by a POST, within CHAT_DEVICE_LINK_MINUTES; redeeming gives the
new browser a session of its own, issued here, in the same conversation. One
offer at a time per conversation: a new one replaces the last. The email of a
staff reply to a customer who left their address carries a link of the same
kind (email_link): no code, valid for CHAT_EMAIL_LINK_DAYS, beside the offer.

What keeps them safe:
- The token is 256 random bits, the code 50 (10 characters of Crockford's
  base32). The database keeps a SHA-256 of the token and an HMAC of the code
  keyed by the SECRET_KEY (a code has too few bits for a plain hash: all 2**50
  could be hashed from a stolen backup); never either in clear. Neither reaches
  Redis, whose keys here count refusals by client address and for the site.
- The token travels in the link's fragment, which browsers never send: it is in
  no request line, so in no access log, and a previewer or scanner that fetches
  the link gets the chat page, which redeems nothing until the customer confirms.
- Refusals (a wrong, used or expired link or code) are counted per client
  address and for the whole site (limits.join_windows); past either limit every
  join is refused until the window ends, a right code too. At the defaults
  (10 an hour per address, 1000 an hour for the site) and with, say, 1000 offers
  open at once, a guess hits one of them with odds of 1000 / 2**50, about 1 in
  10**12: the site's whole allowance of a year (8.8 million guesses) hits with
  odds under 1 in 100,000, and only if it is spent on nothing else.
- A wrong code names no conversation (that is what keeps it unguessable), so
  refusals cannot be counted per conversation; the site's count bounds the
  guesses at every conversation's code together, which is stricter.

Ending a session (the devices list, "Not you?", staff's "end all devices")
deletes its row and its cache entry and tells the conversation's waiting pages
to look, so the ended page learns at once that its id is unknown. The
conversation stays, for its other sessions and for staff.
"""

import hashlib
import io
import logging
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import segno
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.crypto import salted_hmac
from django.utils.translation import gettext as _

from . import limits, runtime, sessions, updates
from .db import blocking, in_db_thread
from .errors import ApiError
from .models import Conversation, DeviceLink, Session

logger = logging.getLogger(__name__)

# Crockford's base32: no I, L, O or U, so what is read aloud or off a screen is typed right.
CODE_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
CODE_LENGTH = 10
TOKEN = re.compile(r"[A-Za-z0-9_-]{43}")
CODE_TYPOS = str.maketrans({"O": "0", "I": "1", "L": "1", "-": None, " ": None})


@dataclass
class Offer:
    token: str
    code: str
    expires_at: datetime


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def code_hash(code: str) -> str:
    return salted_hmac("chatsite.devices.code", code, algorithm="sha256").hexdigest()


def parse_token(value: object) -> str:
    if not isinstance(value, str) or not TOKEN.fullmatch(value):
        raise ApiError(400, "invalid_join_token", _("token must be the 43 characters after #join= in the link."))
    return value


def parse_code(value: object) -> str:
    """The code as issued ("7K3M9-QX2RT" typed as "7k3m9 qx2rt", or with an O for a 0, is the same)."""
    code = value.upper().translate(CODE_TYPOS) if isinstance(value, str) and len(value) <= 20 else ""
    if len(code) != CODE_LENGTH or any(c not in CODE_ALPHABET for c in code):
        raise ApiError(400, "invalid_join_code", _("code must be the %(count)d letters and digits shown "
                                                   "on your other device.") % {"count": CODE_LENGTH})
    return code


def shown_code(code: str) -> str:
    return f"{code[:5]}-{code[5:]}"


def qr_svg(link: str) -> str:
    """The link as a QR code, an SVG element (no XML declaration) the page puts in its dialog."""
    out = io.BytesIO()
    segno.make(link, error="m").save(out, kind="svg", xmldecl=False, nl=False, omitsize=True, scale=4,
                                     dark="#111318", light="#ffffff", border=2)
    return out.getvalue().decode()


def device_label(user_agent: str) -> str:
    """The browser and the system, no more (not the versions, nothing a customer would not
    recognise), as Session.label keeps them in any language: "Firefox · Android", "Firefox", or ""
    when the browser is not one of these. Session.name says it in the reader's language."""
    ua = user_agent or ""
    browser = next((name for pattern, name in _BROWSERS if re.search(pattern, ua)), "")
    if not browser:
        return ""
    system = next((name for pattern, name in _SYSTEMS if re.search(pattern, ua)), "")
    return f"{browser}{Session.LABEL_SEPARATOR}{system}" if system else browser


_BROWSERS = [(r"Edg/|Edge/", "Edge"), (r"OPR/|Opera", "Opera"), (r"SamsungBrowser", "Samsung Internet"),
             (r"Firefox/|FxiOS", "Firefox"), (r"Chrome/|CriOS|Chromium", "Chrome"), (r"Safari/", "Safari")]
_SYSTEMS = [(r"Android", "Android"), (r"iPhone", "iPhone"), (r"iPad", "iPad"), (r"Windows", "Windows"),
            (r"Mac OS X|Macintosh", "macOS"), (r"CrOS", "ChromeOS"), (r"Linux", "Linux")]


# --- Offering and joining -------------------------------------------------------


def offer(session_id: uuid.UUID, label: str) -> Offer | None:
    """A new link and code for the session's conversation, replacing any it had; None if the
    session is unknown or its conversation idle."""
    with transaction.atomic():
        conversation = Conversation.objects.active().of_session(session_id).first()
        if conversation is None:
            return None
        Session.objects.filter(session_id=session_id, label="").update(label=label)
        DeviceLink.objects.filter(conversation=conversation, kind=DeviceLink.Kind.DEVICE).delete()
        DeviceLink.objects.filter(expires_at__lt=timezone.now()).delete()  # those nobody used
        made = Offer(secrets.token_urlsafe(32), "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH)),
                     timezone.now() + timedelta(minutes=settings.CHAT_DEVICE_LINK_MINUTES))
        DeviceLink.objects.create(conversation=conversation, token_hash=token_hash(made.token),
                                  code_hash=code_hash(made.code), expires_at=made.expires_at)
    return made


def email_link(conversation_id: int) -> str:
    """The token of a one-time link for the email of a staff reply (handoff.email_customer): no code,
    valid for CHAT_EMAIL_LINK_DAYS, so that the customer continues from their mail on any device.
    Beside the conversation's device offer, not replacing it; redeemed as a device link is (join)."""
    token = secrets.token_urlsafe(32)
    DeviceLink.objects.create(conversation_id=conversation_id, kind=DeviceLink.Kind.EMAIL,
                              token_hash=token_hash(token),
                              expires_at=timezone.now() + timedelta(days=settings.CHAT_EMAIL_LINK_DAYS))
    return token


async def admit_offer(ip: str, session_id: uuid.UUID) -> None:
    """Count making an offer against the session's and the address's rates, as a turn counts
    (limits.turn_windows): each offer is a write, and nobody needs more than a few."""
    windows = limits.turn_windows(ip, session_id)
    counts = await runtime.current().gateway.round_trip(
        counters=[(window.key, 1, window.rate.seconds) for window in windows])
    for window, count in zip(windows, counts, strict=True):
        window.check(count)


async def join(ip: str, *, token: str | None, code: str | None, label: str,
               current: uuid.UUID | None = None, check: bool = False) -> Session | None:
    """Redeem a link's token or a code: a new session in its conversation. Refused (ApiError)
    while the address or the site is locked out, and for a wrong, used or expired one, which
    counts towards the lockout.

    A browser already in that conversation (`current`, its session) keeps its session: the
    offer is not used (an emailed link opened where the conversation is open already). With
    `check`, nothing is redeemed: None if it would join, its session if it is in already, the
    same refusals otherwise (the page asks this before it asks the customer)."""
    gateway = runtime.current().gateway
    windows = limits.join_windows(ip)
    counts = await gateway.round_trip(reads=[window.key for window in windows])
    for window, count in zip(windows, counts, strict=True):
        if (count or 0) >= window.rate.limit:
            raise limits.Limited("join_locked", _("Too many wrong codes or links: joining is locked here for "
                                                  "%(seconds)d s.") % {"seconds": window.retry_after},
                                 window.retry_after)
    found = token_hash(token) if token is not None else code_hash(code or "")
    try:
        session = await in_db_thread(_redeem, found, token is not None, label, current, check)
    except ApiError as refused:
        if refused.status in (404, 410):
            await gateway.round_trip(counters=[(window.key, 1, window.rate.seconds) for window in windows])
            logger.info("join refused", extra={"code": refused.code})
        raise
    if session is not None and session.session_id != current:
        logger.info("device joined", extra={"conversation": session.conversation_id,
                                            "session": sessions.short_hash(session.session_id)})
    return session


def _redeem(hashed: str, by_token: bool, label: str, current: uuid.UUID | None, check: bool) -> Session | None:
    with transaction.atomic():
        link = DeviceLink.objects.filter(**{"token_hash" if by_token else "code_hash": hashed}).first()
        if link is None:
            raise _not_found()
        if current is not None:
            mine = Session.objects.filter(session_id=current, conversation_id=link.conversation_id).first()
            if mine is not None:
                return mine
        if link.expires_at <= timezone.now():
            raise ApiError(410, "join_expired", _("This link or code has expired (they last %(minutes)d minutes). "
                                                  "Choose “Continue on another device” on your other "
                                                  "device for a new one.")
                           % {"minutes": settings.CHAT_DEVICE_LINK_MINUTES})
        if not Conversation.objects.active().filter(pk=link.conversation_id).exists():
            raise ApiError(410, "join_expired", _("That conversation has ended."))
        if Session.objects.filter(conversation_id=link.conversation_id).count() >= settings.CHAT_DEVICES_MAX:
            # The link stays, to be used once a device has ended.
            raise ApiError(409, "too_many_devices", _("This conversation is open on %(count)d devices already: "
                                                      "end one of them first.") % {"count": settings.CHAT_DEVICES_MAX})
        if check:
            return None
        # Deleting it is what redeems it: of two requests at once, one deletes the row, and only it.
        if DeviceLink.objects.filter(pk=link.pk).delete()[0] != 1:
            raise _not_found()
        return Session.objects.create(session_id=sessions.new_session_id(), conversation_id=link.conversation_id,
                                      label=label)


def _not_found() -> ApiError:
    return ApiError(404, "join_not_found", _("This link or code is not valid, or it was used already. "
                                             "Choose “Continue on another device” on your other "
                                             "device for a new one."))


# --- The devices of a conversation, and ending them -----------------------------


def listed(session_id: uuid.UUID, label: str) -> list[dict] | None:
    """The sessions of the session's conversation, oldest first, for its customer; None if unknown."""
    conversation = Conversation.objects.active().of_session(session_id).first()
    if conversation is None:
        return None
    Session.objects.filter(session_id=session_id, label="").update(label=label)
    Session.objects.seen(session_id)
    return [{
        "device": session.pk,
        "label": session.name,
        "joinedAt": session.created_at.isoformat(),
        "lastSeenAt": session.last_seen_at.isoformat(),
        "current": session.session_id == session_id,
    } for session in conversation.sessions.all()]


async def end(session_id: uuid.UUID, device: int | None) -> None:
    """End one session of the session's conversation (`device`; None: this one)."""
    ended = await in_db_thread(_end, session_id, device)
    await _forget_cached(ended)


def _end(session_id: uuid.UUID, device: int | None) -> list[tuple[int, uuid.UUID]]:
    conversation = Conversation.objects.of_session(session_id).first()
    if conversation is None:
        raise ApiError(404, "session_not_found", _("No conversation is kept under that session id."))
    chosen = conversation.sessions.filter(session_id=session_id) if device is None else \
        conversation.sessions.filter(pk=device)
    ended = list(chosen.values_list("conversation_id", "session_id"))
    if not ended or not chosen.delete()[0]:
        raise ApiError(404, "device_not_found", _("This conversation has no such device (it may have ended already)."))
    return ended


def end_all(conversation_ids: list[int]) -> int:
    """Staff: end every session of these conversations (a lost phone), and revoke their unused links
    (the phone's mail may hold one); how many sessions ended."""
    with transaction.atomic():
        chosen = Session.objects.filter(conversation__in=conversation_ids)
        ended = list(chosen.values_list("conversation_id", "session_id"))
        chosen.delete()
        DeviceLink.objects.filter(conversation__in=conversation_ids).delete()
    blocking(_forget_cached)(ended)
    return len(ended)


async def _forget_cached(ended: list[tuple[int, uuid.UUID]]) -> None:
    """The ended sessions' cache entries dropped and their conversations' waiting pages told, in one
    round trip (an entry left behind by a cache failure is checked against the database anyway)."""
    if ended:
        await runtime.current().gateway.round_trip(
            values=[updates.version_entry(pk) for pk in {pk for pk, _ in ended}],
            deletes=[sessions.cache_key(session_id) for _, session_id in ended])
