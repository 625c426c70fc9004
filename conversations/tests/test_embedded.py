"""The site on its embedded defaults, served the Procfile's way: SQLite, the per-process cache
and the offline responder, no service and no API key: what a newcomer's `make run` serves.
The worker's start (the ASGI lifespan: its LLM client, the quick path's clients) must not
need any of them."""

import os
import subprocess
import sys

from devtools.processes import ROOT, Site

from .client import SiteClient


def test_the_embedded_defaults_serve_a_conversation(tmp_path):
    env = {
        "DJANGO_SECRET_KEY": "test-only-secret-key",
        "DJANGO_DEBUG": "1",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "REDIS_URL": "",
        "OPENAI_API_KEY": "",
        "CHAT_OFFLINE_WORD_DELAY": "0",
    }
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "REDIS_", "OPENAI_", "CHAT_"))}
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT,
                   env={**base, **env}, check=True)
    site = Site(env)
    try:
        api = SiteClient(site)
        first = api.chat("What is your return policy?").ok()
        second = api.chat("Do you ship to Austria?", first["sessionId"]).ok()
        log = site.log()
    finally:
        site.stop()

    assert first["newSession"] is True and first["responder"] == "offline" and first["reply"]
    assert second["sessionId"] == first["sessionId"] and second["newSession"] is False and second["reply"]
    # The worker's start ran to its end (uvicorn would serve on without it, saying the
    # lifespan "appears unsupported", and every turn would lose its quick path).
    assert "Application startup complete" in log and "unsupported" not in log
    assert "Traceback" not in log
