"""What a Kite call's failure means for us: rejected, token gone, throttled, or outcome unknown.

The official client raises `kiteconnect.exceptions.*` for answers Kite gave, and lets
`requests` exceptions through for answers it never got. Only the first kind is definite.
"""

from __future__ import annotations

from enum import Enum

import requests
from kiteconnect import exceptions as kex


class KiteFailure(Enum):
    REJECTED = "rejected"
    """Kite refused the request (bad input, order or permission): retrying cannot help."""
    TOKEN = "token"
    """The access token is invalid or expired: nothing works until someone logs in again."""
    THROTTLED = "throttled"
    """HTTP 429: Kite refused before doing anything; back off and try again."""
    UNKNOWN = "unknown"
    """No definite answer (connection reset, timeout, 5xx): the request may have taken effect."""


def classify(exc: BaseException) -> KiteFailure | None:
    """The meaning of `exc` raised by a Kite call, or None if it is not a Kite or network failure."""
    if isinstance(exc, kex.KiteException) and getattr(exc, "code", None) == 429:
        # The client raises the class the body names, with the HTTP status as `code`: a 429 is
        # Kite's rate limit whatever the class, and it refused before doing anything.
        return KiteFailure.THROTTLED
    if isinstance(exc, kex.TokenException):
        return KiteFailure.TOKEN
    if isinstance(exc, kex.InputException | kex.OrderException | kex.PermissionException):
        return KiteFailure.REJECTED
    if isinstance(exc, kex.KiteException | requests.RequestException):
        return KiteFailure.UNKNOWN
    return None


def describe(exc: BaseException) -> str:
    """One line for logs and events. Kite's messages carry no credentials; requests' may carry URLs,
    so for those only the exception type is kept."""
    if isinstance(exc, kex.KiteException):
        return f"{type(exc).__name__}: {exc}"
    return type(exc).__name__


class ZerodhaUnavailable(RuntimeError):
    """A transient failure: raised so that the delivery layer retries the event with backoff."""


class OrderInFlight(ZerodhaUnavailable):
    """Another instance is placing this signal's order right now."""


class OrderOutcomeUnknown(ZerodhaUnavailable):
    """Kite may or may not hold the order, and the lookup by tag could not tell yet."""


class KiteThrottled(ZerodhaUnavailable):
    """The shared order-rate limit stayed full for longer than the caller waits."""
