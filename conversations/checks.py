"""`manage.py check --deploy`: who may frame the chat (CHAT_EMBED_ORIGINS)."""

from django.conf import settings
from django.core.checks import Tags, Warning, register


@register(Tags.security, deploy=True)
def embed_origins(app_configs, **kwargs):
    origins = settings.CHAT_EMBED_ORIGINS
    if not origins:
        return [Warning(
            "CHAT_EMBED_ORIGINS is empty: no shop page can show the chat (static/widget.js).",
            hint="List the shop origins that embed the chat, e.g. CHAT_EMBED_ORIGINS=https://shop.example "
                 "(docs/embed.md); ignore this if the chat is only used on its own page.",
            id="conversations.W001",
        )]
    if "*" in origins:
        return [Warning(
            "CHAT_EMBED_ORIGINS holds '*': any site can frame the chat and talk to it by postMessage.",
            hint="List the shop's own origins instead (docs/embed.md).",
            id="conversations.W002",
        )]
    return []
