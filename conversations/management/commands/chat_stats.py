from datetime import datetime, time, timedelta

from django.db.models import Avg, Count, F, Q, Sum, Window
from django.db.models.functions import RowNumber, TruncDate
from django.utils import timezone

from conversations.management.base import SupportCommand
from conversations.models import Conversation, Message

from .chat_purge import MAX_DAYS, day_count

COLUMNS = [
    ("day", "day", 10),
    ("conversations", "conversations", 13),
    ("turns", "turns", 7),
    ("failed", "failed", 7),
    ("avg ms", "avg_latency", 7),
    ("p95 ms", "p95_latency", 7),
    ("prompt tokens", "prompt_tokens", 14),
    ("completion tokens", "completion_tokens", 17),
]


def p95_latency_by_day(replies) -> dict:
    """The 95th percentile of reply latency per day, by nearest rank: the latency of
    the reply at position ceil(0.95 * n) when a day's n replies are sorted.

    Window functions, which PostgreSQL and SQLite both have (unlike
    percentile_cont), in one query that returns one row per day.
    """
    day = TruncDate("created_at")
    ranked = replies.annotate(
        day=day,
        position=Window(RowNumber(), partition_by=day, order_by=[F("latency_ms").asc(), F("pk").asc()]),
        replies_that_day=Window(Count("pk"), partition_by=day),
    )
    # Integer arithmetic: ceil(95 n / 100) without floating point.
    nearest_rank = ranked.filter(position=(F("replies_that_day") * 95 + 99) / 100)
    return dict(nearest_rank.order_by().values_list("day", "latency_ms"))


class Command(SupportCommand):
    help = (
        "Conversations and turns per day, failed turns, average and p95 reply latency and tokens, "
        "for the last --days days (UTC)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--days", type=day_count, default=14, metavar="N",
                            help=f"how many days back, today included (default 14, at most {MAX_DAYS})")

    def handle(self, *args, days, **options):
        today = timezone.localdate()
        first = today - timedelta(days=days - 1)
        since = timezone.make_aware(datetime.combine(first, time.min))

        rows = {first + timedelta(days=n): {} for n in range(days)}

        started = (
            Conversation.objects.filter(created_at__gte=since)
            .annotate(day=TruncDate("created_at")).order_by().values("day")
            .annotate(conversations=Count("pk"))
        )
        for row in started:
            rows.setdefault(row["day"], {})["conversations"] = row["conversations"]

        messages = Message.objects.filter(created_at__gte=since)
        questions = Q(role=Message.Role.USER)
        # Latency counts whole replies only: a stopped one was cut short.
        answered = Q(role=Message.Role.ASSISTANT, status=Message.Status.COMPLETE, latency_ms__isnull=False)
        per_day = (
            messages.annotate(day=TruncDate("created_at")).order_by().values("day").annotate(
                turns=Count("pk", filter=questions),
                failed=Count("pk", filter=questions & Q(status=Message.Status.FAILED)),
                avg_latency=Avg("latency_ms", filter=answered),
                prompt_tokens=Sum("prompt_tokens"),
                completion_tokens=Sum("completion_tokens"),
            )
        )
        for row in per_day:
            rows.setdefault(row.pop("day"), {}).update(row)
        for day, p95 in p95_latency_by_day(messages.filter(answered)).items():
            rows.setdefault(day, {})["p95_latency"] = p95

        self.stdout.write(f"Last {days} days (UTC). Turns are questions; failed ones were never answered.")
        self.stdout.write(self.format_row({key: title for title, key, _ in COLUMNS}))
        for day, row in sorted(rows.items()):
            self.stdout.write(self.format_row({"day": day.isoformat(), **row}))
        self.stdout.write(self.format_row(self.totals(rows.values(), messages, answered)))

    def totals(self, rows, messages, answered) -> dict:
        rows = list(rows)
        total = {"day": "total"}
        for key in ["conversations", "turns", "failed", "prompt_tokens", "completion_tokens"]:
            total[key] = sum(row.get(key) or 0 for row in rows)
        total["avg_latency"] = messages.filter(answered).aggregate(avg=Avg("latency_ms"))["avg"]
        replies = messages.filter(answered).order_by("latency_ms")
        count = replies.count()
        if count:
            total["p95_latency"] = replies.values_list("latency_ms", flat=True)[(count * 95 + 99) // 100 - 1]
        return total

    @staticmethod
    def format_row(row: dict) -> str:
        cells = []
        for _, key, width in COLUMNS:
            value = row.get(key)
            if value is None:
                text = "-" if key in ("avg_latency", "p95_latency") else "0"
            elif isinstance(value, str):
                text = value
            else:
                text = f"{round(value):,}"
            cells.append(f"{text:>{width}}" if key != "day" else f"{text:<{width}}")
        return "  ".join(cells)
