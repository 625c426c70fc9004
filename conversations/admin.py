"""Django admin for support staff: find a conversation by its reference and read it.

The history is read-only here (it is what the customer and the assistant
said); a conversation can only be deleted, which also drops its cache entry.
"""

from django.contrib import admin
from django.http import HttpResponse
from django.utils import timezone

from .models import Conversation, Message


class MessageInline(admin.TabularInline):
    model = Message
    fields = ["seq", "role", "content", "status", "sent", "model", "prompt_tokens",
              "completion_tokens", "latency_ms"]
    readonly_fields = fields
    ordering = ["seq"]
    extra = 0
    can_delete = False

    @admin.display(description="sent")
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


class FailedTurnsFilter(admin.SimpleListFilter):
    title = "failed turns"
    parameter_name = "failed"

    def lookups(self, request, model_admin):
        return [("yes", "Has failed turns"), ("no", "No failed turns")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(failed_turns__gt=0)
        if self.value() == "no":
            return queryset.filter(failed_turns=0)
        return queryset


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = ["reference", "session_id", "created_at", "last_activity_at", "message_count",
                    "has_failed_turns", "latest_model"]
    list_filter = [FailedTurnsFilter, "created_at", "last_activity_at"]
    # Searching is done by get_search_results below; a non-empty search_fields
    # is what makes admin show the search box.
    search_fields = ["session_id"]
    search_help_text = "The whole session id, or the 8-character reference the customer sees."
    ordering = ["-last_activity_at"]
    fields = ["reference", "session_id", "created_at", "last_activity_at", "failed_turns"]
    readonly_fields = fields
    inlines = [MessageInline]
    actions = ["export_jsonl"]
    list_per_page = 50
    # Counting every conversation again next to the filtered count is a second
    # full count per page view on a big table, for a "(N total)" nobody needs.
    show_full_result_count = False

    def get_queryset(self, request):
        return super().get_queryset(request).with_summary()

    def get_search_results(self, request, queryset, search_term):
        if not search_term.strip():
            return queryset, False
        return queryset.matching(search_term), False

    def has_add_permission(self, request):
        return False  # conversations come from the chat only

    def has_change_permission(self, request, obj=None):
        return False  # read-only; viewing needs the view permission, deleting the delete one

    def delete_model(self, request, obj):
        Conversation.objects.filter(pk=obj.pk).forget()

    def delete_queryset(self, request, queryset):
        queryset.forget()

    @admin.display(description="reference", ordering="session_id")
    def reference(self, obj):
        return obj.reference

    @admin.display(description="messages", ordering="message_count")
    def message_count(self, obj):
        return obj.message_count or 0

    @admin.display(description="failed turns", boolean=True, ordering="failed_turns")
    def has_failed_turns(self, obj):
        return obj.failed_turns > 0

    @admin.display(description="model", ordering="latest_model")
    def latest_model(self, obj):
        return obj.latest_model or "-"

    @admin.action(description="Export selected conversations as JSON Lines", permissions=["view"])
    def export_jsonl(self, request, queryset):
        response = HttpResponse(
            "".join(queryset.export_lines()), content_type="application/x-ndjson; charset=utf-8"
        )
        filename = f"conversations-{timezone.now():%Y%m%d-%H%M%S}.jsonl"
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
        return response
