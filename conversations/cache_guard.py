"""The cache (Redis) is optional: after it fails, leave it alone for a few seconds.

A stopped Redis fails fast, but a stalled or unreachable one costs a socket
timeout per call; skipping it for RETRY_AFTER seconds after a failure keeps
that cost to one timeout per worker every few seconds instead of one per call.
"""

import logging
import time

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
