from django.apps import AppConfig


class ConversationsConfig(AppConfig):
    default_auto_field = 'django.db.models.BigAutoField'
    name = 'conversations'

    def ready(self):
        from . import updates  # noqa: F401 - connects the signal that tells waiting pages of new messages
