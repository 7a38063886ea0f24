"""The package's logger and its one log-once helper.

A mode fallback (``auto`` passing over a compiled kernel that cannot run, a mode that cannot take
per-token dt) is logged once per distinct message: never silent, never once per call.
"""
from __future__ import annotations

import logging

log = logging.getLogger("ssmkit")
_logged: set[str] = set()


def log_once(message: str, level: int = logging.WARNING) -> None:
    """Log ``message`` the first time this exact message is seen in this process."""
    if message not in _logged:
        _logged.add(message)
        log.log(level, message)
