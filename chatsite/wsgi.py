"""
WSGI config for chatsite project.

It exposes the WSGI callable as a module-level variable named ``application``.

For more information on this file, see
https://docs.djangoproject.com/en/5.2/howto/deployment/wsgi/
"""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'chatsite.settings')

# As chatsite/asgi.py: unfit settings with DEBUG off stop the worker with one line.
from chatsite.startup import refuse_to_run_wrong  # noqa: E402

refuse_to_run_wrong(status=3)

application = get_wsgi_application()
