"""Review findings on Kite order updates: each test failed before its fix."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest

from alphapanda.brokers.zerodha.orders import OrderContext
from alphapanda.brokers.zerodha.updates import OrderUpdate, Progress, interpret, postback_checksum
from alphapanda.events import IST, OrderFilled, Side

AT = datetime(2026, 1, 5, 10, 0, tzinfo=IST)
CTX = OrderContext(
    broker="zerodha",
    tag="apabc",
    signal_id="raw-1",
    event_id="validated-1",
    order_id="order-1",
    submitted_id="submitted-1",
    correlationid="idea-1",
    partitionkey="779521",
    traceparent=None,
    strategy="s",
    side=Side.BUY,
    quantity=10,
    instrument_token=779521,
    tradingsymbol="SBIN",
    exchange="NSE",
    product="MIS",
    flatten=False,
    reference_price="800",
)


def _update(status: str, filled: int, average: float, **extra: Any) -> OrderUpdate:
    body: dict[str, Any] = {
        "order_id": "2601050000000000001",
        "order_timestamp": "2026-01-05 10:00:01",
        "status": status,
        "tag": "apabc",
        "quantity": 10,
        "filled_quantity": filled,
        "average_price": average,
    }
    body |= extra
    body["checksum"] = postback_checksum(body["order_id"], body["order_timestamp"], "s")
    return OrderUpdate.from_payload(body)


@pytest.mark.parametrize(
    ("exchange", "average", "price"),
    [
        # Currency futures tick in 0.0025 rupees (the ticker divides CDS prices by 10^7).
        ("CDS", 83.1225, Decimal("83.1225")),
        # BSE currency derivatives: the ticker divides by 10^4.
        ("BCD", 83.1175, Decimal("83.1175")),
    ],
)
def test_interpret_when_currency_segment_fills_then_price_keeps_kites_sub_paisa_precision(
    exchange: str, average: float, price: Decimal
) -> None:
    ctx = dataclasses.replace(CTX, exchange=exchange, tradingsymbol="USDINR26JANFUT", product="NRML")

    meaning = interpret(_update("COMPLETE", 10, average, exchange=exchange), ctx, Progress(), AT)

    (fill,) = [p for _, p in meaning.emitted]
    assert isinstance(fill, OrderFilled)
    assert fill.price == price
    assert meaning.progress.value == price * 10
