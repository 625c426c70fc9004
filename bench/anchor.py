"""The anchor: a bare Django view answering what /api/chat answers, with nothing behind it.

No database, no cache, no LLM client and no middleware: what Django itself costs
under the same gunicorn + uvicorn workers as the site. With BENCH_ANCHOR_DELAY
set, it awaits that many seconds before answering, as the site awaits the LLM.

With BENCH_ANCHOR_MIDDLEWARE=site it runs under the site's own settings and
middleware instead (still no database, cache or LLM): the difference between
the two is what the middleware stack costs, the rest is the chat turn's own.

This module is the anchor's settings, URLconf and ASGI application at once;
the application is made last, when the settings above it exist.
"""

import asyncio
import json
import os

from django.core.asgi import get_asgi_application
from django.http import JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

if os.environ.get("BENCH_ANCHOR_MIDDLEWARE") == "site":
    from chatsite.settings import *  # noqa: F403
else:
    SECRET_KEY = "bench-anchor-only"
    DEBUG = False
    ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
    INSTALLED_APPS: list[str] = []
    MIDDLEWARE: list[str] = []
    DATABASES: dict = {}
    USE_TZ = True
ROOT_URLCONF = __name__

DELAY = float(os.environ.get("BENCH_ANCHOR_DELAY", "0") or 0)


@csrf_exempt  # as the site's API views are (conversations/api.py)
async def chat(request):
    body = json.loads(request.body)
    if DELAY:
        await asyncio.sleep(DELAY)
    return JsonResponse({
        "reply": "Echo: " + body["message"],
        "sessionId": body.get("sessionId"),
        "newSession": False,
        "stopped": False,
        "responder": "openai",
        "model": "fake-model",
    })


urlpatterns = [path("api/chat", chat)]

os.environ.setdefault("DJANGO_SETTINGS_MODULE", __name__)
application = get_asgi_application()
