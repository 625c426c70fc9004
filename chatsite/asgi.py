"""The ASGI application: gunicorn's uvicorn workers serve it (see the Procfile).

The JSON API (/api/ and /healthz) is served by a second Django handler whose
middleware is only what the API needs, all of it async. Django runs each step
of a sync-only middleware (all of the stock ones: sessions, auth, messages,
CSRF, WhiteNoise...) through a thread hand-off; the page and the admin need
them, a chat turn does not, and under load those hand-offs were a large part
of a turn's CPU (docs/benchmarks.md).
"""

import os

from django.conf import settings
from django.core.asgi import get_asgi_application
from django.core.handlers.asgi import ASGIHandler

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")

site = get_asgi_application()


class ApiHandler(ASGIHandler):
    def load_middleware(self, is_async=False):
        # Django builds the chain from settings.MIDDLEWARE; this handler's chain
        # is settings.API_MIDDLEWARE, swapped in only while it is built.
        site_middleware = settings.MIDDLEWARE
        settings.MIDDLEWARE = settings.API_MIDDLEWARE
        try:
            super().load_middleware(is_async)
        finally:
            settings.MIDDLEWARE = site_middleware


api = ApiHandler()


async def application(scope, receive, send):
    path = scope.get("path", "")
    if scope["type"] == "http" and (path.startswith("/api/") or path == "/healthz"):
        return await api(scope, receive, send)
    return await site(scope, receive, send)
