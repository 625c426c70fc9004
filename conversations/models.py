import uuid
from datetime import timedelta

from django.conf import settings
from django.db import models
from django.utils import timezone


def idle_cutoff():
    """The oldest last activity a conversation may have and still be continued."""
    return timezone.now() - timedelta(days=settings.CHAT_SESSION_IDLE_DAYS)


class ConversationQuerySet(models.QuerySet):
    def active(self):
        """Conversations whose session has not passed the idle timeout."""
        return self.filter(last_activity_at__gte=idle_cutoff())

    def idle(self):
        return self.filter(last_activity_at__lt=idle_cutoff())


class Conversation(models.Model):
    """One anonymous visitor's conversation, found by the sessionId their browser keeps."""

    session_id = models.UUIDField(unique=True, default=uuid.uuid4, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    last_activity_at = models.DateTimeField(default=timezone.now, db_index=True)
    failed_turns = models.PositiveIntegerField(
        default=0, help_text="Turns the assistant could not answer."
    )

    objects = ConversationQuerySet.as_manager()

    class Meta:
        ordering = ["-last_activity_at"]

    def __str__(self):
        return f"Conversation {self.reference}"

    @property
    def reference(self) -> str:
        """The short reference the page shows a customer: the first 8 characters of the id."""
        return str(self.session_id)[:8]


class Message(models.Model):
    class Role(models.TextChoices):
        USER = "user"
        ASSISTANT = "assistant"

    class Status(models.TextChoices):
        COMPLETE = "complete"
        # A user message whose turn failed; a retry may still complete it.
        FAILED = "failed"
        # An assistant reply cut short by the user pressing Stop.
        STOPPED = "stopped"

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="messages")
    # Position in the conversation: 0, 1, 2... Unique per conversation, which is
    # what keeps two simultaneous turns from interleaving (see turns.py).
    seq = models.PositiveIntegerField()
    role = models.CharField(max_length=16, choices=Role.choices)
    content = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.COMPLETE)
    # Chosen by the page for each question, so that a retry of a failed turn
    # completes it instead of storing the question twice.
    client_message_id = models.CharField(max_length=64, blank=True, default="")
    # For replies: who answered and what it cost.
    model = models.CharField(max_length=100, blank=True, default="")
    prompt_tokens = models.PositiveIntegerField(null=True, blank=True)
    completion_tokens = models.PositiveIntegerField(null=True, blank=True)
    latency_ms = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["conversation", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["conversation", "seq"], name="message_unique_seq"),
            models.UniqueConstraint(
                fields=["conversation", "role", "client_message_id"],
                condition=~models.Q(client_message_id=""),
                name="message_unique_client_message_id",
            ),
        ]

    def __str__(self):
        return f"{self.role}: {self.content[:60]}"
