"""The bare view (the floor): a bare Django view answering what /api/chat answers, with nothing behind it.

No database, no cache, no LLM client and no middleware: what Django itself costs
under the same gunicorn + uvicorn workers as the site. With BENCH_ANCHOR_DELAY
set, it awaits that many seconds before answering, as the site awaits the LLM.

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

SECRET_KEY = "bench-anchor-only"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS: list[str] = []
MIDDLEWARE: list[str] = []
DATABASES: dict = {}
USE_TZ = True
ROOT_URLCONF = __name__
# What the Procfile's worker (chatsite/worker.py) reads: the site's defaults.
CHAT_HEADER_TIMEOUT = 10.0
CHAT_BODY_TIMEOUT = 30.0
CHAT_MAX_CONNECTIONS = 4000
CHAT_MAX_TURNS_IN_FLIGHT = 1000

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
