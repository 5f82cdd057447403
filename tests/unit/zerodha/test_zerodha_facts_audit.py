"""Checks of the Zerodha adapter against /work/shared/reference/facts.md section 7, one fact each.

Each test names the facts.md line it checks; they were written failing against the code they fix.
"""

from __future__ import annotations

import json

import pytest
from kiteconnect import exceptions as kex

from alphapanda.brokers.zerodha.errors import KiteFailure, classify
from alphapanda.brokers.zerodha.postbacks import OrderUpdateProcessor, PostbackEndpoint, Publisher
from alphapanda.brokers.zerodha.trader import ZerodhaTrader
from alphapanda.brokers.zerodha.updates import postback_checksum, verify_checksum
from alphapanda.config import ConfigError, KiteSettings, load_settings

SECRET = "s3cret"
ORDER_ID = "2601050000000000001"
STAMP = "2026-01-05 10:00:01"


# facts.md line 164: "checksum = SHA-256(order_id + order_timestamp + api_secret) (hex)". Anyone can
# reach the postback URL, so any body whose checksum is not that hex digest must be refused, not
# crash the check (hmac.compare_digest raises TypeError on non-ASCII str).
@pytest.mark.parametrize(
    "checksum",
    [
        "é" * 64,
        postback_checksum(ORDER_ID, STAMP, SECRET)[:-1] + "é",
        "\u0663" * 64,  # ARABIC-INDIC DIGIT THREE: a digit, but not a hex digit
    ],
)
def test_verify_checksum_when_checksum_is_not_ascii_hex_then_false_not_an_error(checksum: str) -> None:
    body = {"order_id": ORDER_ID, "order_timestamp": STAMP, "checksum": checksum}

    assert verify_checksum(body, SECRET) is False


def test_verify_checksum_when_order_id_or_timestamp_not_ascii_then_the_signature_still_decides() -> None:
    # The digest is over the UTF-8 bytes; a genuine signature over such fields still verifies.
    body = {"order_id": "ordé1", "order_timestamp": STAMP}
    body["checksum"] = postback_checksum(body["order_id"], STAMP, SECRET)

    assert verify_checksum(body, SECRET) is True
    assert verify_checksum({**body, "checksum": "é"}, SECRET) is False


def test_endpoint_when_checksum_is_not_ascii_then_401_and_nothing_built() -> None:
    # facts.md line 164 (postback checksum): a forged body is a 401, never a 500.
    def processor() -> OrderUpdateProcessor:
        raise AssertionError("an unsigned body must not reach the processor")

    def publisher() -> Publisher:
        raise AssertionError("an unsigned body must not reach the publisher")

    endpoint = PostbackEndpoint(lambda: SECRET, processor, publisher)
    body = {"order_id": ORDER_ID, "order_timestamp": STAMP, "status": "COMPLETE", "checksum": "ü" * 64}

    assert endpoint(json.dumps(body).encode()).status == 401


# facts.md line 166: "excess -> HTTP 429 until the window resets". The official client raises the
# class the body's error_type names, with the HTTP status as `code` (connect.py `_request`), so a
# 429 means "throttled, nothing done" whichever class the body named.
@pytest.mark.parametrize(
    "exc",
    [
        kex.NetworkException("Too many requests", code=429),
        kex.GeneralException("Too many requests", code=429),
        kex.InputException("Too many requests", code=429),
        kex.DataException("Too many requests", code=429),
    ],
)
def test_classify_when_kite_answers_http_429_then_throttled_whatever_the_error_type(
    exc: kex.KiteException,
) -> None:
    assert classify(exc) is KiteFailure.THROTTLED


# facts.md line 160: "strict 10 orders/s (429 beyond)"; line 166: "order placement 10 r/s ...
# 200 orders/min". A deployment configured above either would break the rule on its own, so
# reading the settings refuses it with one line naming the setting.
@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("ORDERS_PER_SECOND", "11", "ALPHAPANDA_KITE__ORDERS_PER_SECOND"),
        ("ORDERS_PER_MINUTE", "201", "ALPHAPANDA_KITE__ORDERS_PER_MINUTE"),
        ("ORDERS_PER_DAY", "0", "ALPHAPANDA_KITE__ORDERS_PER_DAY"),
    ],
)
def test_settings_when_order_rate_above_kites_limit_or_daily_cap_not_positive_then_one_line(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    monkeypatch.setenv(f"ALPHAPANDA_KITE__{name}", value)

    with pytest.raises(ConfigError) as raised:
        load_settings()
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_trader_when_order_rate_at_or_below_kites_limit_then_accepted() -> None:
    for per_second, per_minute in ((10, 200), (3, 50)):
        settings = KiteSettings(api_key="k", orders_per_second=per_second, orders_per_minute=per_minute)
        assert ZerodhaTrader(frozenset({"zerodha"}), settings).brokers == frozenset({"zerodha"})


def test_settings_when_daily_order_cap_configured_then_the_trader_limits_by_it() -> None:
    # facts.md line 166: "Daily order cap unverified (third-party says 5000/day)": configurable and
    # off by default.
    assert KiteSettings(api_key="k").orders_per_day is None
    settings = KiteSettings(api_key="k", orders_per_day=5000)
    assert ZerodhaTrader(frozenset({"zerodha"}), settings)._kite.orders_per_day == 5000
