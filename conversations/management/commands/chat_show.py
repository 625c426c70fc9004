from django.core.management.base import CommandError

from conversations.management.base import SupportCommand
from conversations.models import Conversation


class Command(SupportCommand):
    help = "Print the transcript of a conversation, found by its session id or 8-character reference."

    def add_arguments(self, parser):
        parser.add_argument("session", metavar="SESSION_ID_OR_REFERENCE")

    def handle(self, *args, session, **options):
        try:
            conversation = Conversation.objects.for_session(session)
        except (ValueError, Conversation.DoesNotExist, Conversation.MultipleObjectsReturned) as error:
            raise CommandError(str(error)) from None
        self.stdout.write(conversation.transcript(), ending="")
