"""`manage.py check --deploy`: who may frame the chat (CHAT_EMBED_ORIGINS); the site's public address
(CHAT_SITE_URL), which the emails link with."""

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


@register(Tags.security, deploy=True)
def site_url(app_configs, **kwargs):
    url = settings.CHAT_SITE_URL
    if not url:
        return [Warning(
            "CHAT_SITE_URL is empty: the emails to staff link to the admin by its path only, which cannot be "
            "clicked, and the email to a customer has no link back to the chat.",
            hint="Set CHAT_SITE_URL to the site's public address, e.g. https://chat.example.com "
                 "(docs/configuration.md).",
            id="conversations.W003",
        )]
    if not url.startswith("https://"):
        return [Warning(
            f"CHAT_SITE_URL ({url}) is not https: the links in the emails to staff and customers go over plain HTTP.",
            hint="Use the https:// address the site is served at (docs/configuration.md).",
            id="conversations.W004",
        )]
    return []
