"""The cache (Redis) is optional and is not trusted.

After it fails, leave it alone for a few seconds: a stopped Redis fails fast,
but a stalled or unreachable one costs a socket timeout per call; skipping it
for RETRY_AFTER seconds after a failure keeps that cost to one timeout per
worker every few seconds instead of one per call.

What is read from it is plain data: values are JSON (JSONSerializer below, set
in settings.CACHES), never pickle, which django-redis uses by default and which
runs whatever code anyone who can write to Redis put there. A value that is not
JSON is logged and read as a miss.
"""

import logging
import time

from django_redis.serializers.json import JSONSerializer as _JSONSerializer

logger = logging.getLogger(__name__)

RETRY_AFTER = 5.0
_down_until = 0.0


def available() -> bool:
    return time.monotonic() >= _down_until


def failed(action: str, error: Exception) -> None:
    global _down_until
    _down_until = time.monotonic() + RETRY_AFTER
    logger.warning("cache %s failed, skipping the cache for %ss: %r", action, RETRY_AFTER, error)


def reset() -> None:
    global _down_until
    _down_until = 0.0


class JSONSerializer(_JSONSerializer):
    """django-redis's JSON serializer, with a value that does not decode read as a miss (None)."""

    def loads(self, value: bytes):
        try:
            return super().loads(value)
        except (ValueError, UnicodeDecodeError, RecursionError) as error:
            logger.warning("cache value is not JSON, read as a miss: %s", type(error).__name__)
            return None
