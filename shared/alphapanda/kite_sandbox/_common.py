"""Shared pieces: IST clock, Kite timestamp format, JSON rendering and the Kite error envelope."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

IST = ZoneInfo("Asia/Kolkata")

Clock = Callable[[], datetime]


def ist_now() -> datetime:
    return datetime.now(IST)


def kite_timestamp(moment: datetime) -> str:
    # Kite writes IST wall-clock time without a zone, e.g. "2022-03-03 09:24:25".
    return moment.astimezone(IST).strftime("%Y-%m-%d %H:%M:%S")


def json_number(value: Decimal) -> int | float:
    # Floats exist only on the wire: JSON has one number type and Kite prints 72 or 109.4.
    if value == value.to_integral_value():
        return int(value)
    return float(value)


def _default(value: object) -> Any:
    if isinstance(value, Decimal):
        return json_number(value)
    if isinstance(value, datetime):
        return kite_timestamp(value)
    if isinstance(value, date):
        return value.isoformat()
    raise TypeError(f"cannot render {type(value).__name__} as JSON")


def dumps(payload: object) -> str:
    return json.dumps(payload, default=_default, separators=(",", ":"))


class KiteError(Exception):
    """An error the sandbox answers the way Kite does: HTTP status plus `error_type`."""

    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message

    def envelope(self) -> dict[str, Any]:
        return {"status": "error", "message": self.message, "data": None, "error_type": self.error_type}


def input_error(message: str) -> KiteError:
    return KiteError(400, "InputException", message)


def token_error(message: str = "Incorrect `api_key` or `access_token`.") -> KiteError:
    return KiteError(403, "TokenException", message)


def too_many_requests() -> KiteError:
    # Kite's 429 body carries NetworkException; the official client raises it as such.
    return KiteError(429, "NetworkException", "Too many requests")


ERROR_TYPES_BY_STATUS: dict[int, tuple[str, str]] = {
    400: ("InputException", "Missing or bad request parameters or values"),
    403: ("TokenException", "Incorrect `api_key` or `access_token`."),
    404: ("GeneralException", "Route not found"),
    429: ("NetworkException", "Too many requests"),
    500: ("GeneralException", "Something went wrong, please try again"),
    502: ("DataException", "Couldn't parse the response from the OMS"),
    503: ("NetworkException", "Unable to reach the OMS"),
    504: ("NetworkException", "Gateway timeout"),
}


def error_for_status(status: int, message: str | None = None) -> KiteError:
    error_type, default_message = ERROR_TYPES_BY_STATUS.get(status, ("GeneralException", "Unknown error"))
    return KiteError(status, error_type, message or default_message)
