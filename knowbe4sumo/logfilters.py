"""Logging filters that keep `make run`'s console readable."""

from __future__ import annotations

import logging

# The Collection page polls its refresh endpoint every few seconds per open
# tab, and every page loads a dozen static files: at the default level these
# lines would bury everything else.
QUIET_PREFIXES = ("/static/", "/collection/status/")


class QuietRequests(logging.Filter):
    """Drop runserver's lines for static files and the status refresh.

    Only successful answers are dropped, and only while the logger's level is
    above DEBUG: `LOG_LEVEL=DEBUG` shows every request again, and a 4xx/5xx
    on those paths is always shown.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if logging.getLogger(record.name).getEffectiveLevel() <= logging.DEBUG:
            return True
        if getattr(record, "status_code", 200) >= 400:
            return True
        request_line = str(record.args[0]) if record.args else ""
        parts = request_line.split(" ")
        path = parts[1] if len(parts) > 1 else ""
        return not path.startswith(QUIET_PREFIXES)
