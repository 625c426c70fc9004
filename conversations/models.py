import json
import re
import uuid
from collections.abc import Iterator
from datetime import timedelta

from django.conf import settings
from django.db import models, transaction
from django.db.models import Count, OuterRef, Subquery
from django.utils import timezone, translation
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from . import languages

# What support staff may type to find a conversation: at least the 8-character
# reference the page shows, or more of the id, with or without its hyphens.
SESSION_ID_PREFIX = re.compile(r"[0-9a-f]{8,32}")

# What must not reach a support engineer's terminal raw from a customer's text:
# C0 and C1 controls (ESC starts sequences that clear the screen, retitle the
# window, plant links; CR rewrites a line), DEL, Unicode line separators, and
# the bidirectional overrides and isolates that make text read differently
# from what it is. Newlines stay line breaks.
CONTROLS = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")

# The same characters, as JSON escapes, for the ones json.dumps(ensure_ascii=False)
# leaves raw (it escapes C0 controls itself): an export printed on a terminal
# cannot drive it, and json.loads gives back exactly what was stored. Among them
# are the characters Python's splitlines() and some editors take for line
# breaks (U+2028, U+2029, U+0085): a customer who types one cannot split a
# conversation's line in two. They only ever occur inside strings.
CONTROLS_AS_JSON_ESCAPES = {code: f"\\u{code:04x}" for code in range(0x20, 0x2070) if CONTROLS.match(chr(code))}


def visible(text: str, *, one_line: bool = False) -> str:
    """`text` with every control character escaped visibly: "\\x1b", "\\u202e".

    With `one_line`, newlines too ("\\x0a"): for a name, a model, anything
    shown inside a line of ours, where a newline would start a line that looks
    like ours.
    """
    text = CONTROLS.sub(_escaped, text.replace("\r\n", "\n"))
    return text.replace("\n", "\\x0a") if one_line else text


def _escaped(match: re.Match) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def idle_cutoff(days: int | None = None):
    """The oldest last activity a conversation may have and still be continued
    (or, with `days`, the oldest that is not yet idle that long)."""
    if days is None:
        days = settings.CHAT_SESSION_IDLE_DAYS
    return timezone.now() - timedelta(days=days)


def lease_end():
    """Until when a new or renewed lease on an answer slot holds (turns.py)."""
    return timezone.now() + timedelta(seconds=settings.CHAT_TURN_LEASE_SECONDS)


def session_id_range(text: str) -> tuple[uuid.UUID, uuid.UUID] | None:
    """The lowest and highest session ids that start with `text`, or None if it is not a prefix.

    The reference is the first 8 hex digits of the id. PostgreSQL stores a
    UUIDField as a native uuid, which has no LIKE/startswith, and casting it to
    text would bypass the unique index. But "starts with these digits" is the
    same as "lies between the id with those digits followed by all 0s and the
    one followed by all fs": uuids sort by their bytes on PostgreSQL and as
    lowercase hex strings on SQLite, so a range query is exact on both and uses
    the index.
    """
    digits = text.strip().lower().replace("-", "")
    if not SESSION_ID_PREFIX.fullmatch(digits):
        return None
    free_bits = 4 * (32 - len(digits))
    low = int(digits, 16) << free_bits
    return uuid.UUID(int=low), uuid.UUID(int=low | ((1 << free_bits) - 1))


class ConversationQuerySet(models.QuerySet):
    def active(self):
        """Conversations whose session has not passed the idle timeout."""
        return self.filter(last_activity_at__gte=idle_cutoff())

    def idle(self, days: int | None = None):
        """Conversations idle longer than `days` (by default the idle timeout)."""
        return self.filter(last_activity_at__lt=idle_cutoff(days))

    def of_session(self, session_id: uuid.UUID):
        """The conversation a session belongs to (none for an unknown or ended session): the one rule
        every lookup by session id keeps (the turn store's backends write it in their own terms)."""
        return self.filter(pk__in=Session.objects.filter(session_id=session_id).values("conversation"))

    def seen_by(self, session_id: uuid.UUID):
        """Annotate `session_seen_at`: when the session was last seen (read in the same statement, so
        that moving it costs a statement only when it is due: Session.objects.seen)."""
        return self.annotate(session_seen_at=Subquery(
            Session.objects.filter(session_id=session_id).values("last_seen_at")[:1]))

    def matching(self, id_or_reference: str):
        """Conversations with a session whose id is, or starts with, `id_or_reference` (e.g. the
        8-character reference a device's page shows), or whose first session's did; none if it
        is neither."""
        bounds = session_id_range(id_or_reference)
        if bounds is None:
            return self.none()
        return self.filter(models.Q(session_id__range=bounds) | models.Q(
            pk__in=Session.objects.filter(session_id__range=bounds).values("conversation")))

    def for_session(self, id_or_reference: "str | uuid.UUID") -> "Conversation":
        """The conversation with this session id or reference, for support staff:

            >>> Conversation.objects.for_session("a1c9a0a3")

        Raises Conversation.DoesNotExist, or MultipleObjectsReturned if a
        reference is shared (then give more of the id), or ValueError if it is
        neither an id nor a reference.
        """
        text = str(id_or_reference)
        if session_id_range(text) is None:
            raise ValueError(
                f"{text!r} is neither a session id nor an 8-character reference (8 hex digits)."
            )
        found = list(self.matching(text)[:2])
        if not found:
            raise Conversation.DoesNotExist(f"No conversation has the session id or reference {text!r}.")
        if len(found) > 1:
            raise Conversation.MultipleObjectsReturned(
                f"More than one conversation starts with {text!r}; give more of the session id."
            )
        return found[0]

    def with_summary(self):
        """Annotate `message_count`, `latest_model` (who wrote the latest reply) and `device_count`
        (its sessions: the browsers it is open in).

        Subqueries rather than a join with GROUP BY: they run only for the rows
        a page shows, however many conversations there are.
        """
        messages = Message.objects.filter(conversation=OuterRef("pk")).order_by()
        return self.annotate(
            message_count=Subquery(
                messages.values("conversation").annotate(n=Count("pk")).values("n")
            ),
            latest_model=Subquery(
                messages.filter(role=Message.Role.ASSISTANT).order_by("-seq").values("model")[:1]
            ),
            device_count=Subquery(
                Session.objects.filter(conversation=OuterRef("pk")).order_by().values("conversation")
                .annotate(n=Count("pk")).values("n")
            ),
        )

    def waiting(self):
        """Conversations whose customer waits for a person's answer, longest waiting first."""
        return self.exclude(handoff=Handoff.ASSISTANT).filter(waiting_since__isnull=False).order_by(
            "waiting_since"
        )

    def with_latest_question(self):
        """Annotate `latest_question`: the customer's latest message."""
        questions = Message.objects.filter(conversation=OuterRef("pk"), role=Message.Role.USER)
        return self.annotate(latest_question=Subquery(questions.order_by("-seq").values("content")[:1]))

    def export_lines(self, chunk_size: int = 500, with_session_ids: bool = False) -> Iterator[str]:
        """One JSON line per conversation, with its messages, oldest conversation first; with
        each one's session id only if asked (it works like a password), always its reference.

        Streams: only `chunk_size` conversations and their messages are in
        memory at a time (one query for the messages of each chunk).
        """
        conversations = self.order_by("pk").prefetch_related("messages")
        for conversation in conversations.iterator(chunk_size=chunk_size):
            line = json.dumps(conversation.export_record(with_session_ids), ensure_ascii=False)
            yield line.translate(CONTROLS_AS_JSON_ESCAPES) + "\n"


class Handoff(models.TextChoices):
    ASSISTANT = "assistant", _("the assistant answers")
    # The customer asked for a person; no staff member has replied yet.
    WAITING = "waiting", _("waiting for a person")
    # A staff member has replied; the assistant stays quiet until they hand back or close.
    STAFF = "staff", _("with a person")


class Conversation(models.Model):
    """One anonymous visitor's conversation, found by the sessionId their browser keeps (each
    browser that joined it keeps its own: Session)."""

    # The first session's id: what staff search by and what the transcript names. Which
    # sessions the conversation has now is Session's to say (that one may have ended).
    session_id = models.UUIDField(_("session id"), unique=True, default=uuid.uuid4, editable=False)
    created_at = models.DateTimeField(_("created at"), default=timezone.now, editable=False)
    last_activity_at = models.DateTimeField(_("last activity at"), default=timezone.now, db_index=True)
    failed_turns = models.PositiveIntegerField(
        _("failed turns"), default=0, help_text=_("Turns the assistant could not answer.")
    )
    # Who answers the customer (conversations/handoff.py has the transitions).
    handoff = models.CharField(_("handoff"), max_length=16, choices=Handoff.choices, default=Handoff.ASSISTANT)
    # Since when the customer has been waiting for a person's answer: set when
    # they ask for one (and when they write again after a staff reply), cleared
    # by a staff reply, a hand-back or a close. The queue is ordered by it.
    waiting_since = models.DateTimeField(_("waiting since"), null=True, blank=True)
    # When staff were last emailed about this conversation (at most once an hour).
    notified_at = models.DateTimeField(_("notified at"), null=True, blank=True)
    closed_at = models.DateTimeField(_("closed at"), null=True, blank=True, help_text=_("When staff last closed it."))
    # The address a customer left when the shop was closed (handoff.outlook): the first staff reply
    # after they left it is emailed to them once (customer_emailed_at), then it is kept for staff only.
    customer_email = models.EmailField(_("customer email"), blank=True, default="", help_text=_("Left by the customer to be written back to."))
    customer_emailed_at = models.DateTimeField(_("customer emailed at"), null=True, blank=True,
                                               help_text=_("When a staff reply was emailed to the customer's address."))
    # The clientMessageId of the conversation's first question, when the client
    # chose a strong one: a client whose first turn was cut off before it ever
    # received its sessionId retries with the same clientMessageId and no
    # sessionId, and gets this conversation back instead of a second one.
    opening_client_message_id = models.CharField(max_length=64, null=True, blank=True, unique=True,
                                                 editable=False)
    # The summary for the person taking over (summary.py): written once per waiting
    # episode, for the waiting_since it was written for.
    staff_summary = models.TextField(blank=True, default="", editable=False)
    staff_summary_for = models.DateTimeField(null=True, blank=True, editable=False)
    # The language the summary is written in: the admin language of the staff member it was written for.
    staff_summary_language = models.CharField(max_length=8, blank=True, default="", db_default="", editable=False)
    # The language the customer last wrote in (a code of settings.LANGUAGES): the page's language
    # as the turn found it active (turns.start). The assistant answers in it; staff see it.
    # db_default: a worker still running the code before the migration starts conversations during a
    # rolling deploy.
    language = models.CharField(_("language"), max_length=8, default="en", db_default="en", editable=False,
                                help_text=_("The language the customer last wrote in."))

    objects = ConversationQuerySet.as_manager()

    class Meta:
        verbose_name = _("conversation")
        verbose_name_plural = _("conversations")
        ordering = ["-last_activity_at"]
        permissions = [("reply_conversation", "Can answer customers in a conversation")]
        indexes = [
            # The queue: only the few conversations a person is on are indexed.
            models.Index(
                fields=["waiting_since"], name="conversation_queue",
                condition=~models.Q(handoff="assistant"),
            ),
        ]

    def __str__(self):  # the admin's titles and breadcrumbs, in the staff member's language
        return gettext("Conversation %(reference)s") % {"reference": self.reference}

    def save(self, *args, **kwargs):
        """A conversation is made with its first session (the turn store's postgres backend makes
        both in one statement)."""
        adding = self._state.adding
        with transaction.atomic():
            super().save(*args, **kwargs)
            if adding:
                Session.objects.create(session_id=self.session_id, conversation=self, created_at=self.created_at,
                                       last_seen_at=self.created_at)

    @property
    def reference(self) -> str:
        """The short reference the page shows a customer: the first 8 characters of the id."""
        return str(self.session_id)[:8]

    def handoff_in_english(self) -> str:
        """The handoff state as the transcript and the emails to staff name it: in English, whatever the
        request's language (the admin shows the label in the staff member's language)."""
        with translation.override("en"):
            return str(self.get_handoff_display())

    def transcript(self) -> str:
        """The conversation as readable text, for support staff (one query). It names the
        reference, never the session id, which works like a password."""
        messages = list(self.messages.all())
        started = timezone.localtime(self.created_at)
        # last_activity_at is moved on at most once a minute (turns.ACTIVITY_RESOLUTION):
        # the latest message says when exactly.
        last_activity = max([self.last_activity_at, *(message.created_at for message in messages)])
        failed = f", {self.failed_turns} failed turn{'s' if self.failed_turns != 1 else ''}"
        lines = [
            f"Conversation {self.reference}",
            f"Started {started:%Y-%m-%d %H:%M:%S %Z}, last activity "
            f"{timezone.localtime(last_activity):%Y-%m-%d %H:%M:%S}, "
            f"{len(messages)} message{'s' if len(messages) != 1 else ''}"
            + (failed if self.failed_turns else "")
            + ("" if self.handoff == Handoff.ASSISTANT else f", {self.handoff_in_english()}"),
            # Staff replies are sent as written: staff need to know which language to write in.
            f"The customer writes in {languages.english_name(self.language)} ({self.language})",
        ]
        for message in messages:
            lines.append("")
            lines.append(f"[{timezone.localtime(message.created_at):%Y-%m-%d %H:%M:%S}] {message.heading()}")
            # Escaped first, so that only a newline can start a line: a customer
            # cannot write a line of the transcript that looks like ours.
            lines.extend("    " + line for line in visible(message.content).split("\n"))
        return "\n".join(lines) + "\n"

    def export_record(self, with_session_id: bool = False) -> dict:
        """The conversation and its messages as one JSON object (see chat_export)."""
        return {
            **({"sessionId": str(self.session_id)} if with_session_id else {}),
            "reference": self.reference,
            "createdAt": self.created_at.isoformat(),
            "lastActivityAt": self.last_activity_at.isoformat(),
            "failedTurns": self.failed_turns,
            "handoff": self.handoff,
            "language": self.language,
            "closedAt": self.closed_at.isoformat() if self.closed_at else None,
            "messages": [message.export_record() for message in self.messages.all()],
        }


class SessionQuerySet(models.QuerySet):
    def seen(self, *session_ids: uuid.UUID, last_seen_at=None) -> None:
        """Move these sessions' last seen time, each at most once every Session.SEEN_RESOLUTION, in
        one statement; with the `last_seen_at` of one session read before (ConversationQuerySet.seen_by),
        no statement until it is due."""
        if last_seen_at is not None and not Session.seen_due(last_seen_at):
            return
        now = timezone.now()
        self.filter(session_id__in=session_ids, last_seen_at__lt=now - Session.SEEN_RESOLUTION).update(last_seen_at=now)


class Session(models.Model):
    """One browser's session of a conversation: its sessionId, and what its customer sees of it in
    the list of devices (the browser and when, no more). A conversation's first session is made
    with it; "Continue on another device" adds one (devices.py); ending one deletes it."""

    session_id = models.UUIDField(_("session id"), unique=True, editable=False)
    conversation = models.ForeignKey(Conversation, verbose_name=_("conversation"), on_delete=models.CASCADE,
                                     related_name="sessions")
    created_at = models.DateTimeField(_("created at"), default=timezone.now, editable=False)
    # Moved at most once every SEEN_RESOLUTION, by the page's history and long poll (the long poll's
    # with the others of its worker's second: runtime.Sightings), not by a turn.
    last_seen_at = models.DateTimeField(_("last seen at"), default=timezone.now)
    # The browser and its system from the User-Agent, in no language: "Firefox · Android", "Firefox"
    # (devices.device_label); "" if neither is known, or until a page of it says. See `name`.
    label = models.CharField(_("label"), max_length=40, blank=True, default="")

    SEEN_RESOLUTION = timedelta(minutes=1)
    LABEL_SEPARATOR = " · "

    objects = SessionQuerySet.as_manager()

    class Meta:
        verbose_name = _("session")
        verbose_name_plural = _("sessions")
        ordering = ["created_at", "pk"]

    def __str__(self):
        short = str(self.session_id)[:8]
        return gettext("%(device)s (session %(session)s)") % {"device": self.name, "session": short}

    @property
    def name(self) -> str:
        """The browser as its reader's language says it: "Firefox on Android", "Firefox", "A browser"."""
        browser, _separator, system = self.label.partition(self.LABEL_SEPARATOR)
        if not browser:
            return gettext("A browser")
        if not system:
            return browser
        return gettext("%(browser)s on %(system)s") % {"browser": browser, "system": system}

    @classmethod
    def seen_due(cls, last_seen_at) -> bool:
        """Whether a session last seen then is to be marked seen now."""
        return last_seen_at is None or last_seen_at < timezone.now() - cls.SEEN_RESOLUTION


class DeviceLink(models.Model):
    """An offer to bring another browser into a conversation: a one-time link and a short code,
    stored only as a hash of the link's token and a keyed hash of the code (devices.py); or the
    link alone, in the email of a staff reply (handoff.email_customer)."""

    class Kind(models.TextChoices):
        DEVICE = "device"  # "Continue on another device": a link and a code, for minutes
        EMAIL = "email"  # the link in the email of a staff reply: no code, for days

    conversation = models.ForeignKey(Conversation, verbose_name=_("conversation"), on_delete=models.CASCADE,
                                     related_name="device_links")
    kind = models.CharField(_("kind"), max_length=6, choices=Kind.choices, default=Kind.DEVICE, db_default=Kind.DEVICE,
                            editable=False)  # db_default: a worker still on the code before it inserts too
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    code_hash = models.CharField(max_length=64, unique=True, null=True, editable=False)  # noqa: DJ001 - unique, and an email link has none: NULLs never collide
    created_at = models.DateTimeField(_("created at"), default=timezone.now, editable=False)
    expires_at = models.DateTimeField(_("expires at"), db_index=True, editable=False)

    class Meta:
        verbose_name = _("device link")
        verbose_name_plural = _("device links")

    def __str__(self):  # never the hashes
        return f"Device link of conversation {self.conversation_id}, until {self.expires_at:%Y-%m-%d %H:%M}"


class WaitingConversation(Conversation):
    """The admin's queue: conversations a person was asked for (admin.QueueAdmin)."""

    class Meta:
        proxy = True
        verbose_name = _("conversation waiting for a person")
        verbose_name_plural = _("waiting for a person")


class Message(models.Model):
    class Role(models.TextChoices):
        USER = "user", _("User")
        ASSISTANT = "assistant", _("Assistant")
        # Written by a support staff member; `author` is the name they chose to show.
        STAFF = "staff", _("Staff")
        # A notice for the page ("Mia closed the conversation."); never shown to the LLM.
        EVENT = "event", _("Event")

    class Status(models.TextChoices):
        COMPLETE = "complete", _("Complete")
        # A user message whose turn failed; a retry may still complete it.
        FAILED = "failed", _("Failed")
        # An assistant reply cut short by the user pressing Stop.
        STOPPED = "stopped", _("Stopped")
        # An assistant reply being written: its row holds the question's answer
        # slot and the lease of the request answering it (see turns.py).
        ANSWERING = "answering", _("Answering")

    conversation = models.ForeignKey(Conversation, verbose_name=_("conversation"), on_delete=models.CASCADE,
                                     related_name="messages")
    # Position in the conversation: 0, 1, 2... Unique per conversation, which is
    # what keeps two simultaneous turns from interleaving (see turns.py).
    seq = models.PositiveIntegerField(_("seq"))
    role = models.CharField(_("role"), max_length=16, choices=Role.choices)
    content = models.TextField(_("content"))
    created_at = models.DateTimeField(_("created at"), default=timezone.now)
    status = models.CharField(_("status"), max_length=16, choices=Status.choices, default=Status.COMPLETE)
    # Chosen by the page for each question, so that a retry of a failed turn
    # completes it instead of storing the question twice.
    client_message_id = models.CharField(_("client message id"), max_length=64, blank=True, default="")
    # For replies: who answered and what it cost.
    model = models.CharField(_("model"), max_length=100, blank=True, default="")
    prompt_tokens = models.PositiveIntegerField(_("prompt tokens"), null=True, blank=True)
    completion_tokens = models.PositiveIntegerField(_("completion tokens"), null=True, blank=True)
    latency_ms = models.PositiveIntegerField(_("latency ms"), null=True, blank=True)
    # For staff messages (and the notices of their hand-backs and closes): the
    # display name the customer sees, and, for the record, the staff user.
    author = models.CharField(_("author"), max_length=60, blank=True, default="")
    sent_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, verbose_name=_("sent by"), null=True, blank=True, on_delete=models.SET_NULL,
        related_name="+",
    )
    # While a reply is ANSWERING: the request that answers it, and until when
    # it may (it renews this while it works). Kept once the reply is stored, so
    # that a save retried after a lost connection recognises its own row.
    lease_owner = models.UUIDField(null=True, blank=True, editable=False)
    lease_until = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        verbose_name = _("message")
        verbose_name_plural = _("messages")
        ordering = ["conversation", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["conversation", "seq"], name="message_unique_seq"),
            models.UniqueConstraint(
                fields=["conversation", "role", "client_message_id"],
                condition=~models.Q(client_message_id=""),
                name="message_unique_client_message_id",
            ),
        ]

    def __str__(self):  # shown by the shell's repr() too: escaped like the transcript
        return f"{visible(self.role, one_line=True)}: {visible(self.content[:60])}"

    def being_answered(self) -> bool:
        """Whether this is an answer slot whose owner's lease still holds (turns.py)."""
        return (self.status == self.Status.ANSWERING and self.lease_until is not None
                and self.lease_until > timezone.now())

    def heading(self) -> str:
        """Who wrote it and, for a reply, how: "Assistant (gpt-4o-mini, 812 ms, 120+45 tokens)"."""
        details = []
        if self.model:
            details.append(visible(self.model, one_line=True))  # named by the LLM server
        if self.latency_ms is not None:
            details.append(f"{self.latency_ms} ms")
        if self.prompt_tokens is not None or self.completion_tokens is not None:
            details.append(f"{self.prompt_tokens or 0}+{self.completion_tokens or 0} tokens")
        heading = {
            self.Role.USER: "Customer",
            self.Role.ASSISTANT: "Assistant",
            # The name a staff member chose to show; the role as stored, if none of ours.
            self.Role.STAFF: f"Staff ({visible(self.author, one_line=True)})",
            self.Role.EVENT: "Notice",
        }.get(self.role, visible(self.role, one_line=True))
        if details:
            heading += f" ({', '.join(details)})"
        if self.status == self.Status.FAILED:
            heading += " [failed: not answered]"
        elif self.status == self.Status.ANSWERING:
            heading += " [being answered]"
        elif self.status == self.Status.STOPPED:
            heading += " [stopped by the customer]"
        return heading + ":"

    def export_record(self) -> dict:
        return {
            "seq": self.seq,
            "role": self.role,
            "content": self.content,
            "createdAt": self.created_at.isoformat(),
            "status": self.status,
            "author": self.author or None,
            "clientMessageId": self.client_message_id or None,
            "model": self.model or None,
            "promptTokens": self.prompt_tokens,
            "completionTokens": self.completion_tokens,
            "latencyMs": self.latency_ms,
        }


class StaffProfile(models.Model):
    """A staff member's own settings: the name customers see with their replies.

    One per login, edited by its owner ("Your profile" in admin); a reply is signed
    with its sender's profile, never with a name someone else typed.
    """

    user = models.OneToOneField(settings.AUTH_USER_MODEL, verbose_name=_("user"), on_delete=models.CASCADE,
                                related_name="staff_profile")
    display_name = models.CharField(
        _("your name for customers"), max_length=60, blank=True,
        help_text=_("Shown with your replies, e.g. your first name (never your login)."),
    )

    class Meta:
        verbose_name = _("staff profile")
        verbose_name_plural = _("staff profiles")

    def __str__(self):
        return self.display_name or f"Profile of user {self.user_id}"

    @classmethod
    def name_of(cls, user) -> str:
        """The name `user` signs replies with; "" until they choose one."""
        return cls.objects.filter(user=user).values_list("display_name", flat=True).first() or ""

    @classmethod
    def set_name(cls, user, name: str) -> None:
        cls.objects.update_or_create(user=user, defaults={"display_name": name})


class SavedReply(models.Model):
    """A short reusable answer staff insert into the reply box (Alt+1..9, or the list)."""

    title = models.CharField(_("title"), max_length=80, unique=True)
    text = models.TextField(_("text"), max_length=4000)
    # Lower comes first: the first nine are Alt+1..Alt+9.
    position = models.PositiveSmallIntegerField(_("position"), default=0)

    class Meta:
        ordering = ["position", "title"]
        verbose_name = _("saved reply")
        verbose_name_plural = _("saved replies")

    def __str__(self):
        return self.title
