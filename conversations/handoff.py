"""A person in the conversation: the handoff states, staff replies, and the email to staff.

A conversation's `handoff` is "assistant" (the assistant answers), "waiting"
(the customer asked for a person, nobody has replied yet) or "staff" (a staff
member has replied). The transitions, and who makes each:

    assistant -> waiting     the customer asks for a person (a message that asks,
                             or the page's button): a notice is stored, staff are
                             emailed (at most hourly per conversation, and
                             within caps per address and site: see Email).
    waiting -> staff         a staff member replies.
    staff -> staff           the customer writes again: stored for staff, and the
                             conversation waits again (waiting_since).
    waiting/staff -> assistant
                             a staff member hands back or closes: a notice is stored.

While a person is on the conversation, the customer's messages are stored for
staff and the assistant stays quiet (turns.py). Each change is one conditional
write of the conversation's row in the store (store/base.py), so a change that
races another is decided by the database: a customer message that arrives after
Close finds the assistant's state and is answered by the assistant; a person is
asked for again only if the customer asks. A staff reply carries a token made
when its form was shown, unique per conversation, so a double submit or two tabs
posting the same form store it once. Every change tells the pages waiting on the
conversation to look (updates.py).
"""

import logging
import math
import statistics
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from asgiref.sync import async_to_sync
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import send_mail
from django.db import connections, transaction
from django.db.models import OuterRef, Q, Subquery
from django.urls import reverse
from django.utils import timezone, translation
from django.utils.dates import WEEKDAYS
from django.utils.translation import gettext, ngettext

from . import devices, knowledge, languages, limits, runtime, shared_state, updates
from .db import FAILURES, blocking, in_orm_thread
from .errors import DatabaseUnavailable, TurnInProgress
from .models import Conversation, Handoff, Message, visible
from .store.base import Conflict, TurnStore

logger = logging.getLogger(__name__)

# Staff are emailed about a conversation at most this often.
NOTIFY_EVERY = timedelta(hours=1)

# How often a change is tried again after a message took the position it wanted.
ATTEMPTS = 5

# Emails go out from this one thread, so that neither a customer nor a staff
# member waits for the mail server.
_mailer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="handoff-mail")


# --- What the customer is told -----------------------------------------------------
#
# Before the assistant goes quiet the customer learns what will happen (`outlook`):
# inside the opening hours (knowledge.opening_hours, in CHAT_SHOP_TIMEZONE), or while a
# staff member has had an admin page open within CHAT_STAFF_PRESENT_MINUTES (the
# middleware `staff_presence` marks it in the shared state), "a person will answer
# here, usually within N minutes", N the median wait of recent handoffs. Outside them,
# "we're closed until <time>", and the page offers a field for the customer's email:
# the first staff reply after they leave it is emailed to them once (email_customer).
# The decisions for a failing dependency: Redis away, a staff page counts only in the
# worker that served it (shared_state's local fallback), so the hours decide; the
# database failing while N is measured, N is WAIT_FALLBACK_MINUTES.

# The handoffs whose wait (from the customer's request to the first staff reply) measures N:
# the latest this many, within WAIT_WITHIN.
WAIT_SAMPLE = 20
WAIT_WITHIN = timedelta(days=7)
# N with fewer than WAIT_MIN_SAMPLES such handoffs (a new site), or the database failing.
WAIT_FALLBACK_MINUTES = 15
WAIT_MIN_SAMPLES = 3
# A worker measures N at most this often.
WAIT_MEASURED_EVERY = 60.0
STAFF_SEEN = "handoff:staff-seen"

_measured: tuple[float, int] = (0.0, WAIT_FALLBACK_MINUTES)  # (when, N) in this process


@dataclass(frozen=True)
class Outlook:
    """What a customer who asks for a person is told, and whether the page offers the email field."""

    text: str
    offer_email: bool


def shop_time(now: datetime) -> datetime:
    return now.astimezone(ZoneInfo(settings.CHAT_SHOP_TIMEZONE))


def staff_seen() -> None:
    """A staff member has an admin page open now (called by the middleware, from a thread)."""
    ttl = max(int(settings.CHAT_STAFF_PRESENT_MINUTES * 60), 1)
    shared_state.set_many({STAFF_SEEN: int(time.time())}, ttl)


async def outlook(now: datetime) -> Outlook:
    """What to tell a customer asking for a person at `now`."""
    hours = knowledge.opening_hours()
    local = shop_time(now)
    [seen] = await runtime.current().gateway.round_trip(reads=[STAFF_SEEN])
    details = knowledge.contact_details(languages.current())
    # In the customer's language (the request's), as it is stored and shown.
    keep_writing = (" " + gettext("You can keep writing meanwhile; the assistant does not answer until they hand you back.")
                    + (f"\n\n{details}" if details else ""))
    if seen is not None or (hours is not None and hours.is_open(local)):
        minutes = await typical_wait()
        return Outlook(ngettext("You asked to talk to a person. A person will answer here, usually within %(count)d "
                                "minute.",
                                "You asked to talk to a person. A person will answer here, usually within %(count)d "
                                "minutes.", minutes) % {"count": minutes} + keep_writing, offer_email=False)
    opening = hours.next_opening(local) if hours is not None else None
    if opening is None:  # no hours we can read: promise no time
        text = gettext("You asked to talk to a person. Someone from our team will answer here as soon as they can; "
                 "leave your email below if you'd like us to write to you when they do.")
    else:
        text = gettext("You asked to talk to a person. We're closed until %(when)s; leave your email "
                 "below and we'll write back, or come back to this chat then.") % {"when": _when(opening, local)}
    return Outlook(text + keep_writing, offer_email=True)


def _when(opening: datetime, local: datetime) -> str:
    """ "09:00 CET", "tomorrow 09:00 CET", "Monday 09:00 CET" (in the shop's time zone)."""
    time_of_day = f"{opening:%H:%M} {opening.tzname()}"
    if opening.date() == local.date():
        return time_of_day
    if opening.date() == local.date() + timedelta(days=1):
        return gettext("tomorrow %(time)s") % {"time": time_of_day}
    return gettext("%(weekday)s %(time)s") % {"weekday": WEEKDAYS[opening.weekday()], "time": time_of_day}


async def typical_wait() -> int:
    """N: the median minutes from a customer's request for a person to the first staff reply, over
    the latest WAIT_SAMPLE handoffs within WAIT_WITHIN (rounded up); WAIT_FALLBACK_MINUTES when too
    few were answered, or when the database fails (measured once a minute per worker)."""
    global _measured
    measured_at, minutes = _measured
    if time.monotonic() - measured_at < WAIT_MEASURED_EVERY and measured_at:
        return minutes
    try:
        waits = await in_orm_thread(recent_waits, timezone.now())
    except DatabaseUnavailable:
        return minutes
    minutes = max(1, math.ceil(statistics.median(waits) / 60)) if len(waits) >= WAIT_MIN_SAMPLES \
        else WAIT_FALLBACK_MINUTES
    _measured = (time.monotonic(), minutes)
    return minutes


def recent_waits(now: datetime) -> list[float]:
    """Seconds from each recent request for a person (the notice the customer was shown: an event
    with no author) to the first staff reply after it."""
    since = now - WAIT_WITHIN
    first_reply = Message.objects.filter(
        conversation=OuterRef("conversation"), role=Message.Role.STAFF, seq__gt=OuterRef("seq")
    ).order_by("seq").values("created_at")[:1]
    rows = (Message.objects.filter(conversation__last_activity_at__gte=since, role=Message.Role.EVENT, author="",
                                   created_at__gte=since)
            .annotate(replied_at=Subquery(first_reply)).filter(replied_at__isnull=False)
            .order_by("-created_at").values_list("created_at", "replied_at")[:WAIT_SAMPLE])
    return [(replied - asked).total_seconds() for asked, replied in rows]


def forget_measured_wait() -> None:
    """Measure N afresh on the next handoff (tests)."""
    global _measured
    _measured = (0.0, WAIT_FALLBACK_MINUTES)


def notice_message(conversation: Conversation, seq: int, told: Outlook) -> Message:
    return Message(conversation=conversation, seq=seq, role=Message.Role.EVENT, content=told.text,
                   created_at=timezone.now())


# --- The customer's side (called by turns.py, on the worker's loop) -----------------


async def ask_for_person(store: TurnStore, conversation: Conversation, question: Message | None, ip: str = ""
                         ) -> tuple[str, Message | None, Outlook | None]:
    """The customer at client address `ip` asks for a person, with `question` (a message that asks)
    or without (the button). The handoff state, the notice stored and what it tells (None when a person was
    already asked for: then the question is stored for staff, and nothing is said twice)."""
    told = await outlook(timezone.now())
    for _ in range(ATTEMPTS):
        now = timezone.now()
        notice = notice_message(conversation, 0, told)
        try:
            notify = await store.request_person(conversation.pk, [question, notice] if question else [notice], now,
                                                now - NOTIFY_EVERY)
            if notify is None:  # a person is on it already
                if question is None:
                    on = conversation.handoff if conversation.handoff != Handoff.ASSISTANT else Handoff.WAITING
                    return on, None, None
                state = await store.store_for_staff(conversation.pk, question)
                if state is None:
                    continue  # handed back meanwhile: ask again
                return state, None, None
        except Conflict:
            continue
        if notify:
            await email_staff(conversation, question.content if question else None, ip)
        return Handoff.WAITING, notice, told
    raise TurnInProgress(session_id=conversation.session_id, retry_after=1)


async def store_for_staff(store: TurnStore, conversation: Conversation, question: Message) -> str | None:
    """Store the customer's question for the person on the conversation; the handoff state, or
    None if the assistant has the conversation again (handed back or closed meanwhile)."""
    for _ in range(ATTEMPTS):
        try:
            return await store.store_for_staff(conversation.pk, question)
        except Conflict:
            continue
    raise TurnInProgress(session_id=conversation.session_id, retry_after=1)


@blocking
async def request_person(conversation_id: int) -> Message | None:
    """ask_for_person() from synchronous code (the shell, tests): the notice stored, or None."""
    rt = runtime.current()
    conversation = await in_orm_thread(Conversation.objects.get, pk=conversation_id)
    _, notice, _ = await ask_for_person(rt.store, conversation, None)
    await rt.gateway.round_trip(values=[updates.version_entry(conversation_id)])
    return notice


# --- The staff's side (the admin, the shell) ------------------------------------


async def reply_as_staff(conversation_id: int, user, author: str, text: str, token: str) -> tuple[Message, bool]:
    """Store a staff member's reply (once per `token`) and put the conversation in "staff".
    Returns the message and whether it was stored now (False: it was already)."""
    reply = Message(role=Message.Role.STAFF, content=text, author=author, sent_by=user, client_message_id=token,
                    created_at=timezone.now())
    stored = await _change(conversation_id, lambda store: store.staff_reply(conversation_id, reply))
    if stored:
        await email_customer(conversation_id, reply)
    return reply, stored


async def return_to_assistant(conversation_id: int, user, author: str, close: bool = False) -> Message | None:
    """Return the conversation to the assistant (`close`: and record that staff closed it).
    Returns the notice stored, or None if the assistant had it already."""
    language = await in_orm_thread(_language_of, conversation_id)
    with translation.override(language):  # the customer reads it, not the staff member who sends it
        text = (gettext("%(author)s closed the conversation. The assistant answers again.") if close else
                gettext("%(author)s handed you back to the assistant. The assistant answers again."))
    notice = Message(role=Message.Role.EVENT, content=text % {"author": author}, author=author,
                     sent_by=user, created_at=timezone.now())
    changed = await _change(conversation_id, lambda store: store.hand_back(conversation_id, notice, close))
    return notice if changed else None


def _language_of(conversation_id: int) -> str:
    found = Conversation.objects.filter(pk=conversation_id).values_list("language", flat=True).first()
    return languages.code(found)


# The same, from synchronous code (the admin's views, the shell).
staff_reply = blocking(reply_as_staff)
hand_back = blocking(return_to_assistant)


async def _change(conversation_id: int, change) -> bool:
    rt = runtime.current()
    for _ in range(ATTEMPTS):
        try:
            changed = await change(rt.store)
        except Conflict:
            continue  # a customer's message took the position: the next one
        if changed:
            await rt.gateway.round_trip(values=[updates.version_entry(conversation_id)])
        return changed
    raise TurnInProgress(retry_after=1)


# --- Email ------------------------------------------------------------------------
#
# A handoff emails staff only while its client address and the whole site are under
# their hourly caps (limits.handoff_email_windows; counted in the shared state, so
# across workers, and per worker while Redis is away). Past a cap the conversation
# waits in the queue like any other and is held for the digest instead: one email at
# the end of each CHAT_HANDOFF_DIGEST_MINUTES period in which something was held,
# listing it. Every worker that held one in a period schedules that period's digest
# (a worker that stops takes its schedule with it, and another that held one sends
# it); a claim in the shared state lets one of them send it (with Redis away, each
# worker sends its own).
#
# What a customer wrote reaches the body only quoted: "> " before every line (of
# every kind of line break), control characters escaped, lines wrapped, after our
# own lines and the link. So it cannot pass for a line of ours in the email, nor,
# on the console backend, for a log record (a line that starts with "{").

# Characters of the customer's message an email quotes, and the width it wraps them at.
QUOTED_CHARS = 500
QUOTE_WIDTH = 76
# Conversations a digest names with a link; it counts the rest.
DIGEST_LISTED = 50

_digests: dict[int, threading.Timer] = {}
_digests_lock = threading.Lock()


def staff_emails() -> list[str]:
    """CHAT_HANDOFF_EMAILS, else every active user who may answer and has an email address."""
    if settings.CHAT_HANDOFF_EMAILS:
        return list(settings.CHAT_HANDOFF_EMAILS)
    may_answer = (
        Q(is_superuser=True)
        | Q(user_permissions__codename="reply_conversation")
        | Q(groups__permissions__codename="reply_conversation")
    )
    users = get_user_model().objects.filter(may_answer, is_active=True).exclude(email="")
    return sorted(set(users.values_list("email", flat=True)))


async def email_staff(conversation: Conversation, question: str | None, ip: str) -> None:
    """Tell staff that a customer (at client address `ip`) waits, with `question`, else their latest
    message, from the mail thread; past a cap, in the period's digest instead."""
    gateway = runtime.current().gateway
    for window in limits.handoff_email_windows(ip):
        [count] = await gateway.round_trip(counters=[window.counter])
        if not window.allows(count):
            break
    else:
        _mailer.submit(_send, conversation.pk, conversation.reference, question, timezone.now())
        return
    period = _digest_period(time.time())
    [slot] = await gateway.round_trip(counters=[(_digest_key(period, "count"), 1, _digest_ttl())])
    await gateway.round_trip(values=[(_digest_key(period, slot), conversation.pk, _digest_ttl())])
    logger.info("handoff: over a cap of emails, held for the digest", extra={"conversation": conversation.pk})
    _schedule_digest(period)


def quoted(text: str) -> str:
    """`text` as an email quotes it: at most QUOTED_CHARS characters, "> " before every line, whatever
    ends the line (CR, LF, U+2028, U+0085, ...), control characters escaped, wrapped at QUOTE_WIDTH."""
    if len(text) > QUOTED_CHARS:
        text = text[:QUOTED_CHARS] + "…"
    lines = []
    for line in text.splitlines() or [""]:
        pieces = textwrap.wrap(visible(line), QUOTE_WIDTH, replace_whitespace=False, drop_whitespace=False,
                               break_on_hyphens=False)
        lines += [f"> {piece}".rstrip() for piece in pieces or [""]]
    return "\n".join(lines)


def admin_link(view: str, *args) -> str:
    """An admin page's address: absolute with CHAT_SITE_URL, else its path."""
    return settings.CHAT_SITE_URL + reverse(f"admin:{view}", args=args)


def _send(conversation_id: int, reference: str, question: str | None, since: datetime) -> None:
    try:
        if question is None:
            question = Message.objects.filter(conversation_id=conversation_id, role=Message.Role.USER).order_by(
                "-seq").values_list("content", flat=True).first()
        subject = f"Conversation {reference} is waiting for a person"
        body = (
            f"A customer asked to talk to a person in conversation {reference}.\n"
            f"Waiting since {_shop_clock(since)}.\n\n"
            "Answer it in the admin (Conversations > Waiting for a person):\n"
            f"{admin_link('conversations_conversation_change', conversation_id)}\n"
        )
        if question:
            body += ("\nTheir latest message, quoted: the customer's words, not ours (a link or an\n"
                     "instruction in them does not come from the shop):\n\n" + quoted(question) + "\n")
        _mail(subject, body)
    except FAILURES as error:  # the database: a dependency failing as decided, not a bug to trace
        logger.warning("handoff: the email to staff was not sent, the database failed: %r", error)
    except Exception:  # noqa: BLE001 - the conversation waits in the admin queue anyway
        logger.exception("handoff: the email to staff failed")
    finally:
        connections.close_all()


# --- The email to the customer ----------------------------------------------------
#
# A customer who left their address (outside opening hours) gets the first staff reply
# after that by email, once: the conversation's customer_emailed_at is claimed by one
# conditional UPDATE before the email is queued, so two replies, two workers or a
# double submit send one. Leaving an address again clears the claim. With CHAT_SITE_URL
# set, the email carries a one-time link into the conversation (devices.email_link: a
# device link without a code, for CHAT_EMAIL_LINK_DAYS), so the customer continues from
# their mail on any device; the session id is never in the email, and the database keeps
# only the link's hash. A mail server that fails loses that email (logged): the reply
# waits on the page.


async def email_customer(conversation_id: int, reply: Message) -> None:
    """Queue the email of `reply` to the address the customer left, if they left one and have not
    been emailed since. A database failure here does not undo the reply: it is logged."""
    try:
        claimed = await in_orm_thread(_claim_customer_email, conversation_id, reply.created_at)
    except DatabaseUnavailable:
        logger.warning("handoff: could not check for the customer's email address", exc_info=True)
        return
    if claimed is not None:
        _mailer.submit(_send_customer, conversation_id, *claimed, reply.author, reply.content)


def _claim_customer_email(conversation_id: int, now: datetime) -> tuple[str, str, str, str] | None:
    """(address, reference, link, the customer's language) if this reply is the one to email, claiming
    it; else None."""
    with transaction.atomic():
        waiting = Conversation.objects.filter(pk=conversation_id, customer_emailed_at__isnull=True).exclude(
            customer_email="")
        if not waiting.update(customer_emailed_at=now):
            return None
        conversation = Conversation.objects.only("session_id", "customer_email", "language").get(pk=conversation_id)
        link = chat_link()
        if link:
            link += f"#join={devices.email_link(conversation_id)}"
    return conversation.customer_email, conversation.reference, link, conversation.language


def chat_link() -> str:
    """The chat page's absolute address (CHAT_SITE_URL), empty without it."""
    return settings.CHAT_SITE_URL + reverse("index") if settings.CHAT_SITE_URL else ""


def _send_customer(conversation_id: int, address: str, reference: str, link: str, language: str, author: str,
                   text: str) -> None:
    try:
        translation.activate(languages.code(language))  # in the customer's language, this thread's only
        shop = settings.CHAT_SHOP_NAME
        body = (
            gettext("Hello,\n\nyou asked %(shop)s for a person in our chat and left this address. "
                    "%(author)s replied:") % {"shop": shop, "author": author or gettext("Our team")}
            + f"\n\n{text}\n\n"
            + (gettext("Continue the conversation in the chat, on this or any other device (the link works "
                       "once, for %(days)s days):") % {"days": settings.CHAT_EMAIL_LINK_DAYS} + f"\n{link}\n\n"
               if link else gettext("Continue the conversation in our chat, in the browser you wrote from.") + "\n\n")
            + gettext("Your conversation reference: %(reference)s") % {"reference": reference} + "\n\n"
            + gettext("This is the one email we send for this request; further replies appear in the chat.") + "\n"
        )
        subject = gettext("%(shop)s: a reply to your question (%(reference)s)") % {"shop": shop, "reference": reference}
        send_mail(subject, body, None, [address])
        logger.info("handoff: the staff reply was emailed to the customer", extra={"conversation": conversation_id})
    except Exception:  # noqa: BLE001 - the reply waits on the chat page anyway
        logger.exception("handoff: the email to the customer failed")
    finally:
        translation.deactivate()
        connections.close_all()


def _send_digest(period: int) -> None:
    """The digest of `period`, if no worker sent it yet."""
    try:
        gateway, ttl = shared_state.Gateway(), _digest_ttl()
        claimed, count = async_to_sync(gateway.round_trip)(claims=[(_digest_key(period, "sent"), 1, ttl)],
                                                           reads=[_digest_key(period, "count")])
        if not claimed or not count:
            return
        listed = async_to_sync(gateway.round_trip)(
            reads=[_digest_key(period, slot) for slot in range(1, min(count, DIGEST_LISTED) + 1)])
        ids = list(dict.fromkeys(pk for pk in listed if pk is not None))
        found = Conversation.objects.filter(pk__in=ids).in_bulk()
        seconds = _digest_seconds()
        start = datetime.fromtimestamp(period * seconds, UTC)
        end = datetime.fromtimestamp((period + 1) * seconds, UTC)
        lines = [f"- {found[pk].reference} ({found[pk].handoff_in_english().lower()}{_since(found[pk])}): "
                 f"{admin_link('conversations_conversation_change', pk)}" for pk in ids if pk in found]
        gone = len(ids) - len(lines)
        unlisted = count - len(ids)
        body = (
            f"{count} customer(s) asked to talk to a person between {start:%H:%M} and {end:%H:%M} UTC "
            "while the hourly cap on handoff emails was reached, so no email was sent for them. "
            "They wait in the queue:\n"
            f"{admin_link('conversations_waitingconversation_changelist')}\n\n"
            + "".join(line + "\n" for line in lines)
            + (f"- and {unlisted} more: see the queue.\n" if unlisted > 0 else "")
            + (f"- {gone} deleted since.\n" if gone else "")
        )
        _mail(f"{count} more conversation(s) waiting for a person", body)
    except FAILURES as error:
        logger.warning("handoff: the digest email to staff was not sent, the database failed: %r", error)
    except Exception:  # noqa: BLE001 - the conversations wait in the admin queue anyway
        logger.exception("handoff: the digest email to staff failed")
    finally:
        connections.close_all()


def _shop_clock(moment: datetime) -> str:
    """ "14:02 CET (Thursday 3 December)": a time as staff read it, in the shop's time zone."""
    local = shop_time(moment)
    return f"{local:%H:%M} {local.tzname()} ({local:%A} {local.day} {local:%B})"


def _since(conversation: Conversation) -> str:
    return f", since {_shop_clock(conversation.waiting_since)}" if conversation.waiting_since else ""


def _mail(subject: str, body: str) -> None:
    recipients = staff_emails()
    if not recipients:
        logger.warning("handoff: nobody to email (set CHAT_HANDOFF_EMAILS or give staff an email address)")
        return
    send_mail(subject, body, None, recipients)


def _digest_seconds() -> float:
    return max(settings.CHAT_HANDOFF_DIGEST_MINUTES * 60, 1.0)


def _digest_period(now: float) -> int:
    return int(now // _digest_seconds())


def _digest_ttl() -> int:
    return int(2 * _digest_seconds()) + 3600


def _digest_key(period: int, name: object) -> str:
    return f"handoff-digest:{period}:{name}"


def _schedule_digest(period: int) -> None:
    """Have this process offer `period`'s digest a second after the period ends (once per period)."""
    with _digests_lock:
        if (timer := _digests.get(period)) is not None and timer.is_alive():
            return
        for old in [old for old in _digests if old < period - 1]:
            del _digests[old]
        delay = (period + 1) * _digest_seconds() - time.time() + 1.0
        timer = _digests[period] = threading.Timer(max(delay, 0.0), _mailer.submit, args=(_send_digest, period))
    timer.daemon = True
    timer.start()


def flush_email() -> None:
    """Wait until the emails queued so far are sent (tests; a graceful shutdown)."""
    _mailer.submit(lambda: None).result()


def flush_digests() -> None:
    """Wait until the digests scheduled so far are sent (tests)."""
    with _digests_lock:
        timers = list(_digests.values())
    for timer in timers:
        timer.join()
    flush_email()
