"""Django admin for support staff: find a conversation by its reference, read it, answer it.

The history is read-only here (it is what the customer, the assistant and staff
said); a conversation can be deleted, which also drops its cache entry. Staff
with both the "Can view conversation" and the "Can answer customers"
permissions reply from a conversation's page (a box under its messages) and
hand it back to the assistant or close it (the reply permission alone is not
enough); the queue ("Waiting for a person") lists the conversations a person is
on. A conversation's page shows its newest MESSAGES_PER_PAGE messages, with
links to older ones.

Day to day, staff work from the support inbox (docs/staff.md): the live view of a
conversation (InboxAdminMixin, with inbox.py's JSON endpoints), the queue's
waiting / answered / closed filter (QueueFilter), their own profile
(StaffProfileAdmin) and saved replies (SavedReplyAdmin).
"""

import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from itertools import islice

from asgiref.sync import sync_to_async
from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.utils import quote, unquote
from django.core.exceptions import PermissionDenied
from django.core.handlers.asgi import ASGIRequest
from django.core.paginator import Paginator
from django.db import DatabaseError
from django.db.models import F, Q
from django.http import Http404, HttpResponseRedirect, StreamingHttpResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.timesince import timesince
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _

from . import devices, forget, handoff, inbox, languages, summary
from .errors import DatabaseUnavailable, TurnInProgress
from .models import Conversation, Handoff, Message, SavedReply, StaffProfile, WaitingConversation

logger = logging.getLogger(__name__)

REPLY_PERMISSION = "conversations.reply_conversation"
# Messages a conversation's page shows at a time (the newest first; links to older ones).
MESSAGES_PER_PAGE = 200
# Saved replies the live view offers (the first nine have Alt+1..9).
SAVED_REPLIES_SHOWN = 100


class MessageInline(admin.TabularInline):
    model = Message
    fields = ["seq", "role", "author", "content", "status", "sent", "model", "prompt_tokens",
              "completion_tokens", "latency_ms"]
    readonly_fields = fields
    ordering = ["seq"]
    extra = 0
    can_delete = False

    @admin.display(description=_("sent"))
    def sent(self, message):
        # To the second: admin's default format stops at the minute, and a
        # conversation happens within one.
        return f"{timezone.localtime(message.created_at):%Y-%m-%d %H:%M:%S %Z}"

    def has_view_permission(self, request, obj=None):
        # The messages are the conversation: whoever may read it may read them,
        # without a separate permission on messages.
        return request.user.has_perm("conversations.view_conversation")

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


def language_badge(language: str):
    """The customer's language as staff see it in a list: its code, named in the staff member's language."""
    return format_html('<span class="language-badge" lang="{}" title="{}">{}</span>', language,
                       languages.staff_name(language), language.upper())


class LanguageFilter(admin.SimpleListFilter):
    """The site's languages (settings.LANGUAGES), not the values found: that would read every row."""

    title = _("language")
    parameter_name = "language"

    def lookups(self, request, model_admin):
        return [(code, languages.staff_name(code)) for code, _name in settings.LANGUAGES]

    def queryset(self, request, queryset):
        return queryset.filter(language=self.value()) if self.value() else queryset


class FailedTurnsFilter(admin.SimpleListFilter):
    title = _("failed turns")
    parameter_name = "failed"

    def lookups(self, request, model_admin):
        return [("yes", _("Has failed turns")), ("no", _("No failed turns"))]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(failed_turns__gt=0)
        if self.value() == "no":
            return queryset.filter(failed_turns=0)
        return queryset


# --- The support inbox: the live view of a conversation (inbox.py has its JSON) ---------


class InboxAdminMixin:
    """The live staff view of a conversation, and the staff JSON endpoints under /admin/.

    The live view reads like a chat: the newest MESSAGES_PER_PAGE messages (links to
    older ones), the summary for the person taking over at the top, the reply box at the
    bottom; static/admin-chat/live.js keeps it live through inbox.live_updates.
    """

    def get_urls(self):
        live = self.admin_site.admin_view(self.live_view)
        return [path("waiting-count/", inbox.waiting_count, name="conversations_waiting_count"),
                path("<path:object_id>/live/", live, name="conversations_conversation_live"),
                path("<path:object_id>/live/updates/", inbox.live_updates,
                     name="conversations_conversation_live_updates"),
                path("<path:object_id>/live/send/", inbox.live_send, name="conversations_conversation_live_send"),
                *super().get_urls()]  # type: ignore[misc]

    def live_view(self, request, object_id):
        if not self.has_view_permission(request):  # type: ignore[attr-defined]
            raise PermissionDenied
        pk = inbox.conversation_id(object_id)
        conversation = Conversation.objects.filter(pk=pk).first() if pk is not None else None
        if conversation is None:
            raise Http404(gettext("No conversation has that id."))
        before = request.GET.get("before", "")
        older = conversation.messages.exclude(status=Message.Status.ANSWERING)
        if before.isdigit() and len(before) <= 10:
            older = older.filter(seq__lt=int(before))
        shown = list(older.order_by("-seq")[:MESSAGES_PER_PAGE + 1])
        has_older = len(shown) > MESSAGES_PER_PAGE
        shown = shown[:MESSAGES_PER_PAGE][::-1]
        newest_page = not before
        may_reply = request.user.has_perm(REPLY_PERMISSION)
        saved = list(SavedReply.objects.all()[:SAVED_REPLIES_SHOWN]) if may_reply else []
        return TemplateResponse(request, "admin/conversations/conversation/live.html", {
            **self.admin_site.each_context(request),  # type: ignore[attr-defined]
            "opts": self.opts, "original": conversation,  # type: ignore[attr-defined]
            "title": gettext("Conversation %(reference)s") % {"reference": conversation.reference},
            "messages_shown": shown,
            "older_url": f"?before={shown[0].seq}" if has_older and shown else None,
            "newest_page": newest_page,
            "after": shown[-1].seq if shown else -1,
            # In the staff member's admin language (LocaleMiddleware: Accept-Language).
            "summary": summary.for_staff(conversation, languages.current()),
            "language_name": languages.staff_name(conversation.language),
            "may_reply": may_reply,
            "display_name": StaffProfile.name_of(request.user),
            "saved_replies": saved,
            "saved_replies_json": [{"title": reply.title, "text": reply.text} for reply in saved],
            "token": uuid.uuid4().hex,
            "updates_url": reverse("admin:conversations_conversation_live_updates", args=[conversation.pk]),
            "send_url": reverse("admin:conversations_conversation_live_send", args=[conversation.pk]),
            "details_url": reverse("admin:conversations_conversation_change", args=[conversation.pk]),
            "profile_url": reverse("admin:conversations_staffprofile_mine"),
        })


@admin.register(Conversation)
class ConversationAdmin(InboxAdminMixin, admin.ModelAdmin):
    # The reference, never the session id: it works like a password (whoever has it can read
    # and continue the conversation as the customer). A full id is shown only on a logged
    # request (session_id_view); staff still find a conversation by the id a customer reads out.
    # Fits 1280 px beside the filters: the start is in the filters and on the conversation's page.
    list_display = ["reference", "last_activity_at", "message_count", "has_failed_turns", "latest_model",
                    "handoff", "language_badge", "devices_open"]
    list_filter = [FailedTurnsFilter, "handoff", LanguageFilter, "created_at", "last_activity_at"]
    # Searching is done by get_search_results below; a non-empty search_fields
    # is what makes admin show the search box.
    search_fields = ["session_id"]
    search_help_text = _("The whole session id, or the 8-character reference the customer sees.")
    ordering = ["-last_activity_at"]
    fields = ["reference", "created_at", "last_activity_at", "failed_turns", "handoff", "language_badge",
              "waiting_since", "closed_at", "devices_open"]
    readonly_fields = fields
    inlines = [MessageInline]
    actions = ["export_jsonl", "end_devices"]
    list_per_page = 50
    # Counting every conversation again next to the filtered count is a second
    # full count per page view on a big table, for a "(N total)" nobody needs.
    show_full_result_count = False

    def get_queryset(self, request):
        return super().get_queryset(request).with_summary()

    def get_urls(self):
        reply = self.admin_site.admin_view(self.reply_view)
        session_id = self.admin_site.admin_view(self.session_id_view)
        return [path("<path:object_id>/reply/", reply, name="conversations_conversation_reply"),
                path("<path:object_id>/session-id/", session_id, name="conversations_conversation_session_id"),
                *super().get_urls()]

    def has_reply_permission(self, request) -> bool:
        """Whether this user may answer customers (and hand back and close): they need
        both "Can view conversation" and "Can answer customers". The reply permission
        alone is not enough: nobody answers a conversation they may not read."""
        return self.has_view_permission(request) and request.user.has_perm(REPLY_PERMISSION)

    def get_fields(self, request, obj=None):
        # The address a customer left for the staff reply (handoff.email_customer): shown only to
        # staff who may answer, who need to know that their first reply goes to it.
        fields = list(super().get_fields(request, obj))
        if self.has_reply_permission(request):
            fields += ["customer_email", "customer_emailed_at"]
        return fields

    def get_readonly_fields(self, request, obj=None):
        return self.get_fields(request, obj)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = extra_context or {}
        conversation = self.get_object(request, unquote(object_id))
        if conversation is not None:
            extra_context["message_pages"] = pages = self.message_pages(request, conversation)
            request.conversation_message_pages = pages  # type: ignore[attr-defined]  # for get_formset_kwargs
        if conversation is not None:
            extra_context["live_url"] = inbox.live_url(conversation.pk)
            extra_context["session_id_url"] = reverse("admin:conversations_conversation_session_id",
                                                      args=[object_id])
        if conversation is not None and self.has_reply_permission(request):
            last_seq = conversation.messages.order_by("-seq").values_list("seq", flat=True).first()
            extra_context["reply_form"] = ReplyForm(initial=request.session.pop(unsent_key(conversation.pk), None) or {
                "author": StaffProfile.name_of(request.user),
                # Made once per form shown: sending this form twice stores one reply.
                "token": uuid.uuid4().hex,
                "seen": -1 if last_seq is None else last_seq,
            })
            extra_context["reply_url"] = reverse("admin:conversations_conversation_reply", args=[object_id])
            extra_context["person_on_it"] = conversation.handoff != Handoff.ASSISTANT
        return super().change_view(request, object_id, form_url, extra_context)

    def message_pages(self, request, conversation) -> dict:
        """Which of the conversation's messages the page shows: MESSAGES_PER_PAGE of them,
        the newest first (?messages=2 for the ones before...), each page in the order
        they were written. A long conversation rendered whole took seconds and tens of
        megabytes of HTML. Two queries: the count, and the page's first and last seq."""
        seqs = conversation.messages.order_by("-seq").values_list("seq", flat=True)
        page = Paginator(seqs, MESSAGES_PER_PAGE).get_page(request.GET.get("messages"))
        shown = list(page.object_list)

        def url(number: int) -> str:
            query = request.GET.copy()
            query["messages"] = str(number)
            return "?" + query.urlencode()

        count = page.paginator.count
        return {
            "seqs": (min(shown), max(shown)) if shown else None,
            "count": count,
            "first": count - page.end_index() + 1 if shown else 0,
            "last": count - page.start_index() + 1 if shown else 0,
            "paged": page.paginator.num_pages > 1,
            "older_url": url(page.next_page_number()) if page.has_next() else None,
            "newer_url": url(page.previous_page_number()) if page.has_previous() else None,
            "newest_url": url(1) if page.number > 2 else None,
        }

    def get_formset_kwargs(self, request, obj, inline, prefix):
        kwargs = super().get_formset_kwargs(request, obj, inline, prefix)
        pages = getattr(request, "conversation_message_pages", None)
        if isinstance(inline, MessageInline) and pages is not None:
            seqs = pages["seqs"]
            # seq is unique within a conversation: the range is exactly the page.
            kwargs["queryset"] = kwargs["queryset"].filter(seq__range=seqs) if seqs else kwargs["queryset"].none()
        return kwargs

    def reply_view(self, request, object_id):
        """Reply, hand back or close: POST only, from the box on the conversation's page;
        back to that page after.

        It needs both the view and the reply permission (has_reply_permission),
        checked before the id is even looked at: staff without them get 403 for
        any id, and learn nothing of which conversations exist. Then an id that
        names no conversation (or is no id at all: "abc", "1.5", "1/2") is 404.

        While the conversation is busy (its row or its messages locked by a long
        transaction elsewhere: a statement or lock timeout, after the store's one
        retry) or the database fails, nothing is stored and staff are told so on
        the page, their reply kept in the box to send again: never a 500. Sending
        it again stores it once (its token).
        """
        if not self.has_reply_permission(request):
            raise PermissionDenied
        try:
            return self._reply(request, object_id)
        except (DatabaseError, DatabaseUnavailable, TurnInProgress) as error:
            logger.warning("admin: a staff change was refused, the database is busy: %r", error)
        action = request.POST.get("action", "reply")
        form = ReplyForm(request.POST)
        if action == "reply" and form.is_valid():
            request.session[unsent_key(object_id)] = form.cleaned_data
            messages.error(request, gettext("Your reply was not sent: the conversation is busy just now (the database "
                                            "did not answer in time). It is kept in the box below: press Send again "
                                            "in a moment."))
        else:
            messages.error(request, gettext("Nothing was changed: the conversation is busy just now (the database did "
                                            "not answer in time). Try again in a moment."))
        return HttpResponseRedirect(reverse("admin:conversations_conversation_change", args=[object_id]))

    def _reply(self, request, object_id):
        # get_object() answers None for an id that is not a valid primary key too.
        conversation = self.get_object(request, unquote(object_id))
        if conversation is None:
            raise Http404(gettext("No conversation has that id."))
        page = reverse("admin:conversations_conversation_change", args=[quote(conversation.pk)])
        if request.method != "POST":
            return HttpResponseRedirect(page)
        form = ReplyForm(request.POST)
        action = request.POST.get("action", "reply")
        if action not in ("reply", "hand_back", "close"):
            messages.error(request, gettext("Choose Send, Hand back or Close."))
            return HttpResponseRedirect(page)
        if not form.is_valid():
            for field, errors in form.errors.items():
                messages.error(request, f"{form.fields[field].label}: {' '.join(errors)}")
            return HttpResponseRedirect(page)
        author, text = form.cleaned_data["author"], form.cleaned_data["reply"]
        if author != StaffProfile.name_of(request.user):
            StaffProfile.set_name(request.user, author)  # the name field is the user's own profile's
        if action == "reply":
            if not text:
                messages.error(request, gettext("Write a reply first."))
                return HttpResponseRedirect(page)
            others = conversation.messages.filter(seq__gt=form.cleaned_data["seen"]).exclude(sent_by=request.user)
            meanwhile = list(others.filter(role__in=[Message.Role.USER, Message.Role.STAFF]))
            _message, stored = handoff.staff_reply(conversation.pk, request.user, author, text, form.cleaned_data["token"])
            if not stored:
                messages.warning(request, gettext("That reply was sent already; it was not sent again."))
            else:
                messages.success(request, gettext("Your reply was sent."))
                if meanwhile:
                    messages.warning(request, gettext("New messages came in while you were writing (see below)."))
        else:
            close = action == "close"
            if handoff.hand_back(conversation.pk, request.user, author, close=close) is None:
                messages.info(request, gettext("The assistant was answering this conversation already."))
            else:
                messages.success(request, gettext("Closed: the assistant answers again.") if close
                                 else gettext("Handed back: the assistant answers again."))
        return HttpResponseRedirect(page)

    def session_id_view(self, request, object_id):
        """The full session id of each browser that has the conversation (one per device that
        joined; none once all have ended), shown on an explicit request (a POST from the button
        on its page) and recorded with who asked: in the conversation's history (Django's
        LogEntry) and in the log. A GET goes back to the conversation's page."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        conversation = self.get_object(request, unquote(object_id))
        if conversation is None:
            raise Http404(gettext("No conversation has that id."))
        if request.method != "POST":
            page = reverse("admin:conversations_conversation_change", args=[quote(conversation.pk)])
            return HttpResponseRedirect(page)
        self.log_change(request, conversation, "Showed the full session id.")
        logger.info("staff showed a session id", extra={
            "user": request.user.get_username(), "conversation": conversation.pk,
            "reference": conversation.reference,
        })
        # admin_view makes it no-store: never kept in a browser's or a proxy's cache.
        return TemplateResponse(request, "admin/conversations/conversation/session_id.html", {
            **self.admin_site.each_context(request),
            "opts": self.opts, "original": conversation, "title": gettext("Session id of %(conversation)s") % {"conversation": conversation},
            "sessions": conversation.sessions.all(),
        })

    def get_search_results(self, request, queryset, search_term):
        if not search_term.strip():
            return queryset, False
        return queryset.matching(search_term), False

    def has_add_permission(self, request):
        return False  # conversations come from the chat only

    def has_change_permission(self, request, obj=None):
        return False  # read-only; viewing needs the view permission, deleting the delete one

    def delete_model(self, request, obj):
        forget.conversations(Conversation.objects.filter(pk=obj.pk))

    def delete_queryset(self, request, queryset):
        forget.conversations(queryset)

    @admin.display(description=_("reference"), ordering="session_id")
    def reference(self, obj):
        return obj.reference

    @admin.display(description=_("messages"), ordering="message_count")
    def message_count(self, obj):
        return obj.message_count or 0

    @admin.display(description=_("failed"), boolean=True, ordering="failed_turns")
    def has_failed_turns(self, obj):
        return obj.failed_turns > 0

    @admin.display(description=_("model"), ordering="latest_model")
    def latest_model(self, obj):
        model = obj.latest_model or "-"
        return model if len(model) <= 24 else model[:23] + "…"

    @admin.display(description=_("language"), ordering="language")
    def language_badge(self, obj):
        return language_badge(obj.language)

    @admin.display(description=_("devices"), ordering="device_count")
    def devices_open(self, obj):
        return obj.device_count or 0

    @admin.action(description=_("End all devices of selected conversations (a lost phone)"), permissions=["delete"])
    def end_devices(self, request, queryset):
        """Every browser of these conversations loses it at once; the conversations stay."""
        chosen = list(queryset.values_list("pk", flat=True))
        ended = devices.end_all(chosen)
        for conversation in Conversation.objects.filter(pk__in=chosen):
            self.log_change(request, conversation, f"Ended all devices ({ended} sessions in the selection).")
        logger.info("staff ended all devices", extra={"conversations": len(chosen), "sessions": ended,
                                                      "user": request.user.get_username()})
        # Two counts, each with its own plural: "Ended 1 session of 2 conversations."
        selected = ngettext("%(count)d conversation", "%(count)d conversations", len(chosen)) % {"count": len(chosen)}
        text = ngettext("Ended %(sessions)d session of %(conversations)s.",
                        "Ended %(sessions)d sessions of %(conversations)s.", ended)
        self.message_user(request, text % {"sessions": ended, "conversations": selected}, messages.SUCCESS)

    @admin.action(description=_("Export selected conversations as JSON Lines"), permissions=["view"])
    def export_jsonl(self, request, queryset):
        """Streamed, as chat_export is: a chunk of conversations in memory at a time,
        however many are selected, and the first line is sent before the last is read."""
        lines = queryset.export_lines()  # named by reference: no session ids
        response = StreamingHttpResponse(
            read_in_thread(lines) if isinstance(request, ASGIRequest) else lines,
            content_type="application/x-ndjson; charset=utf-8",
        )
        filename = f"conversations-{timezone.now():%Y%m%d-%H%M%S}.jsonl"
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
        return response


# Lines of an export read per hand-off to the request's thread under ASGI.
EXPORT_BATCH = 100


async def read_in_thread(lines: Iterator[str]) -> AsyncIterator[str]:
    """`lines` as an async iterator, EXPORT_BATCH lines a step.

    Under ASGI, Django reads a sync iterator whole into a list before it sends
    a byte (StreamingHttpResponse.__aiter__), which would undo the streaming.
    Each step runs in the request's thread (thread_sensitive), the one whose
    database connection the query started on and that Django closes it in.
    """
    step = sync_to_async(lambda: "".join(islice(lines, EXPORT_BATCH)), thread_sensitive=True)
    try:
        while chunk := await step():
            yield chunk
    finally:  # the client went away, or all was sent: end the query in its own thread
        await sync_to_async(getattr(lines, "close", lambda: None), thread_sensitive=True)()


class ReplyForm(forms.Form):
    author = forms.CharField(
        label=_("Your name for customers"), max_length=60,
        help_text=_("Shown with your replies, e.g. your first name (never your login). Kept in your profile."),
    )
    reply = forms.CharField(label=_("Reply"), widget=forms.Textarea(attrs={"rows": 4}), required=False,
                            max_length=4000)
    token = forms.CharField(widget=forms.HiddenInput, max_length=64)
    seen = forms.IntegerField(widget=forms.HiddenInput, min_value=-1)

    def clean_author(self):
        return self.cleaned_data["author"].strip()

    def clean_token(self):
        token = self.cleaned_data["token"]
        if not token.isalnum():
            raise forms.ValidationError(_("Reload the page and try again."))
        return token


def unsent_key(conversation_id) -> str:
    """Where a staff member's session keeps a reply the database refused, for the next page view."""
    return f"unsent-reply-{conversation_id}"


class QueueFilter(admin.SimpleListFilter):
    """The queue's three piles; by default the open ones (waiting first, then answered)."""

    title = _("status")
    parameter_name = "status"

    def lookups(self, request, model_admin):
        return [("waiting", _("Waiting")), ("answered", _("Answered")), ("closed", _("Closed"))]

    def choices(self, changelist):
        # The first is admin's "All" (in the admin's language: not found by its text), here the open ones.
        choices = super().choices(changelist)
        everything = next(choices)
        everything["display"] = _("Open (waiting and answered)")
        yield everything
        yield from choices

    def queryset(self, request, queryset):
        value = self.value()
        if value == "waiting":
            return queryset.exclude(handoff=Handoff.ASSISTANT).filter(waiting_since__isnull=False)
        if value == "answered":
            return queryset.filter(handoff=Handoff.STAFF, waiting_since__isnull=True)
        if value == "closed":
            return queryset.filter(handoff=Handoff.ASSISTANT, closed_at__isnull=False).order_by("-closed_at")
        return queryset.exclude(handoff=Handoff.ASSISTANT)


@admin.register(WaitingConversation)
class QueueAdmin(admin.ModelAdmin):
    """The conversations a person was asked for, longest waiting first.

    Who may read conversations may read the queue: it is a view of them, not a
    thing with permissions of its own.
    """

    list_display = ["conversation", "language_badge", "state", "waited", "latest_question", "last_activity_at"]
    list_display_links = None
    list_filter = [QueueFilter]
    ordering = [F("waiting_since").asc(nulls_last=True), "-last_activity_at"]
    list_per_page = 100
    show_full_result_count = False

    def get_queryset(self, request):
        # Those a person is on, and those staff closed (QueueFilter shows one or the other).
        on_it = ~Q(handoff=Handoff.ASSISTANT) | Q(closed_at__isnull=False)
        return super().get_queryset(request).filter(on_it).with_latest_question()

    def has_view_permission(self, request, obj=None):
        return request.user.has_perm("conversations.view_conversation")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description=_("conversation"))
    def conversation(self, obj):
        return format_html('<a href="{}">{}</a>', inbox.live_url(obj.pk), obj.reference)

    @admin.display(description=_("language"), ordering="language")
    def language_badge(self, obj):
        return language_badge(obj.language)

    @admin.display(description=_("state"), ordering="handoff")
    def state(self, obj):
        return obj.get_handoff_display()

    @admin.display(description=_("waiting for"), ordering="waiting_since")
    def waited(self, obj):
        if obj.waiting_since is None:
            return gettext("closed") if obj.handoff == Handoff.ASSISTANT else gettext("answered")
        return timesince(obj.waiting_since, timezone.now())

    @admin.display(description=_("the customer's latest message"))
    def latest_question(self, obj):
        text = obj.latest_question or ""
        return text if len(text) <= 120 else text[:119] + "…"


# --- Staff profiles and saved replies -----------------------------------------------


class ProfileForm(forms.ModelForm):
    class Meta:
        model = StaffProfile
        fields = ["display_name"]

    def clean_display_name(self):
        name = self.cleaned_data["display_name"].strip()
        if not name:
            raise forms.ValidationError(_("Choose the name customers see with your replies."))
        return name


@admin.register(StaffProfile)
class StaffProfileAdmin(admin.ModelAdmin):
    """Every staff member edits their own profile ("Your profile", the mine/ page); the list of
    everyone's is for whoever has the model's permissions (a superuser)."""

    list_display = ["display_name", "user"]
    search_fields = ["display_name", "user__username"]

    def get_urls(self):
        mine = self.admin_site.admin_view(self.mine_view)
        return [path("mine/", mine, name="conversations_staffprofile_mine"), *super().get_urls()]

    def mine_view(self, request):
        profile = StaffProfile.objects.filter(user=request.user).first() or StaffProfile(user=request.user)
        form = ProfileForm(request.POST or None, instance=profile)
        if request.method == "POST" and form.is_valid():
            form.save()
            messages.success(request, gettext("Saved: your replies are signed with this name."))
            return HttpResponseRedirect(request.get_full_path())
        return TemplateResponse(request, "admin/conversations/staffprofile/mine.html", {
            **self.admin_site.each_context(request),
            "opts": self.opts, "title": gettext("Your profile"), "form": form,
        })


@admin.register(SavedReply)
class SavedReplyAdmin(admin.ModelAdmin):
    list_display = ["title", "position", "start"]
    list_editable = ["position"]
    search_fields = ["title", "text"]

    @admin.display(description=_("text"))
    def start(self, obj):
        return obj.text if len(obj.text) <= 80 else obj.text[:79] + "…"
