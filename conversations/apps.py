from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class ConversationsConfig(AppConfig):
    default_auto_field = 'django.db.models.BigAutoField'
    name = 'conversations'
    verbose_name = _("Conversations")  # the admin's heading for this app's models

    def ready(self):
        from . import checks  # noqa: F401 - registers the deploy checks
