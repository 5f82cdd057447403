"""Pure session rules: token expiry at 06:00 IST, request-token parsing, secrets kept out of reprs,
and what each Kite failure means."""

from __future__ import annotations

from datetime import datetime

import pytest
import requests
from kiteconnect import exceptions as kex

from alphapanda.brokers.zerodha.errors import KiteFailure, classify, describe
from alphapanda.brokers.zerodha.session import KiteSession, LoginFailed, request_token_from, token_expiry
from alphapanda.events import IST


@pytest.mark.parametrize(
    ("logged_in", "expires"),
    [
        (datetime(2026, 1, 5, 8, 30, tzinfo=IST), datetime(2026, 1, 6, 6, 0, tzinfo=IST)),
        (datetime(2026, 1, 5, 23, 59, tzinfo=IST), datetime(2026, 1, 6, 6, 0, tzinfo=IST)),
        (datetime(2026, 1, 6, 5, 59, tzinfo=IST), datetime(2026, 1, 6, 6, 0, tzinfo=IST)),
        (datetime(2026, 1, 6, 6, 0, tzinfo=IST), datetime(2026, 1, 7, 6, 0, tzinfo=IST)),
        (datetime.fromisoformat("2026-01-05T03:00:00+00:00"), datetime(2026, 1, 6, 6, 0, tzinfo=IST)),
    ],
)
def test_token_expiry_when_logged_in_then_the_next_six_am_ist(logged_in: datetime, expires: datetime) -> None:
    assert token_expiry(logged_in) == expires


@pytest.mark.parametrize(
    "text",
    [
        "  abcDEF123  ",
        "https://ap.example/kite/callback?action=login&type=login&status=success&request_token=abcDEF123",
        "action=login&request_token=abcDEF123",
    ],
)
def test_request_token_from_when_token_or_redirect_url_then_the_token(text: str) -> None:
    assert request_token_from(text) == "abcDEF123"


@pytest.mark.parametrize("text", ["", "not a token!", "https://ap.example/cb?status=success"])
def test_request_token_from_when_nothing_usable_then_login_failed(text: str) -> None:
    with pytest.raises(LoginFailed):
        request_token_from(text)


def test_session_when_printed_then_the_access_token_is_not_shown() -> None:
    at = datetime(2026, 1, 5, 9, 0, tzinfo=IST)
    session = KiteSession("very-secret-token", "AB1234", at, token_expiry(at))

    assert "very-secret-token" not in repr(session) and "very-secret-token" not in str(session)
    assert KiteSession.from_json(session.to_json()) == session


@pytest.mark.parametrize(
    ("exc", "meaning"),
    [
        (kex.TokenException("Incorrect `api_key` or `access_token`."), KiteFailure.TOKEN),
        (kex.InputException("Invalid `tradingsymbol`."), KiteFailure.REJECTED),
        (kex.OrderException("Order rejected"), KiteFailure.REJECTED),
        (kex.PermissionException("No permission"), KiteFailure.REJECTED),
        (kex.NetworkException("Too many requests", code=429), KiteFailure.THROTTLED),
        (kex.NetworkException("Unable to reach the OMS", code=503), KiteFailure.UNKNOWN),
        (kex.GeneralException("Something went wrong", code=500), KiteFailure.UNKNOWN),
        (kex.DataException("Couldn't parse", code=502), KiteFailure.UNKNOWN),
        (requests.exceptions.ConnectionError("reset"), KiteFailure.UNKNOWN),
        (requests.exceptions.ReadTimeout("timed out"), KiteFailure.UNKNOWN),
        (ValueError("a bug"), None),
    ],
)
def test_classify_when_kite_or_network_fails_then_what_it_means_for_the_order(
    exc: BaseException, meaning: KiteFailure | None
) -> None:
    assert classify(exc) is meaning


def test_describe_when_requests_error_then_type_only_because_urls_may_carry_tokens() -> None:
    exc = requests.exceptions.ConnectionError("GET /session?access_token=abc failed")

    assert describe(exc) == "ConnectionError"
    assert describe(kex.InputException("Invalid `quantity`.")) == "InputException: Invalid `quantity`."
