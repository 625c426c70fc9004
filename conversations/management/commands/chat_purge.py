import argparse

from django.conf import settings
from django.core.management.base import CommandError

from conversations import forget
from conversations.management.base import SupportCommand
from conversations.models import Conversation, Message, idle_cutoff

# The most days a command counts back: a hundred years. A datetime holds no
# more than about 3.6 million days back from now (year 1), and counting many
# more than this would be a mistake anyway.
MAX_DAYS = 36500


def positive_int(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number of at least 1")
    return int(value)


def day_count(value: str) -> int:
    """A number of days: at least 1, at most MAX_DAYS."""
    days = positive_int(value)
    if days > MAX_DAYS:
        raise argparse.ArgumentTypeError(f"{value} days is too many: at most {MAX_DAYS} days (100 years)")
    return days


class Command(SupportCommand):
    help = (
        "Delete conversations idle longer than --older-than days (default CHAT_RETENTION_DAYS), "
        "with their messages and Redis keys, in batches."
    )

    def add_arguments(self, parser):
        parser.add_argument("--older-than", type=day_count, metavar="DAYS",
                            help=f"idle for more than this many days, at most {MAX_DAYS} "
                                 "(default: CHAT_RETENTION_DAYS)")
        parser.add_argument("--dry-run", action="store_true", help="report what would go, delete nothing")
        parser.add_argument("--batch-size", type=positive_int, default=1000, metavar="N",
                            help="conversations deleted per transaction (default 1000)")

    def handle(self, *args, older_than, dry_run, batch_size, **options):
        days = older_than or settings.CHAT_RETENTION_DAYS
        if not 1 <= days <= MAX_DAYS:
            raise CommandError(f"CHAT_RETENTION_DAYS must be at least 1 and at most {MAX_DAYS} (it is {days}).")
        if days < settings.CHAT_SESSION_IDLE_DAYS:
            self.stderr.write(
                f"Note: {days} days is less than CHAT_SESSION_IDLE_DAYS ({settings.CHAT_SESSION_IDLE_DAYS}), "
                "so this deletes conversations customers could still continue."
            )
        # The cutoff is fixed now, so every batch agrees on what is old enough.
        cutoff = idle_cutoff(days)
        idle = Conversation.objects.filter(last_activity_at__lt=cutoff)

        if dry_run:
            conversations = idle.count()
            messages = Message.objects.filter(conversation__in=idle).count()
            self.stdout.write(
                f"Would delete {conversations:,} conversations ({messages:,} messages) "
                f"idle for more than {days} days. Nothing was deleted (--dry-run)."
            )
            return

        conversations = messages = 0
        while batch := list(idle.order_by("pk").values_list("pk", flat=True)[:batch_size]):
            # forget() deletes by primary key what is still idle, then the Redis keys;
            # a conversation that came back to life since the select is left alone.
            deleted, deleted_messages = forget.conversations(idle.filter(pk__in=batch), idle_before=cutoff)
            conversations += deleted
            messages += deleted_messages
            if options["verbosity"] >= 2:
                self.stdout.write(f"  deleted {deleted:,} conversations ({deleted_messages:,} messages)")
        self.stdout.write(
            f"Deleted {conversations:,} conversations ({messages:,} messages) idle for more than "
            f"{days} days, and their cache entries."
        )
