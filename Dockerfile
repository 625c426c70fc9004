# The site as the Procfile runs it (gunicorn with uvicorn workers), for
# docker-compose.yml or any container platform. Python 3.11: the version
# requirements.txt was locked with (make lock).
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# The locked packages first, so that a change to the code reuses this layer.
# Every file is checked against its hash; psycopg's binary wheel brings libpq.
COPY requirements.txt .
RUN pip install --require-hashes -r requirements.txt

# GNU gettext's msgfmt, which compilemessages runs to build the translations below.
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends gettext >/dev/null \
    && rm -rf /var/lib/apt/lists/*

COPY . .

# Static files are built into the image: content-hashed names with .gz and .br
# copies, which WhiteNoise serves (chatsite/settings.py, STATIC_ROOT). The build
# has no settings of its own (no key, no database), so this one step runs with
# DEBUG on, which collectstatic does not depend on; the container runs with
# DEBUG off and the settings it is given, and refuses to start without them.
RUN DJANGO_DEBUG=1 python manage.py collectstatic --noinput --verbosity 0
# The translations (locale/*.po, docs/i18n.md) compiled to the .mo files Django reads.
RUN DJANGO_DEBUG=1 python manage.py compilemessages --verbosity 0

# Not root: the code and the static files are read-only to the site.
RUN useradd --system --uid 10001 --user-group --no-create-home chatsite
USER 10001

ENV PORT=8000
EXPOSE 8000

# Docker's own health check (docker ps, Compose, Swarm): GET /livez on the
# container's port, the liveness answer that touches no dependency: Swarm replaces
# an unhealthy container, and a new one would not bring back a database that is
# down (that is /healthz's 503, for the load balancer: docs/health.md). It answers
# only to DJANGO_ALLOWED_HOSTS, so it asks by the first of them; no answer within
# the timeout counts as unhealthy.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; host = os.environ.get('DJANGO_ALLOWED_HOSTS', '').split(',')[0].strip().lstrip('.*') or 'localhost'; u.urlopen(u.Request(f\"http://127.0.0.1:{os.environ.get('PORT', '8000')}/livez\", headers={'Host': host}), timeout=4)"]

# The Procfile's web command, read from the Procfile so that the two cannot
# drift apart; `exec` makes gunicorn PID 1, so `docker stop` reaches it. The
# release step (migrations) is the Procfile's release line: docker-compose.yml
# runs it as a service of its own before the web process starts.
CMD ["/bin/sh", "-c", "eval \"exec $(sed -n 's/^web: *//p' Procfile)\""]
