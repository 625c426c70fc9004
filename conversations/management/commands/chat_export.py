import argparse
import os
import sys
import time
from datetime import UTC, date, datetime, timedelta
from datetime import time as day_start

from django.core.management.base import CommandError
from django.utils import timezone

from conversations.management.base import SupportCommand
from conversations.models import Conversation

# Conversations (with their messages) in memory at a time.
CHUNK_SIZE = 500


def day(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a date like 2026-01-31") from None


def start_of(value: date) -> datetime:
    return timezone.make_aware(datetime.combine(value, day_start.min))


def bound(option: str, value: date, days_after: int = 0) -> datetime:
    """The start of the day `days_after` days after `value`, for a query; a CommandError,
    not an OverflowError, if that is past what a datetime holds, here or in UTC."""
    try:
        start = start_of(value + timedelta(days=days_after))
        start.astimezone(UTC)  # the database compares in UTC
    except OverflowError:
        raise CommandError(
            f"{option} {value} is too far: it must be between {date.min + timedelta(days=1)} "
            f"and {date.max - timedelta(days=1)}; leave {option} out for no limit."
        ) from None
    return start


class Command(SupportCommand):
    help = (
        "Export conversations with their messages as JSON Lines (one conversation a line), "
        "oldest first, streamed, each named by its reference (--with-session-ids adds the session ids). "
        "--since/--until select by day of last activity (UTC)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--since", type=day, metavar="DATE",
                            help="only conversations last active on or after this day, e.g. 2026-01-31")
        parser.add_argument("--until", type=day, metavar="DATE",
                            help="only conversations last active on or before this day")
        parser.add_argument("--output", "-o", metavar="FILE", help="write here instead of standard output")
        parser.add_argument("--with-session-ids", action="store_true",
                            help="include each conversation's session id, which works like a password "
                                 "(by default only its reference)")

    def handle(self, *args, since, until, output, with_session_ids, **options):
        if since and until and since > until:
            raise CommandError("--since must not be after --until.")
        conversations = Conversation.objects.all()
        if since:
            conversations = conversations.filter(last_activity_at__gte=bound("--since", since))
        if until:
            conversations = conversations.filter(last_activity_at__lt=bound("--until", until, days_after=1))

        progress = Progress(self.stderr, conversations.count()) if self.stderr.isatty() else None
        if output is None:
            try:
                self.write_lines(conversations, self.stdout, progress, with_session_ids)
            except BrokenPipeError:  # `chat_export | head`: the reader has had enough
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        else:
            try:
                with open(output, "w", encoding="utf-8") as out:
                    exported = self.write_lines(conversations, out, progress, with_session_ids)
            except OSError as error:
                raise CommandError(f"Cannot write {output}: {error.strerror}") from None
            self.stdout.write(f"Exported {exported:,} conversations to {output}.")

    def write_lines(self, conversations, out, progress, with_session_ids: bool) -> int:
        exported = 0
        for line in conversations.export_lines(chunk_size=CHUNK_SIZE, with_session_ids=with_session_ids):
            out.write(line)
            exported += 1
            if progress:
                progress.show(exported)
        if progress:
            progress.done(exported)
        return exported


class Progress:
    """A one-line progress bar, redrawn at most ten times a second."""

    WIDTH = 30

    def __init__(self, stream, total: int):
        self.stream, self.total, self.drawn_at = stream, total, 0.0

    def show(self, count: int) -> None:
        now = time.monotonic()
        if now - self.drawn_at >= 0.1:
            self.drawn_at = now
            self.draw(count)

    def done(self, count: int) -> None:
        self.draw(count)
        self.stream.write("", style_func=str)  # ends the line

    def draw(self, count: int) -> None:
        share = count / self.total if self.total else 1.0
        filled = round(share * self.WIDTH)
        self.stream.write(
            f"\r[{'#' * filled}{'.' * (self.WIDTH - filled)}] {share:4.0%} {count:,}/{self.total:,} conversations",
            style_func=str,  # plain, not the red Django gives stderr
            ending="",
        )
        self.stream.flush()
