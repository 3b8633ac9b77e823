"""Time units, in one place. The registry's API speaks milliseconds since the epoch
(``lastHealthCheck``, ``checkedAt``) while everything here speaks unix seconds; a model file's
``created`` is seconds, and a value in milliseconds there is a mistake worth a warning."""

from __future__ import annotations

# A timestamp this large is milliseconds: unix seconds reach it in the year 5138, while
# milliseconds passed it in 1973, so no real time of either kind is read as the other.
MS_THRESHOLD = 100_000_000_000


def is_milliseconds(timestamp: float) -> bool:
    """Whether a timestamp is (almost surely) in milliseconds rather than seconds."""
    return timestamp >= MS_THRESHOLD


def unix_seconds(timestamp: float | None) -> float | None:
    """Unix seconds from a timestamp in seconds or milliseconds (None stays None)."""
    if timestamp is None:
        return None
    return timestamp / 1000 if is_milliseconds(timestamp) else timestamp
