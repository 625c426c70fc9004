from django.db.models import F
from django.utils import timezone
from django.utils.timesince import timesince

from conversations.management.base import SupportCommand
from conversations.models import Conversation, Handoff, visible


class Command(SupportCommand):
    help = (
        "List the conversations a person was asked for: those waiting for a staff answer first "
        "(longest waiting first), then those a staff member is on."
    )

    def add_arguments(self, parser):
        parser.add_argument("--waiting", action="store_true",
                            help="only the customers waiting for an answer (not those answered already)")

    def handle(self, *args, waiting, **options):
        queue = Conversation.objects.exclude(handoff=Handoff.ASSISTANT).with_latest_question()
        if waiting:
            queue = queue.filter(waiting_since__isnull=False)
        queue = queue.order_by(F("waiting_since").asc(nulls_last=True), "last_activity_at")
        now = timezone.now()
        rows = [
            (
                conversation.reference,
                conversation.get_handoff_display(),
                timesince(conversation.waiting_since, now) if conversation.waiting_since else "answered",
                conversation.language,  # the customer's: staff replies are sent as written, not translated
                # The customer's words, on one line, with what could drive a terminal escaped.
                visible(" ".join((conversation.latest_question or "").split())[:60], one_line=True),
            )
            for conversation in queue
        ]
        if not rows:
            self.stdout.write("Nobody is waiting for a person.")
            return
        header = ("REFERENCE", "STATE", "WAITING FOR", "LANGUAGE", "LATEST MESSAGE")
        widths = [max(len(row[i]) for row in [header, *rows]) for i in range(4)]
        for row in [header, *rows]:
            self.stdout.write("  ".join(cell.ljust(width) for cell, width in zip(row[:4], widths, strict=True))
                              + "  " + row[4])
        self.stdout.write(f"\n{sum(1 for row in rows if row[2] != 'answered')} waiting for an answer, "
                          f"{len(rows)} with a person asked for. Answer them in the admin: /admin/.")
